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
    h_->completed.store(0);
    h_->response_bytes.store(0);
    h_->item_started_ns.store(0);
    h_->start_failure.store(0);
    h_->ready_pid.store(0);
    h_->attached_pid.store(0);
    h_->worker_sleeping.store(0);
    h_->state.store(as_word(SlotState::free), std::memory_order_seq_cst);
}

void ParentSlot::post(std::uint32_t request_bytes, std::uint64_t now_ns) noexcept {
    h_->request_bytes.store(request_bytes, std::memory_order_relaxed);
    h_->item_started_ns.store(now_ns, std::memory_order_relaxed);
    // seq_cst with the worker's store of worker_sleeping before its futex wait: either it sees
    // queued and does not sleep, or we see it sleeping and wake it.
    h_->state.store(as_word(SlotState::queued), std::memory_order_seq_cst);
    if (h_->worker_sleeping.load(std::memory_order_seq_cst)) sys::futex_wake(&h_->state, 1);
}

bool ParentSlot::try_reclaim() noexcept {
    std::uint32_t expected = as_word(SlotState::queued);
    return h_->state.compare_exchange_strong(expected, as_word(SlotState::free),
                                             std::memory_order_acq_rel);
}

void ParentSlot::release(bool retire) noexcept {
    h_->item_started_ns.store(0, std::memory_order_relaxed);
    h_->state.store(as_word(retire ? SlotState::shutdown : SlotState::free),
                    std::memory_order_seq_cst);
    // A worker asleep on `done` may sleep on through `free`: the next post() wakes it.
    if (retire) sys::futex_wake(&h_->state, 1);
}

bool ParentSlot::order_shutdown() noexcept {
    std::uint32_t expected = as_word(SlotState::free);
    if (!h_->state.compare_exchange_strong(expected, as_word(SlotState::shutdown),
                                           std::memory_order_seq_cst))
        return false;
    sys::futex_wake(&h_->state, 1);
    return true;
}

ChunkProgress ParentSlot::progress() const noexcept {
    ChunkProgress p;
    const SlotState s = state();
    p.claimed = s == SlotState::running || s == SlotState::done;
    if (!p.claimed) return p;
    p.completed = h_->completed.load(std::memory_order_acquire);
    p.response_bytes = std::min(h_->response_bytes.load(std::memory_order_acquire), capacity_);
    p.busy_ns = h_->chunk_busy_ns.load(std::memory_order_relaxed);
    return p;
}

void WorkerSlot::report_start_failure(StartFailure why, std::string_view error_payload) noexcept {
    RecordWriter out(response_, capacity_);
    (void)out.put(RecordKind::error,
                  error_payload.substr(
                      0, std::min<std::size_t>(error_payload.size(), capacity_ - record_overhead)));
    h_->response_bytes.store(out.used(), std::memory_order_relaxed);
    h_->start_failure.store(static_cast<std::uint32_t>(why), std::memory_order_release);
}

SlotState WorkerSlot::wait_for_work(std::uint64_t spin_ns) noexcept {
    auto idle = [](std::uint32_t s) {
        return s == as_word(SlotState::free) || s == as_word(SlotState::done);
    };
    for (;;) {
        // Spin a little (a hot pool answers in well under a microsecond), then sleep on the
        // state word until the parent moves it.
        std::uint32_t s = h_->state.load(std::memory_order_acquire);
        if (spin_ns != 0 && idle(s)) {
            const std::uint64_t until = sys::monotonic_ns() + spin_ns;
            for (unsigned i = 1; idle(s); ++i) {
                sys::cpu_relax();
                s = h_->state.load(std::memory_order_acquire);
                if (i % 64 == 0 && sys::monotonic_ns() > until) break;
            }
        }
        if (idle(s)) {
            h_->worker_sleeping.store(1, std::memory_order_seq_cst);
            if (h_->state.load(std::memory_order_seq_cst) == s)
                sys::futex_wait(&h_->state, s, nullptr);
            h_->worker_sleeping.store(0, std::memory_order_relaxed);
            continue;
        }
        if (s == as_word(SlotState::queued) || s == as_word(SlotState::shutdown))
            return static_cast<SlotState>(s);
    }
}

bool WorkerSlot::claim() noexcept {
    // The response counters belong to the worker: reset before the chunk is ours, so that the
    // parent never sees the last chunk's counts for this one.
    h_->completed.store(0, std::memory_order_relaxed);
    h_->response_bytes.store(0, std::memory_order_relaxed);
    std::uint32_t expected = as_word(SlotState::queued);
    return h_->state.compare_exchange_strong(expected, as_word(SlotState::running),
                                             std::memory_order_acq_rel);
}

void WorkerSlot::publish(std::uint64_t busy_ns) noexcept {
    h_->chunk_busy_ns.store(busy_ns, std::memory_order_relaxed);
    h_->state.store(as_word(SlotState::done), std::memory_order_seq_cst);
}

}  // namespace shmpool::detail
