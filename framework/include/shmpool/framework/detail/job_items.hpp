// JobItems: a job's arguments as the pool queues them, and submit_job, the one way into a pool's
// queue (for Pool's templates, imap streams and pipelines; not for users).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shmpool/framework/detail/result_sink.hpp"

namespace shmpool {
class Pool;
template <auto Fn>
class Task;
}  // namespace shmpool

namespace shmpool::detail {

/// A job's items: their encoded arguments back to back, and where each one starts; or, packed,
/// `count` arguments of `in_stride` bytes each (a map of a raw-bytes task over contiguous data).
struct JobItems {
    std::string args;
    std::vector<std::size_t> offsets{0};  // items + 1, unless packed
    std::uint32_t in_stride = 0;          // > 0: packed
    std::uint32_t out_stride = 0;         // packed: the size of one result
    std::size_t count = 0;                // packed: the number of items
    bool index_ranges = false;  // for_each_index: each item's last two arguments are its range
    template <auto Fn, class... A>
    void add(const A&... a) {
        Task<Fn>::append_args(args, a...);
        offsets.push_back(args.size());
    }
    bool packed() const noexcept { return in_stride != 0; }
    std::size_t size() const noexcept { return packed() ? count : offsets.size() - 1; }
    bool empty() const noexcept { return size() == 0; }
};

/// Queues `items` of task `task` in chunks of `chunksize` items; every result goes to `sink`.
/// Throws PoolClosed after close() or terminate().
void submit_job(Pool& pool, const std::string& task, JobItems items,
                std::shared_ptr<ResultSink> sink, std::size_t chunksize);

}  // namespace shmpool::detail
