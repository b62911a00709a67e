// The slot's transitions: the memory orders and the futex hand-over of both sides.
#include "protocol/slot.hpp"

#include <algorithm>
#include <cstring>

#include "posix/sys.hpp"
#include "protocol/records.hpp"

namespace shmpool::detail {
namespace {

constexpr std::uint32_t as_word(SlotState s) noexcept {
    return static_cast<std::uint32_t>(s);
}

}  // namespace

void ParentSlot::reset_for_launch() noexcept {
    // Before the launch: the new worker may attach (and publish its pid) at once.
    for (BufferHeader& buffer : h_->buffers) {
        buffer.completed.store(0);
        buffer.response_bytes.store(0);
        buffer.posted.store(0);
        buffer.state.store(as_word(SlotState::free));
    }
    h_->item_started_ns.store(0);
    h_->start_failure.store(0);
    h_->ready_pid.store(0);
    h_->attached_pid.store(0);
    h_->worker_sleeping.store(0);
    h_->doorbell.store(0, std::memory_order_seq_cst);
}

// After a state change the worker must see: bump the doorbell (seq_cst with the worker's store
// of worker_sleeping before its futex wait: either it sees the change and does not sleep, or
// we see it sleeping and wake it).
void ParentSlot::ring() noexcept {
    h_->doorbell.fetch_add(1, std::memory_order_seq_cst);
    if (h_->worker_sleeping.load(std::memory_order_seq_cst)) sys::futex_wake(&h_->doorbell, 1);
}

void ParentSlot::post(std::uint32_t request_bytes, std::uint32_t posted,
                      std::uint64_t now_ns) noexcept {
    buffer_->request_bytes.store(request_bytes, std::memory_order_relaxed);
    buffer_->posted.store(posted, std::memory_order_relaxed);
    if (now_ns != 0) h_->item_started_ns.store(now_ns, std::memory_order_relaxed);
    buffer_->state.store(as_word(SlotState::queued), std::memory_order_seq_cst);
    ring();
}

bool ParentSlot::try_reclaim() noexcept {
    std::uint32_t expected = as_word(SlotState::queued);
    return buffer_->state.compare_exchange_strong(expected, as_word(SlotState::free),
                                                  std::memory_order_acq_rel);
}

void ParentSlot::release(bool retire) noexcept {
    buffer_->state.store(as_word(retire ? SlotState::shutdown : SlotState::free),
                         std::memory_order_seq_cst);
    // A worker asleep while this buffer was done sleeps on through free: the next post wakes it.
    if (retire) ring();
}

bool ParentSlot::order_shutdown() noexcept {
    std::uint32_t expected = as_word(SlotState::free);
    if (!buffer_->state.compare_exchange_strong(expected, as_word(SlotState::shutdown),
                                                std::memory_order_seq_cst))
        return false;
    ring();
    return true;
}

ChunkProgress ParentSlot::progress() const noexcept {
    ChunkProgress p;
    const SlotState s = state();
    p.claimed = s == SlotState::running || s == SlotState::done;
    if (!p.claimed) return p;
    p.completed = buffer_->completed.load(std::memory_order_acquire);
    p.response_bytes = std::min(buffer_->response_bytes.load(std::memory_order_acquire), capacity_);
    p.busy_ns = buffer_->chunk_busy_ns.load(std::memory_order_relaxed);
    return p;
}

void WorkerSlot::report_start_failure(StartFailure why, std::string_view error_payload) noexcept {
    RecordWriter out(response_, capacity_);
    (void)out.put(RecordKind::error,
                  error_payload.substr(
                      0, std::min<std::size_t>(error_payload.size(), capacity_ - record_overhead)));
    buffer_->response_bytes.store(out.used(), std::memory_order_relaxed);
    h_->start_failure.store(static_cast<std::uint32_t>(why), std::memory_order_release);
}

Work WorkerSlot::wait_for_work(std::uint64_t spin_ns) noexcept {
    // What the buffers hold: shutdown first, else the queued chunk posted first (a difference
    // of post counts, so that their wrapping around does not matter).
    auto look = [this]() -> Work {
        const auto s0 = h_->buffers[0].state.load(std::memory_order_acquire);
        const auto s1 = h_->buffers[1].state.load(std::memory_order_acquire);
        if (s0 == as_word(SlotState::shutdown) || s1 == as_word(SlotState::shutdown))
            return {SlotState::shutdown, 0};
        const bool q0 = s0 == as_word(SlotState::queued);
        const bool q1 = s1 == as_word(SlotState::queued);
        if (q0 && q1) {
            const auto older = static_cast<std::int32_t>(h_->buffers[1].posted.load() -
                                                         h_->buffers[0].posted.load());
            return {SlotState::queued, older < 0 ? 1u : 0u};
        }
        if (q0 || q1) return {SlotState::queued, q0 ? 0u : 1u};
        return {SlotState::free, 0};
    };
    for (;;) {
        // Spin a little (a hot pool answers in well under a microsecond), then sleep on the
        // doorbell until the parent rings it.
        const std::uint32_t bell = h_->doorbell.load(std::memory_order_seq_cst);
        Work work = look();
        if (work.state != SlotState::free) return work;
        if (spin_ns != 0) {
            const std::uint64_t until = sys::monotonic_ns() + spin_ns;
            for (unsigned i = 1; h_->doorbell.load(std::memory_order_acquire) == bell; ++i) {
                sys::cpu_relax();
                if (i % 64 == 0 && sys::monotonic_ns() > until) break;
            }
            if (h_->doorbell.load(std::memory_order_acquire) != bell) continue;
        }
        h_->worker_sleeping.store(1, std::memory_order_seq_cst);
        work = look();
        if (work.state == SlotState::free) sys::futex_wait(&h_->doorbell, bell, nullptr);
        h_->worker_sleeping.store(0, std::memory_order_relaxed);
        if (work.state != SlotState::free) return work;
    }
}

bool WorkerSlot::claim(unsigned b, bool timeouts) noexcept {
    use(b);
    if (timeouts) h_->item_started_ns.store(sys::monotonic_ns(), std::memory_order_release);
    // The response counters belong to the worker: reset before the chunk is ours, so that the
    // parent never sees the last chunk's counts for this one.
    buffer_->completed.store(0, std::memory_order_relaxed);
    buffer_->response_bytes.store(0, std::memory_order_relaxed);
    std::uint32_t expected = as_word(SlotState::queued);
    return buffer_->state.compare_exchange_strong(expected, as_word(SlotState::running),
                                                  std::memory_order_acq_rel);
}

void WorkerSlot::publish(std::uint64_t busy_ns) noexcept {
    buffer_->chunk_busy_ns.store(busy_ns, std::memory_order_relaxed);
    buffer_->state.store(as_word(SlotState::done), std::memory_order_seq_cst);
}

}  // namespace shmpool::detail
