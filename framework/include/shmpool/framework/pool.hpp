// Pool: worker processes that run registered tasks, with data shared in memory.
//
// The pool re-executes this program (or PoolOptions::worker_executable) as N workers; each one
// runs shmpool::init() at the top of main(), attaches the pool's control block once, and waits for
// chunks of work in its slot there. Arguments and results travel through that block, never
// through a pipe; big data goes in a SharedArray or a SharedMemory block passed by name.
//
// Failure semantics: a task that throws fails with TaskError and its worker lives on. A worker
// that dies (a signal, an exit, a timeout kill) is noticed at once through a pidfd, replaced, and
// the item it was running is retried up to max_retries times, then fails with WorkerCrashed; the
// other items of its chunk are requeued, not lost or redone. The pool is never "broken".
//
// Thread-safe: submit, map and the rest may be called from any thread. Create the pool from a
// thread that outlives it (workers get SIGKILL when the thread that started them exits).
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmpool/framework/detail/job_items.hpp"
#include "shmpool/framework/detail/map_state.hpp"
#include "shmpool/framework/detail/result_stream.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/future.hpp"
#include "shmpool/framework/pool_options.hpp"
#include "shmpool/framework/task.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool {

/// Called at the top of main(): in a process launched as a worker, runs the worker and exits;
/// elsewhere returns at once. Never throws: a worker that fails reports on stderr and exits.
/// Run with SHMPOOL_ROLE=describe in its environment, the program prints its tasks' argument and
/// result types as JSON and exits (how the Python package learns to encode them).
void init(int argc, char** argv) noexcept;

/// This process's long-lived mapping of block `name`: in a worker, one of the pool's
/// PoolOptions::shared_blocks (attached at start-up); elsewhere attached on first use. Throws
/// what SharedMemory::attach throws.
SharedMemory& shared_block(std::string_view name);

class Pool {
  public:
    /// Starts the workers and waits until they are ready; a worker that dies on the way is
    /// replaced (PoolOptions::max_start_failures). Throws std::system_error if a worker cannot
    /// be launched, WorkerStartFailed if one died before it was ready too often in a row,
    /// IncompatibleWorker if the worker program was built against another shmpool, TaskError if
    /// the initializer or a shared block failed, std::invalid_argument for bad options.
    explicit Pool(PoolOptions options = {});
    /// close(), then join(): waits for the queued work, stops the workers.
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    /// Runs task(args...) in a worker.
    template <auto Fn, class... A>
    auto submit(const Task<Fn>& task, const A&... args) {
        using R = typename Task<Fn>::Result;
        auto state = std::make_shared<detail::FutureState<R>>(task.name());
        detail::JobItems items;
        items.add<Fn>(args...);
        detail::submit_job(*this, task.name(), std::move(items), state, 1);
        return Future<R>(std::move(state));
    }

    /// task(item) for every item, results in input order. chunksize 0: len / (4 × workers),
    /// as CPython's Pool.map. Throws the error of the first failed item.
    template <auto Fn, class Range>
    auto map(const Task<Fn>& task, const Range& range, std::size_t chunksize = 0) {
        detail::JobItems items;
        if constexpr (detail::packable_v<Fn> && std::ranges::contiguous_range<Range> &&
                      std::ranges::sized_range<Range> &&
                      std::is_same_v<std::ranges::range_value_t<Range>,
                                     std::tuple_element_t<0, typename Task<Fn>::Arguments>>) {
            // The items' bytes are the arguments: one copy, no encoding (see task_entry.hpp).
            const detail::TaskEntry entry = detail::task_entry<Fn>();
            items.in_stride = entry.in_stride;
            items.out_stride = entry.out_stride;
            items.count = std::ranges::size(range);
            items.args.assign(reinterpret_cast<const char*>(std::ranges::data(range)),
                              items.count * entry.in_stride);
        } else {
            if constexpr (std::ranges::sized_range<Range>)
                items.offsets.reserve(std::ranges::size(range) + 1);
            for (const auto& x : range)
                items.add<Fn>(x);
        }
        return run_job<Fn>(task, std::move(items), chunksize);
    }

