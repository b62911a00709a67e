// Job and Chunk: a submitted job (one submit, one map, one imap chunk, one pipeline batch) and a
// run of its consecutive items, the unit of dispatch.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>

#include "parent/placement.hpp"
#include "shmpool/framework/detail/job_items.hpp"
#include "shmpool/framework/detail/result_sink.hpp"

namespace shmpool::detail {

struct Job {
    std::string task;
    std::shared_ptr<ResultSink> sink;
    JobItems items;
    bool reports_progress = false;  // on_progress or a progress bar, and more than one item
    // An index job on this machine: the slot each range went to, last time and now.
    std::shared_ptr<Placement> placement;
    // Read and written only under the slot lock (SlotsLocked): retries by item, and progress.
    std::unordered_map<std::size_t, int> attempts;
    std::size_t settled = 0;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_report{};
};

struct Chunk {
    std::shared_ptr<Job> job;
    std::size_t begin = 0;
    std::size_t end = 0;
    std::size_t size() const noexcept { return end - begin; }
};

}  // namespace shmpool::detail
