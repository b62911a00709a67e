// SlotTable: packing chunks into slots, harvesting them, and settling a dead worker's slot.
#include "parent/slot_table.hpp"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <stdexcept>

#include "protocol/records.hpp"
#include "protocol/slot.hpp"
#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {

SlotTable::SlotTable(const ControlView& view, const PoolOptions& options, WorkerSet& workers,
                     ResultRouter& router, PoolCounters& counters)
    : view_(view),
      options_(options),
      workers_(workers),
      router_(router),
      counters_(counters),
      slots_(view.workers()) {
}

bool SlotTable::has_finished() const noexcept {
    for (unsigned w = 0; w < slots_.size(); ++w) {
        for (unsigned b = 0; b < slot_buffers; ++b) {
            if (ParentSlot(view_, w, b).finished()) return true;
        }
    }
    return false;
}

unsigned SlotTable::depth() const noexcept {
    return options_.max_tasks_per_worker == 0 && options_.max_memory_per_worker == 0 ? 2 : 1;
}

void SlotTable::occupy(const SlotsLocked& /*locked*/, unsigned w) {
    slots_[w] = InFlight{};
    slots_[w].occupied = true;
}

bool SlotTable::dispatch(const SlotsLocked& locked, JobQueue& queue) {
    bool any = false;
    // Idle workers first, then a second chunk behind each running one; when the queue runs
    // dry, an idle worker takes a chunk back from behind another's.
    for (unsigned round = 1; round <= depth(); ++round) {
        for (unsigned w = 0; w < slots_.size(); ++w) {
            InFlight& f = slots_[w];
            if (!f.occupied || f.chunks() + 1 != round || f.doomed()) continue;
            unsigned b = 0;
            while (b < slot_buffers &&
                   (f.buffers[b].chunk || ParentSlot(view_, w, b).state() != SlotState::free))
                ++b;
            if (b == slot_buffers) continue;
            std::optional<Chunk> next = round == 1 ? queue.take(w) : queue.take_to_queue_behind(w);
            if (!next) {
                // Left in the queue: chunks that may not queue behind, or others' ranges.
                if (round != 1 || !queue.empty()) continue;
                // Only a ready worker takes a chunk over: one still starting would run it later
                // than the busy worker it was taken from.
                if (ParentSlot(view_, w).ready_pid() == 0 || !steal_for(locked, w, queue))
                    return any;
                next = queue.take(w);
                if (!next) return any;
            }
            any = true;
            post(locked, w, b, std::move(*next), queue);
        }
    }
    return any;
}

bool SlotTable::steal_for(const SlotsLocked& locked, unsigned idle, JobQueue& queue) {
    for (unsigned w = 0; w < slots_.size(); ++w) {
        InFlight& f = slots_[w];
        if (w == idle || !f.occupied || f.chunks() < 2) continue;
        for (unsigned b = 0; b < slot_buffers; ++b) {
            ParentSlot slot(view_, w, b);
            // The CAS races the worker's claim: exactly one of them gets the chunk.
            if (slot.state() != SlotState::queued || !slot.try_reclaim()) continue;
            const Chunk chunk = std::move(*f.buffers[b].chunk);
            f.buffers[b] = BufferFlight{};
            ++counters_.reclaimed;
            requeue(locked, chunk, queue);
            return true;
        }
    }
    return false;
}

