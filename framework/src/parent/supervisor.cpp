// Supervisor: the round, the idle spin and sleep, and assist().
#include "parent/supervisor.hpp"

#include <fmt/format.h>

#include <cstdio>

#include "posix/sys.hpp"

namespace shmpool::detail {
namespace {

// How long a Future::get() spins, harvesting, before it sleeps: longer than waking a sleeping
// worker on another core (tens of µs here), short next to any task worth a process.
constexpr std::uint64_t assist_ns = 100'000;
// A short spin of the supervisor before it sleeps: with 2 cores, longer spins starve the worker.
constexpr int supervisor_spin_rounds = 300;

timespec relative(std::uint64_t ns) {
    return {static_cast<time_t>(ns / 1'000'000'000u), static_cast<long>(ns % 1'000'000'000u)};
}

}  // namespace

Supervisor::Supervisor(const Parts& parts) : parts_(parts), executors_{&parts.slots} {
}

void Supervisor::attach_remote(const SlotsLocked& /*locked*/, RemoteNodes& remote) {
    remote_ = &remote;
    for (ChunkExecutor* e : remote.executors())
        executors_.push_back(e);
}

void Supervisor::start() {
    thread_ = std::thread([this] { run(); });
}

void Supervisor::join() {
    if (thread_.joinable()) thread_.join();
}

bool Supervisor::has_finished() const noexcept {
    for (const ChunkExecutor* e : executors_) {
        if (e->has_finished()) return true;
    }
    return false;
}

Supervisor::Round Supervisor::round(const SlotsLocked& locked) {
    Round r;
    r.progress = handle_deaths(locked);
    for (ChunkExecutor* e : executors_) {
        r.progress |= e->harvest(locked, parts_.queue);
        r.progress |= e->dispatch(locked, parts_.queue);
    }
    parts_.slots.kill_cancelled(locked, parts_.queue);
    if (remote_) remote_->kill_cancelled(locked);
    r.next_deadline_ns = parts_.slots.expire(locked, sys::monotonic_ns());
    if (parts_.queue.stopping_and_idle()) {
        parts_.slots.shut_down_idle(locked);
        r.finished = !parts_.workers.any_alive();
    }
    return r;
}

void Supervisor::run() {
    for (;;) {
        const std::uint32_t seen = parts_.bell.seen();
        Round r;
        {
            SlotGuard guard(parts_.slots.lock());
            r = round(guard.proof());
        }
        if (r.finished) return;
        if (r.progress) continue;
        // No spin when workers do not spin either: the processes outnumber the cores.
        const int spin = parts_.options.idle_spin.count() > 0 ? supervisor_spin_rounds : 0;
        for (int i = 0; i < spin && parts_.bell.seen() == seen; ++i)
            sys::cpu_relax();
        if (parts_.bell.seen() != seen) continue;
        if (r.next_deadline_ns == 0) {
            parts_.bell.sleep(seen, nullptr);
        } else {
            const std::uint64_t now = sys::monotonic_ns();
            const timespec wait = relative(r.next_deadline_ns > now ? r.next_deadline_ns - now : 0);
            parts_.bell.sleep(seen, &wait);
        }
    }
}

bool Supervisor::handle_deaths(const SlotsLocked& locked) {
    const std::vector<WorkerDeath> deaths = parts_.watcher.take_deaths();
    for (const WorkerDeath& death : deaths) {
        const std::optional<Departure> d = parts_.workers.reap(death.worker, death.generation);
        if (!d) continue;  // a report about a worker already replaced
        if (std::optional<WorkerEvent> event = parts_.slots.settle(locked, *d, parts_.queue))
            parts_.callbacks.push(std::move(*event));
        const Replacement r = parts_.workers.replace(*d, parts_.queue.wants_workers());
        if (r.launched) {
            parts_.slots.occupy(locked, d->worker);
        } else if (r.gave_up) {
            if (r.while_starting) {
                parts_.bell.ring();  // the constructor waits on the bell, and fails with it
            } else {
                give_up(locked, *d, r.gave_up);
            }
        }
    }
    return !deaths.empty();
}

// A running pool gives up on a slot's worker; with none left, its work can only fail.
void Supervisor::give_up(const SlotsLocked& locked, const Departure& departure,
                         const std::exception_ptr& why) {
    try {
        std::rethrow_exception(why);
    } catch (const std::exception& e) {
        fmt::print(stderr, "shmpool: not replacing worker {}: {}\n", departure.worker, e.what());
    }
    if (parts_.workers.any_alive()) return;
    for (const Chunk& chunk : parts_.queue.abandon(why)) {
        parts_.router.fail_all(locked, chunk, why);
        parts_.queue.finish(chunk.size());
    }
}

bool Supervisor::dispatch_here() {
    SlotGuard guard(parts_.slots.lock(), SlotGuard::try_only);
    if (!guard.owns()) return false;
    for (ChunkExecutor* e : executors_)
        e->dispatch(guard.proof(), parts_.queue);
    guard.release();
    return parts_.queue.empty();
}

bool Supervisor::help_once() {
    if (!has_finished()) return false;
    SlotGuard guard(parts_.slots.lock(), SlotGuard::try_only);
    if (!guard.owns()) return false;
    for (ChunkExecutor* e : executors_) {
        e->harvest(guard.proof(), parts_.queue);
        e->dispatch(guard.proof(), parts_.queue);
    }
    return true;
}

void Supervisor::assist(bool (*ready)(const void*), const void* context) {
    auto help = [&] { help_once(); };
    {
        const Bell::Helping helping(parts_.bell);
        const std::uint64_t until = sys::monotonic_ns() + assist_ns;
        for (unsigned i = 0; !ready(context); ++i) {
            help();
            sys::cpu_relax();
            if (i % 64 == 63 && sys::monotonic_ns() > until) break;
        }
    }
    while (!ready(context)) {
        const std::uint32_t seen = parts_.bell.seen();
        help();
        if (ready(context)) break;
        // Every completion, every death and every delivered result rings the bell; the timeout
        // is only a backstop.
        const timespec backstop{0, 100'000'000};
        parts_.bell.sleep(seen, &backstop);
    }
    // A worker that finished while we helped did not wake the supervisor: do it now.
    if (has_finished()) parts_.bell.ring();
}

}  // namespace shmpool::detail
