// Placement and AffinityMemory: which worker ran each range of a for_each_index job last time,
// so that the same ranges of a repeated job go back to the same workers (warm caches and page
// tables), as tbb::affinity_partitioner does. A hint only: a wrong one costs speed, never a
// result.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace shmpool::detail {

class Placement {
  public:
    static constexpr std::uint32_t none = UINT32_MAX;

    explicit Placement(std::size_t ranges) : slots_(ranges) {
        for (auto& s : slots_)
            s.store(none, std::memory_order_relaxed);
    }
    std::size_t size() const noexcept { return slots_.size(); }
    /// The slot of the worker that was last given range `range` (none: never run).
    std::uint32_t slot(std::size_t range) const noexcept {
        return slots_[range].load(std::memory_order_relaxed);
    }
    /// Range `range` goes to the worker in slot `slot`; returns the slot it went to before.
    std::uint32_t record(std::size_t range, unsigned slot) noexcept {
        return slots_[range].exchange(slot, std::memory_order_relaxed);
    }
    /// Whether any range was run before (a first run has nothing to follow).
    bool recorded() const noexcept {
        for (const auto& s : slots_)
            if (s.load(std::memory_order_relaxed) != none) return true;
        return false;
    }

  private:
    // Atomic: two identical jobs from two threads may share one placement.
    std::vector<std::atomic<std::uint32_t>> slots_;
};

/// The placements of the few most recent index jobs, found again by task and arguments (the
/// leading arguments, n and the grain: the same array swept the same way).
class AffinityMemory {
  public:
    static constexpr std::size_t remembered = 16;

    /// The placement of the job with these arguments, a fresh one if none is remembered.
    std::shared_ptr<Placement> placement_for(std::string_view task, std::string_view args,
                                             std::size_t ranges);

  private:
    struct Entry {
        std::size_t task_hash = 0;
        std::size_t args_hash = 0;
        std::size_t args_size = 0;
        std::shared_ptr<Placement> placement;
    };
    std::mutex mutex_;
    std::deque<Entry> entries_;  // the most recently used first
};

}  // namespace shmpool::detail
