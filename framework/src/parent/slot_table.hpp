// SlotTable: the parent's only owner of slot states. It packs chunks into free buffers (a second
// one queued behind the running one, taken back for an idle worker when the queue runs dry),
// harvests finished ones, settles the slot of a worker that died, and kills the workers of
// timed-out or hard-cancelled items. Everything here runs under the slot lock (SlotsLocked).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parent/arguments_block.hpp"
#include "parent/chunk_executor.hpp"
#include "parent/job.hpp"
#include "parent/result_router.hpp"
#include "parent/worker_set.hpp"
#include "protocol/control_block.hpp"

namespace shmpool::detail {

class SlotTable final : public ChunkExecutor {
  public:
    SlotTable(const ControlView& view, const PoolOptions& options, WorkerSet& workers,
              ResultRouter& router, PoolCounters& counters);

    bool dispatch(const SlotsLocked& locked, JobQueue& queue) override;
    bool harvest(const SlotsLocked& locked, JobQueue& queue) override;
    bool has_finished() const noexcept override;

    SlotLock& lock() noexcept { return lock_; }
    /// A worker was launched into slot `w`: it may be given chunks (before it is even ready).
    void occupy(const SlotsLocked& locked, unsigned w);
    /// The worker of a slot departed: delivers what it finished, retries or fails the item it
    /// was on, requeues the items it never reached, exactly once each. Returns the event to
    /// report, if any (none for the workers the pool stops itself).
    std::optional<WorkerEvent> settle(const SlotsLocked& locked, const Departure& departure,
                                      JobQueue& queue);
    /// Kills the workers running hard-cancelled items.
    void kill_cancelled(const SlotsLocked& locked, JobQueue& queue);
    /// Signals the workers of items past their timeout (SIGTERM, then SIGKILL after kill_grace);
    /// returns the next instant something is due, or 0.
    std::uint64_t expire(const SlotsLocked& locked, std::uint64_t now_ns);
    /// Tells every idle worker to exit (the pool is stopping and its work is done).
    void shut_down_idle(const SlotsLocked& locked);

  private:
    // One buffer of a slot: the chunk it holds, and the block of that chunk's big arguments.
    struct BufferFlight {
        std::optional<Chunk> chunk;
        std::optional<ArgumentsBlock> arguments;
        std::uint32_t posted = 0;  // the slot's post count when it was posted
    };
    // The slot half of a worker: the chunks its buffers hold and what the parent did about it.
    struct InFlight {
        std::array<BufferFlight, slot_buffers> buffers;
        std::uint32_t posted = 0;  // chunks posted to this worker, the older runs first
        bool occupied = false;     // a worker process is in the slot
        bool leaving = false;      // told to exit (retire, shutdown): no more chunks
        bool term_sent = false;
        bool kill_sent = false;
        std::uint64_t kill_deadline_ns = 0;
        // The item it was killed for: its buffer and position in the chunk.
        std::optional<std::pair<unsigned, std::uint32_t>> timed_out;
        std::optional<unsigned> cancelled;
        unsigned chunks() const noexcept {
            return static_cast<unsigned>(buffers[0].chunk.has_value()) +
                   static_cast<unsigned>(buffers[1].chunk.has_value());
        }
        bool doomed() const noexcept { return leaving || term_sent || cancelled.has_value(); }
    };
    // Chunks a worker may hold: two, unless workers retire after a count of items or a size
    // (then a second chunk could run past the limit).
    unsigned depth() const noexcept;
    // Takes a queued, unclaimed chunk back from a worker that has another to run, for `idle`.
    bool steal_for(const SlotsLocked& locked, unsigned idle, JobQueue& queue);
    // Whether the pool's signal to the worker of `f` was meant for item `position` of buffer `b`.
    static bool killed_for(const InFlight& f, unsigned b, std::uint32_t position) noexcept;
    void settle_buffer(const SlotsLocked& locked, InFlight& f, unsigned b, WorkerEvent& event,
                       bool& reported_item, JobQueue& queue);
    void post(const SlotsLocked& locked, unsigned w, unsigned b, Chunk chunk, JobQueue& queue);
    void requeue(const SlotsLocked& locked, const Chunk& chunk, JobQueue& queue);
    // Items [first, end) of an index job went to slot `w`: where they go next time.
    void place(Job& job, std::size_t first, std::size_t end, unsigned w);

    ControlView view_;
    const PoolOptions& options_;
    WorkerSet& workers_;
    ResultRouter& router_;
    PoolCounters& counters_;
    SlotLock lock_;
    std::vector<InFlight> slots_;
};

}  // namespace shmpool::detail