// Packs as much of the chunk as fits the slot's request area; the rest goes back to the front
// of the queue. Only the front item can be dropped (a cancelled future, or arguments that fit
// no slot), so what is packed stays one run of consecutive items.
void SlotTable::post(const SlotsLocked& locked, unsigned w, unsigned b, Chunk chunk,
                     JobQueue& queue) {
    Job& job = *chunk.job;
    ParentSlot slot(view_, w, b);
    BufferFlight& flight = slots_[w].buffers[b];
    RequestWriter out(slot.request_area(), slot.capacity());
    if (!out.begin(job.task, job.items.in_stride, job.items.out_stride)) {
        router_.fail_all(locked, chunk,
                         std::make_exception_ptr(std::length_error(fmt::format(
                             "task name '{}' does not fit the pool's slot_bytes", job.task))));
        queue.finish(chunk.size());
        return;
    }
    std::size_t first = chunk.begin;
    std::size_t next = chunk.begin;
    std::size_t dropped = 0;
    auto drop_front = [&](const std::exception_ptr& error) {
        if (!job.sink->cancelled(next))  // a cancelled item is settled already
            router_.fail(locked, chunk, next - chunk.begin, error);
        ++dropped;
        first = ++next;
    };
    auto too_big = [&](std::size_t length) {
        return std::make_exception_ptr(std::length_error(
            fmt::format("task '{}' item {}: {} bytes of arguments do not fit the pool's "
                        "slot_bytes ({}) next to the task's name",
                        job.task, job.sink->submitted_index(next), length, slot.capacity())));
    };
    if (job.items.packed() && job.sink->cancelled(first)) {
        // A cancelled job (its sink settled every item it had not started): nothing runs.
        dropped = chunk.size();
        first = next = chunk.end;
    } else if (job.items.packed()) {
        // The results leave half the response area free for the error records of items that
        // throw.
        const std::size_t in = job.items.in_stride;
        const std::size_t result = std::max<std::size_t>(job.items.out_stride, 1);
        const std::size_t fit = std::min(out.room() / in, slot.capacity() / 2 / result);
        if (fit == 0) {  // only for items bigger than Pool::map packs (task_entry.hpp)
            while (next < chunk.end)
                drop_front(too_big(in));
        } else {
            next = std::min(chunk.end, first + fit);
            out.add_packed(job.items.args.data() + first * in, next - first, in);
        }
    } else {
        while (next < chunk.end) {
            const std::size_t at = job.items.offsets[next];
            const std::size_t length = job.items.offsets[next + 1] - at;
            if (next == first && !job.sink->start(next)) {
                drop_front(std::make_exception_ptr(TaskCancelled(job.task)));
                continue;
            }
            if (out.add_item(job.items.args.data() + at, length)) {
                ++next;
                continue;
            }
            if (next != first) break;  // the next chunk's first item
            // Too big for the area: the arguments go in a block of their own.
            try {
                flight.arguments.emplace(
                    ArgumentsBlock::create(job.items.args.data() + at, length));
            } catch (...) {
                drop_front(std::current_exception());  // e.g. ENOSPC, naming the block
                continue;
            }
            if (!out.add_item_in_block(flight.arguments->name(), length)) {
                flight.arguments.reset();
                drop_front(too_big(length));
                continue;
            }
            ++next;
        }
    }
    if (next < chunk.end) requeue(locked, Chunk{chunk.job, next, chunk.end}, queue);
    queue.finish(dropped);
    if (next == first) return;
    const std::uint32_t bytes = out.finish(static_cast<std::uint32_t>(next - first));
    flight.chunk = Chunk{chunk.job, first, next};
    if (job.placement) place(job, first, next, w);
    // The timeout clock starts now for a worker that is idle; behind a running chunk, the
    // worker starts it when it claims this one.
    InFlight& f = slots_[w];
    flight.posted = ++f.posted;
    slot.post(bytes, flight.posted, f.chunks() == 1 ? monotonic_ns() : 0);
}

void SlotTable::place(Job& job, std::size_t first, std::size_t end, unsigned w) {
    for (std::size_t i = first; i < end; ++i) {
        const std::uint32_t before = job.placement->record(i, w);
        if (before != Placement::none && before != w) ++counters_.stolen_ranges;
    }
}

void SlotTable::requeue(const SlotsLocked& locked, const Chunk& chunk, JobQueue& queue) {
    if (queue.requeue_front(chunk)) return;
    router_.fail_all(locked, chunk, std::make_exception_ptr(PoolClosed()));  // terminating
    queue.finish(chunk.size());
}

bool SlotTable::harvest(const SlotsLocked& locked, JobQueue& queue) {
    bool any = false;
    for (unsigned w = 0; w < slots_.size(); ++w) {
        for (unsigned b = 0; b < slot_buffers; ++b) {
            BufferFlight& flight = slots_[w].buffers[b];
            ParentSlot slot(view_, w, b);
            if (!flight.chunk || !slot.finished()) continue;
            const Chunk chunk = std::move(*flight.chunk);
            flight = BufferFlight{};  // its arguments' block goes before any result is out
            // A worker may end a chunk early (its error records filled the response area): the
            // items it did not reach go back to the front of the queue.
            const ChunkProgress p = slot.progress();
            const auto completed =
                std::min<std::uint32_t>(p.completed, static_cast<std::uint32_t>(chunk.size()));
            counters_.busy_ns += p.busy_ns;  // before the results: a caller woken sees it
            router_.deliver(locked, chunk,
                            {slot.response_area(), p.response_bytes, slot.capacity(), true}, 0,
                            completed);
            if (completed < chunk.size())
                requeue(locked, Chunk{chunk.job, chunk.begin + completed, chunk.end}, queue);
            // Retiring needs the other buffer empty: depth() is 1 when workers retire.
            const bool retire = workers_.count_items(w, completed) != Retirement::none;
            slots_[w].leaving |= retire;
            slot.release(retire);
            queue.finish(completed);
            any = true;
        }
    }
    return any;
}

