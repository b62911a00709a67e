// PoolCounters: the statistics of a pool, counted by whichever thread settles what they count.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "shmpool/framework/pool_options.hpp"

namespace shmpool::detail {

struct PoolCounters {
    std::atomic<std::size_t> results{0}, failures{0}, retries{0}, crashes{0}, respawns{0},
        start_failures{0}, timeouts{0}, cancelled{0}, recycled_tasks{0}, recycled_memory{0},
        reclaimed{0}, stolen_ranges{0};
    std::atomic<std::uint64_t> busy_ns{0};  // workers' time on the chunks harvested

    PoolStats snapshot() const noexcept {
        PoolStats s;
        s.tasks_done = results.load();
        s.tasks_failed = failures.load();
        s.retries = retries.load();
        s.crashes = crashes.load();
        s.respawns = respawns.load();
        s.start_failures = start_failures.load();
        s.timeouts = timeouts.load();
        s.cancelled = cancelled.load();
        s.recycled_tasks = recycled_tasks.load();
        s.recycled_memory = recycled_memory.load();
        s.reclaimed = reclaimed.load();
        s.stolen_ranges = stolen_ranges.load();
        s.busy_seconds = static_cast<double>(busy_ns.load()) / 1e9;
        return s;
    }
};

}  // namespace shmpool::detail
