// A slot's state machine as named transitions, one class per side (docs/design/slot-protocol.md).
// A slot has two buffers, each with this machine:
//
//   free --post--> queued --claim--> running --publish--> done --release--> free
//     ^              |                                       |
//     +--reclaim-----+                                       +--release(retire)--> shutdown
//   free --order_shutdown--> shutdown
//
// Only the parent moves free->queued, queued->free (reclaim: a CAS racing the worker's claim),
// done->free and ->shutdown; only the worker moves queued->running->done. The parent queues a
// chunk in one buffer while the worker runs the other; the worker runs the older queued chunk
// first, and exits when a buffer says shutdown. A dead worker's slot is settled by the parent
// alone, buffer by buffer, from what the worker published (progress()).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>

#include "protocol/control_block.hpp"
#include "shmpool/framework/detail/task_entry.hpp"

namespace shmpool::detail {

enum class SlotState : std::uint32_t { free = 0, queued = 1, running = 2, done = 3, shutdown = 4 };

/// Why a worker could not get ready; its error is a record in the response area.
enum class StartFailure : std::uint32_t { none = 0, initializer = 1, shared_blocks = 2 };

/// What a worker published of its chunk: items finished, response bytes written, busy time.
struct ChunkProgress {
    bool claimed = false;  // the worker took the chunk (running or done): else nothing ran
    std::uint32_t completed = 0;
    std::uint32_t response_bytes = 0;
    std::uint64_t busy_ns = 0;
};

/// The parent's side of one buffer of a slot (and of the slot's worker-wide words).
class ParentSlot {
  public:
    ParentSlot(const ControlView& view, unsigned w, unsigned b = 0) noexcept
        : h_(&view.slot(w)),
          buffer_(&h_->buffers[b]),
          request_(view.request(w, b)),
          response_(view.response(w, b)),
          capacity_(view.slot_bytes()) {}

    /// Clears both buffers and the worker's words before a new worker is launched into the slot.
    void reset_for_launch() noexcept;
    SlotState state() const noexcept {
        return static_cast<SlotState>(buffer_->state.load(std::memory_order_acquire));
    }
    bool finished() const noexcept { return state() == SlotState::done; }
    /// free -> queued: the request area holds a chunk of `request_bytes`, the `posted`-th of the
    /// slot. `now_ns`, if not 0, is a provisional start, so that a timeout clock runs before the
    /// worker stamps its first item (give 0 while the worker runs the other buffer).
    void post(std::uint32_t request_bytes, std::uint32_t posted, std::uint64_t now_ns) noexcept;
    /// queued -> free if the worker has not claimed the chunk yet: the parent took it back.
    bool try_reclaim() noexcept;
    /// done -> free, or -> shutdown when the worker is to retire: the results were read.
    void release(bool retire) noexcept;
    /// free -> shutdown: an idle worker is told to exit. False if the buffer was not free.
    bool order_shutdown() noexcept;
    /// What the worker finished of this buffer's chunk: in done, or after its death.
    ChunkProgress progress() const noexcept;
    /// Items of the running chunk the worker finished so far.
    std::uint32_t completed() const noexcept {
        return buffer_->completed.load(std::memory_order_acquire);
    }
    /// When the item the worker is on started (0: none).
    std::uint64_t item_started_ns() const noexcept {
        return h_->item_started_ns.load(std::memory_order_acquire);
    }
    pid_t attached_pid() const noexcept { return h_->attached_pid.load(); }
    pid_t ready_pid() const noexcept { return h_->ready_pid.load(std::memory_order_acquire); }
    StartFailure start_failure() const noexcept {
        return static_cast<StartFailure>(h_->start_failure.load(std::memory_order_acquire));
    }
    std::byte* request_area() const noexcept { return request_; }
    const std::byte* response_area() const noexcept { return response_; }
    std::uint32_t capacity() const noexcept { return capacity_; }

  private:
    void ring() noexcept;
    SlotHeader* h_;
    BufferHeader* buffer_;
    std::byte* request_;
    std::byte* response_;
    std::uint32_t capacity_;
};

/// What wait_for_work found.
struct Work {
    SlotState state = SlotState::free;  // queued or shutdown
    unsigned buffer = 0;                // the queued buffer
};

/// The worker's side of its slot; its areas are those of the buffer it claimed last.
class WorkerSlot {
  public:
    WorkerSlot(const ControlView& view, unsigned w) noexcept
        : view_(view), w_(w), h_(&view.slot(w)), capacity_(view.slot_bytes()) {
        use(0);
    }

    void announce_attached(pid_t pid) noexcept { h_->attached_pid.store(pid); }
    void announce_ready(pid_t pid) noexcept { h_->ready_pid.store(pid, std::memory_order_release); }
    /// Leaves the reason (and its error payload, cut to fit) for the parent, before exiting.
    void report_start_failure(StartFailure why, std::string_view error_payload) noexcept;
    /// Spins for up to `spin_ns`, then sleeps until the parent posts a chunk or orders shutdown;
    /// returns shutdown, or the queued buffer that was posted first.
    Work wait_for_work(std::uint64_t spin_ns) noexcept;
    /// queued -> running for buffer `b`, whose areas become this object's; false if the parent
    /// took the chunk back first. With `timeouts`, the item clock restarts first, so that the
    /// parent never times the new chunk by the last one's item.
    bool claim(unsigned b, bool timeouts = false) noexcept;
    /// Where item progress goes (the item clock only when the pool enforces timeouts).
    ItemMarks marks(bool timeouts) noexcept {
        return {&buffer_->completed, timeouts ? &h_->item_started_ns : nullptr};
    }
    /// The response so far: `bytes` written, `completed` items finished (in that order).
    void note_response(std::uint32_t bytes, std::uint32_t completed) noexcept {
        buffer_->response_bytes.store(bytes, std::memory_order_release);
        buffer_->completed.store(completed, std::memory_order_release);
    }
    /// running -> done, with the time spent on the chunk (0 unless the pool measures it).
    void publish(std::uint64_t busy_ns) noexcept;
    const std::byte* request_area() const noexcept { return request_; }
    std::uint32_t request_bytes() const noexcept { return buffer_->request_bytes.load(); }
    std::byte* response_area() const noexcept { return response_; }
    std::uint32_t capacity() const noexcept { return capacity_; }

  private:
    void use(unsigned b) noexcept {
        buffer_ = &h_->buffers[b];
        request_ = view_.request(w_, b);
        response_ = view_.response(w_, b);
    }
    ControlView view_;
    unsigned w_;
    SlotHeader* h_;
    BufferHeader* buffer_ = nullptr;
    const std::byte* request_ = nullptr;
    std::byte* response_ = nullptr;
    std::uint32_t capacity_;
};

}  // namespace shmpool::detail