std::optional<WorkerEvent> SlotTable::settle(const SlotsLocked& locked, const Departure& d,
                                             JobQueue& queue) {
    InFlight& f = slots_[d.worker];
    f.occupied = false;
    WorkerEvent event;
    event.worker = d.worker;
    event.pid = d.pid;
    event.status = d.status;
    event.reason = d.was_ready ? ExitReason::crashed : ExitReason::start_failed;
    bool report = !queue.terminating();
    bool reported_item = false;
    if (f.chunks() != 0) {
        // Each buffer requeues what it did not finish at the front of the queue: the newer
        // chunk first, so that the older ends up in front of it (a queued chunk is always newer
        // than one that ran).
        std::array<unsigned, slot_buffers> order{0, 1};
        if (static_cast<std::int32_t>(f.buffers[1].posted - f.buffers[0].posted) < 0)
            std::swap(order[0], order[1]);
        for (auto it = order.rbegin(); it != order.rend(); ++it) {
            if (f.buffers[*it].chunk) settle_buffer(locked, f, *it, event, reported_item, queue);
        }
    } else if (d.retiring != Retirement::none) {
        const bool tasks = d.retiring == Retirement::tasks;
        ++(tasks ? counters_.recycled_tasks : counters_.recycled_memory);
        event.reason = tasks ? ExitReason::recycled_tasks : ExitReason::recycled_memory;
    } else if (!queue.wants_workers()) {
        report = false;  // stopped by the pool at its end
    }
    f = InFlight{};  // empty until a replacement occupies it
    return report ? std::optional<WorkerEvent>(std::move(event)) : std::nullopt;
}

// One buffer of a dead worker: what it finished is delivered, the item it died on (only in the
// buffer it was running) is retried or failed with the reason, the rest is requeued untouched.
bool SlotTable::killed_for(const InFlight& f, unsigned b, std::uint32_t position) noexcept {
    if (f.cancelled) return *f.cancelled == b;
    return f.timed_out && f.timed_out->first == b && f.timed_out->second == position;
}

void SlotTable::settle_buffer(const SlotsLocked& locked, InFlight& f, unsigned b,
                              WorkerEvent& event, bool& reported_item, JobQueue& queue) {
    ParentSlot slot(view_, event.worker, b);
    const Chunk chunk = std::move(*f.buffers[b].chunk);
    f.buffers[b] = BufferFlight{};  // its arguments' block goes before any result is out
    Job& job = *chunk.job;
    const bool terminating = queue.terminating();
    const bool died_on_it = slot.state() == SlotState::running;
    const ChunkProgress p = slot.progress();
    const std::uint32_t completed =
        std::min<std::uint32_t>(p.completed, static_cast<std::uint32_t>(chunk.size()));
    const ResponseView response{slot.response_area(), p.response_bytes, slot.capacity(), true};
    router_.deliver(locked, chunk, response, 0, completed);
    // A result it put in a block for an item it did not finish: never read, so removed.
    if (!job.items.packed()) ResultRouter::discard_blocks(response, completed);
    std::size_t settled = completed;
    std::size_t rest = chunk.begin + completed;
    std::optional<Chunk> retry;
    if (!reported_item) event.task = job.task;
    if (died_on_it && completed < chunk.size()) {
        const std::size_t index = chunk.begin + completed;
        event.task = job.task;
        event.item = job.sink->submitted_index(index);
        reported_item = true;
        rest = index + 1;
        ++settled;
        if (terminating) {
            router_.fail(locked, chunk, completed, std::make_exception_ptr(PoolClosed()));
        } else if ((f.cancelled || f.term_sent) && !killed_for(f, b, completed)) {
            // The pool killed this worker for another item, which ended (or was in the other
            // buffer) before the signal landed: this one did nothing wrong and runs again.
            event.reason = f.cancelled ? ExitReason::cancelled : ExitReason::timeout;
            retry = Chunk{chunk.job, index, index + 1};
            --settled;
        } else if (f.cancelled == b) {
            ++counters_.cancelled;
            event.reason = ExitReason::cancelled;
            router_.fail(locked, chunk, completed,
                         std::make_exception_ptr(TaskCancelled(job.task)));
        } else if (f.timed_out) {
            ++counters_.timeouts;
            event.reason = ExitReason::timeout;
            router_.fail(locked, chunk, completed,
                         std::make_exception_ptr(TaskTimeout(
                             job.task, index,
                             std::chrono::duration<double>(options_.task_timeout).count())));
        } else {
            ++counters_.crashes;
            const int attempts = ++job.attempts[index];
            if (attempts <= options_.max_retries) {
                ++counters_.retries;
                retry = Chunk{chunk.job, index, index + 1};
                --settled;
            } else {
                router_.fail(locked, chunk, completed,
                             std::make_exception_ptr(
                                 WorkerCrashed(job.task, index, event.pid, event.status.signal,
                                               event.status.exit_code, attempts)));
            }
        }
    }
    queue.finish(settled);
    // What never started goes back to the queue, untouched, behind the retry.
    if (rest < chunk.end) requeue(locked, Chunk{chunk.job, rest, chunk.end}, queue);
    if (retry) requeue(locked, *retry, queue);
}

void SlotTable::kill_cancelled(const SlotsLocked& locked, JobQueue& queue) {
    for (unsigned w = 0; w < slots_.size(); ++w) {
        InFlight& f = slots_[w];
        if (!f.occupied || f.cancelled) continue;
        for (unsigned b = 0; b < slot_buffers; ++b) {
            BufferFlight& flight = f.buffers[b];
            if (!flight.chunk || !flight.chunk->job->sink->kill_requested()) continue;
            ParentSlot slot(view_, w, b);
            if (slot.try_reclaim()) {
                // Posted but not claimed yet: cancelled without a kill.
                const Chunk chunk = std::move(*flight.chunk);
                flight = BufferFlight{};
                router_.fail_all(locked, chunk,
                                 std::make_exception_ptr(TaskCancelled(chunk.job->task)));
                queue.finish(chunk.size());
            } else if (slot.state() == SlotState::running) {
                f.cancelled = b;
                workers_.signal(w, SIGKILL);
                break;
            }
        }
    }
}

std::uint64_t SlotTable::expire(const SlotsLocked& /*locked*/, std::uint64_t now) {
    if (options_.task_timeout.count() <= 0) return 0;
    const auto timeout =
        static_cast<std::uint64_t>(std::chrono::nanoseconds(options_.task_timeout).count());
    const auto grace =
        static_cast<std::uint64_t>(std::chrono::nanoseconds(options_.kill_grace).count());
    std::uint64_t next = 0;
    auto due = [&](std::uint64_t t) { next = next == 0 ? t : std::min(next, t); };
    for (unsigned w = 0; w < slots_.size(); ++w) {
        InFlight& f = slots_[w];
        if (!f.occupied || f.chunks() == 0) continue;
        if (f.term_sent) {
            if (!f.kill_sent && now >= f.kill_deadline_ns) {
                workers_.signal(w, SIGKILL);
                f.kill_sent = true;
            } else if (!f.kill_sent) {
                due(f.kill_deadline_ns);
            }
            continue;
        }
        // The clock is the worker's: the item it is on, in the buffer it runs.
        std::optional<unsigned> running;
        bool queued = false;
        for (unsigned b = 0; b < slot_buffers; ++b) {
            if (!f.buffers[b].chunk) continue;
            const SlotState state = ParentSlot(view_, w, b).state();
            if (state == SlotState::running) running = b;
            queued |= state == SlotState::queued;
        }
        // Only a running chunk times out; a queued one on an idle worker carries the post's
        // provisional start, so that the supervisor wakes to time the chunk once it is claimed
        // (the worker's claim wakes nobody).
        if (!running && !queued) continue;
        const ParentSlot slot(view_, w, running.value_or(0));
        const std::uint64_t started = slot.item_started_ns();
        if (started == 0) continue;
        // A worker may stamp a start after `now` was read: never subtract past zero.
        if (running && started <= now && now - started >= timeout) {
            f.timed_out.emplace(*running, slot.completed());
            f.term_sent = true;
            f.kill_deadline_ns = now + grace;
            workers_.signal(w, SIGTERM);
            due(f.kill_deadline_ns);
        } else {
            due(started + timeout);
        }
    }
    return next;
}

void SlotTable::shut_down_idle(const SlotsLocked& /*locked*/) {
    for (unsigned w = 0; w < slots_.size(); ++w) {
        InFlight& f = slots_[w];
        if (f.occupied && f.chunks() == 0 && ParentSlot(view_, w).order_shutdown())
            f.leaving = true;
    }
}

}  // namespace shmpool::detail