    /// task(item) for every item, lazily: the returned range submits items as it is iterated,
    /// keeping at most `window` chunks of `chunksize` items outstanding (0: 2 × workers), so an
    /// endless input is fine. Results come in input order; iterating rethrows a failed item's
    /// error at its position. The pool must outlive the range; an lvalue input must too.
    template <auto Fn, std::ranges::input_range Range>
    auto imap(const Task<Fn>& task, Range&& range, std::size_t chunksize = 1,
              std::size_t window = 0) {
        return stream<Fn>(task, std::forward<Range>(range), chunksize, window, true);
    }
    /// As imap(), results in completion order.
    template <auto Fn, std::ranges::input_range Range>
    auto imap_unordered(const Task<Fn>& task, Range&& range, std::size_t chunksize = 1,
                        std::size_t window = 0) {
        return stream<Fn>(task, std::forward<Range>(range), chunksize, window, false);
    }

    /// task(args...) for every tuple of arguments, results in input order.
    template <auto Fn, class Range>
    auto starmap(const Task<Fn>& task, const Range& range, std::size_t chunksize = 0) {
        detail::JobItems items;
        for (const auto& t : range) {
            std::apply([&](const auto&... a) { items.add<Fn>(a...); }, t);
        }
        return run_job<Fn>(task, std::move(items), chunksize);
    }

    /// task(leading..., begin, end) over [0, n) in ranges of `grain` indices (0: n / (4 ×
    /// workers)). The task's last two parameters are std::size_t; the leading ones are typically
    /// the name of a SharedArray it works on.
    template <auto Fn, class... A>
    void for_each_index(const Task<Fn>& task, std::size_t n, std::size_t grain,
                        const A&... leading) {
        if (grain == 0) grain = std::max<std::size_t>(1, n / (std::size_t{4} * size()));
        detail::JobItems items;
        items.index_ranges = true;
        for (std::size_t b = 0; b < n; b += grain)
            items.add<Fn>(leading..., b, std::min(n, b + grain));
        run_job<Fn>(task, std::move(items), 1);
    }

    /// No more work is accepted; queued work still runs.
    void close();
    /// Waits for all queued work, then stops the workers (after close()).
    void join();
    /// Stops now: workers are killed, queued work fails with PoolClosed. It may be called while
    /// another thread is in join(), which then returns. Not from a callback of the pool.
    void terminate();

    /// Workers in all, on every node (docs/cluster.md).
    unsigned size() const noexcept;
    /// This machine's workers.
    std::vector<pid_t> worker_pids() const;
    /// Counted over every node.
    PoolStats stats() const;
    /// The nodes the pool runs on: 1 on one machine.
    unsigned nodes() const noexcept;
    /// The statistics of each node, in node order (node 0: this machine).
    std::vector<PoolStats> node_stats() const;
    /// The pool's control block (its name is what the workers attach).
    const std::string& control_block() const noexcept;

  private:
    template <auto Fn>
    auto run_job(const Task<Fn>& task,
                 detail::JobItems items,  // NOLINT(performance-unnecessary-value-param): moved
                 std::size_t chunksize) {
        using R = typename Task<Fn>::Result;
        auto state = std::make_shared<detail::MapState<R>>(items.size());
        const std::size_t per_job = std::size_t{4} * size();
        if (chunksize == 0)
            chunksize = std::max<std::size_t>(1, (items.size() + per_job - 1) / per_job);
        if (!items.empty())
            detail::submit_job(*this, task.name(), std::move(items), state, chunksize);
        return state->collect();
    }
    template <auto Fn, class Range>
    auto stream(const Task<Fn>& task, Range&& range, std::size_t chunksize, std::size_t window,
                bool ordered) {
        using View = std::ranges::views::all_t<Range>;
        const std::size_t chunks = window ? window : std::size_t{2} * size();
        return detail::ResultStream<Fn, View>(
            *this, task, std::views::all(std::forward<Range>(range)), chunksize,
            chunks * std::max<std::size_t>(1, chunksize), ordered);
    }

    // The one internal way in (detail/job_items.hpp): Pool's templates, imap streams, pipelines.
    friend void detail::submit_job(Pool& pool, const std::string& task, detail::JobItems items,
                                   std::shared_ptr<detail::ResultSink> sink, std::size_t chunksize);

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpool
