// ResultRouter: turns what a worker published into its job's results (decoding records, the
// packed fast path, the errors), counts them, and reports the jobs' progress. Called only under
// the slot lock, so a job's progress needs no lock of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string_view>

#include "parent/callback_queue.hpp"
#include "parent/job.hpp"
#include "parent/pool_counters.hpp"
#include "parent/slot_lock.hpp"

namespace shmpool::detail {

/// A response area as the worker left it.
struct ResponseView {
    const std::byte* area = nullptr;
    std::uint32_t bytes = 0;     // written
    std::uint32_t capacity = 0;  // the area's size
    bool local = false;          // a local worker's: its records may name result blocks
};

class ResultRouter {
  public:
    ResultRouter(PoolCounters& counters, CallbackQueue& callbacks) noexcept
        : counters_(counters), callbacks_(callbacks) {}
    /// Settles items [from, to) of `chunk` (positions within it) from the worker's response.
    void deliver(const SlotsLocked&, const Chunk& chunk, const ResponseView& response,
                 std::uint32_t from, std::uint32_t to);
    /// Removes the result blocks named by records from position `from` on: a dead worker's,
    /// for items that never counted as finished.
    static void discard_blocks(const ResponseView& response, std::uint32_t from) noexcept;
    /// Settles item `pos` of `chunk` with an error.
    void fail(const SlotsLocked&, const Chunk& chunk, std::size_t pos, std::exception_ptr error);
    /// Settles every item of `chunk` with the same error.
    void fail_all(const SlotsLocked& locked, const Chunk& chunk, const std::exception_ptr& error);
    /// The error a task's payload describes, as a TaskError.
    static std::exception_ptr task_error(const std::string& task, std::string_view payload);

  private:
    void deliver_records(const Chunk& chunk, const ResponseView& response, std::uint32_t from,
                         std::uint32_t to);
    void deliver_in_block(const Chunk& chunk, std::string_view record, const ResponseView& response,
                          std::size_t index);
    void deliver_packed(const Chunk& chunk, const ResponseView& response, std::uint32_t from,
                        std::uint32_t to);
    void note_progress(Job& job, std::size_t n);

    PoolCounters& counters_;
    CallbackQueue& callbacks_;
};

}  // namespace shmpool::detail
