// Pool: the parent side. A supervisor thread dispatches chunks into worker slots and harvests
// results; a watcher thread turns worker deaths (pidfds) into wake-ups; dead workers' slots are
// resolved item by item and the workers replaced.
#include "shmpool/framework/pool.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "control_block.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "shmpool/shm/tracker.hpp"
#include "worker_process.hpp"

namespace shmpool {
namespace {

using detail::ControlView;
using detail::SlotHeader;

// A job: one submit, or one map; its items' arguments are encoded back to back.
struct Job {
    std::string task;
    std::shared_ptr<detail::ResultSink> sink;
    detail::JobItems items;
    // Items whose worker died, and the job's progress: the supervisor thread's alone.
    std::unordered_map<std::size_t, int> attempts;
    std::size_t settled = 0;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_report{};
};

// The ready-made progress bar: one line on stderr, redrawn in place.
void draw_progress_bar(const Progress& p) {
    constexpr int width = 30;
    int filled = p.total ? static_cast<int>(width * p.done / p.total) : width;
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, ' ');
    fmt::print(stderr, "\r{} [{}] {}/{} {:.0f}/s ETA {:.0f}s ", p.task, bar, p.done, p.total,
               p.rate, p.eta_seconds);
    if (p.done == p.total) fmt::print(stderr, "\n");
    std::fflush(stderr);
}

// A run of consecutive items of one job: the unit of dispatch.
struct Chunk {
    std::shared_ptr<Job> job;
    std::size_t begin = 0;
    std::size_t end = 0;
    std::size_t size() const noexcept { return end - begin; }
};

struct Worker {
    std::optional<detail::WorkerProcess> process;
    unsigned generation = 0;
    std::optional<Chunk> chunk;  // what its slot holds
    bool kill_sent = false;      // SIGTERM for a timeout
    bool sigkill_sent = false;
    std::uint64_t kill_deadline_ns = 0;
    std::optional<std::size_t> timed_out;  // position in the chunk of the item that ran too long
    bool cancelled = false;                // killed for a hard cancel of its task
    std::string recycling;                 // "tasks" or "memory" once told to retire
    std::size_t items_run = 0;             // since it started
    // Its deaths before it reported ready, since it last was: reset by a worker that got ready.
    std::vector<WorkerStartFailed::Attempt> start_attempts;
};

// Resident set size of a live process, in bytes (0 if unknown).
std::size_t resident_bytes(pid_t pid) {
    std::FILE* f = std::fopen(fmt::format("/proc/{}/statm", pid).c_str(), "r");
    if (f == nullptr) return 0;
    unsigned long size = 0, resident = 0;
    int got = std::fscanf(f, "%lu %lu", &size, &resident);
    std::fclose(f);
    return got == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

// How long a Future::get() spins, harvesting, before it sleeps: longer than waking a sleeping
// worker on another core (tens of µs here), short next to any task worth a process.
constexpr std::uint64_t assist_ns = 100'000;
constexpr int supervisor_spin_rounds =
    300;  // a short spin: with 2 cores, longer spins starve the worker

std::exception_ptr task_error(const std::string& task, const std::string& payload) {
    try {
        Reader r(payload.data(), payload.size());
        std::string type = Codec<std::string>::decode(r);
        std::string message = Codec<std::string>::decode(r);
        return std::make_exception_ptr(TaskError(task, type, message));
    } catch (const std::exception& e) {
        return std::make_exception_ptr(TaskError(task, "unknown", e.what()));
    }
}

// The error a worker's initializer left in its slot, as a TaskError.
std::exception_ptr initializer_error(const ControlView& view, unsigned w, const std::string& task) {
    const std::byte* area = view.response(w);
    std::uint32_t len = 0;
    std::memcpy(&len, area + 1, 4);
    if (len > view.header()->slot_bytes) len = 0;
    return task_error(task, std::string(reinterpret_cast<const char*>(area + 5), len));
}

}  // namespace

struct Pool::Impl {
    PoolOptions options;
    unsigned n = 0;
    std::string executable;
    std::string shared_block_list;  // PoolOptions::shared_blocks, '/'-separated, for the workers
    SharedMemory block;
    ControlView view;
    std::vector<Worker> workers;
    mutable std::mutex workers_mutex;  // for worker_pids() from other threads
    // Until the constructor has seen every worker ready: the supervisor gives up on a worker
    // that cannot start by leaving the reason here (under workers_mutex), for the constructor.
    bool started = false;
    std::exception_ptr start_error;

    std::mutex queue_mutex;
    std::condition_variable idle;
    std::deque<Chunk> queue;
    std::size_t in_flight = 0;  // items queued or running
    bool closed = false;
    bool stopping = false;
    bool terminating = false;
    bool joined = false;
    std::exception_ptr no_workers;  // the pool gave up on its last worker: why

    int epoll_fd = -1;
    int stop_fd = -1;
    std::mutex deaths_mutex;
    std::vector<std::pair<unsigned, unsigned>> deaths;  // (worker, generation)
    std::thread watcher;
    std::thread supervisor;
    // Workers' stderr pipes, read by the watcher (which owns and closes them): fd -> prefix.
    std::mutex pipes_mutex;
    std::unordered_map<int, std::string> stderr_prefix;
    std::unordered_map<int, std::string> stderr_partial;  // the watcher's alone

    // Guards the slots and the workers' chunks. The supervisor takes it for each round of work;
    // other threads only ever try it (dispatch from submit, harvest from Future::get), so a
    // callback that submits work can never deadlock on it.
    std::atomic_flag slots_busy = ATOMIC_FLAG_INIT;
    bool try_lock_slots() noexcept { return !slots_busy.test_and_set(std::memory_order_acquire); }
    // The holder may have been preempted (more busy threads than cores): after a short spin,
    // give the core away rather than burn the time slice it needs to finish.
    void lock_slots() noexcept {
        for (unsigned i = 1; slots_busy.test_and_set(std::memory_order_acquire); ++i) {
            if (i % 64 == 0) {
                std::this_thread::yield();
            } else {
                __builtin_ia32_pause();
            }
        }
    }
    void unlock_slots() noexcept { slots_busy.clear(std::memory_order_release); }
    bool any_slot_done() const noexcept {
        for (unsigned w = 0; w < n; ++w) {
            if (view.slot(w)->state.load(std::memory_order_seq_cst) == detail::slot_done)
                return true;
        }
        return false;
    }

    // A thread waiting in Future::get() harvests results itself, which saves the round trip
    // through the supervisor thread: it spins for a while (workers then do not even wake the
    // supervisor), then sleeps on the bell, which a finishing worker rings directly.
    void assist(const std::function<bool()>& ready) {
        detail::ControlHeader* h = view.header();
        auto help = [&] {
            if (any_slot_done() && try_lock_slots()) {
                harvest();
                dispatch();
                unlock_slots();
            }
        };
        h->helpers.fetch_add(1, std::memory_order_seq_cst);
        const std::uint64_t until = detail::monotonic_ns() + assist_ns;
        for (unsigned i = 0; !ready(); ++i) {
            help();
            __builtin_ia32_pause();
            if (i % 64 == 63 && detail::monotonic_ns() > until) break;
        }
        h->helpers.fetch_sub(1, std::memory_order_seq_cst);
        while (!ready()) {
            std::uint32_t seen = h->parent_bell.load(std::memory_order_seq_cst);
            help();
            if (ready()) break;
            // Every completion, every death and every delivered result rings the bell; the
            // timeout is only a backstop.
            timespec backstop{0, 100'000'000};
            sleep_on_bell(seen, &backstop);
        }
        // A worker that finished while we helped did not wake the supervisor: do it now.
        if (any_slot_done()) ring();
    }

    std::atomic<std::size_t> done{0}, failed{0}, retries{0}, crashes{0}, respawns{0},
        start_failures{0}, timeouts{0}, cancelled{0}, recycled_tasks{0}, recycled_memory{0};
    std::atomic<std::uint64_t> busy_ns{0};  // workers' time on the chunks harvested
    // What futures hold to reach the pool (to wake it, to harvest their own result): nulled
    // before the pool goes, which then waits until no future is still inside it.
    struct Handle {
        std::atomic<Impl*> impl;
        std::atomic<int> users{0};
    };
    std::shared_ptr<Handle> self = std::make_shared<Handle>(this);

    void ring() {
        detail::ControlHeader* h = view.header();
        h->parent_bell.fetch_add(1, std::memory_order_seq_cst);
        if (h->parent_sleeping.load(std::memory_order_seq_cst))
            detail::futex_wake(&h->parent_bell, INT_MAX);
    }

    // Sleeps on the bell unless it moved since `seen` (the supervisor, and callers in get()).
    void sleep_on_bell(std::uint32_t seen, const timespec* timeout) {
        detail::ControlHeader* h = view.header();
        h->parent_sleeping.fetch_add(1, std::memory_order_seq_cst);
        if (h->parent_bell.load(std::memory_order_seq_cst) == seen)
            detail::futex_wait(&h->parent_bell, seen, timeout);
        h->parent_sleeping.fetch_sub(1, std::memory_order_seq_cst);
    }

    void spawn(unsigned w) {
        std::vector<std::string> env{"SHMPOOL_ROLE=worker", "SHMPOOL_POOL=" + block.name(),
                                     "SHMPOOL_WORKER=" + std::to_string(w),
                                     "SHMPOOL_BLOCKS=" + shared_block_list};
        env.insert(env.end(), options.environment.begin(), options.environment.end());
        Worker& wk = workers[w];
        SlotHeader* slot = view.slot(w);
        // Reset before the launch: the new worker may attach (and publish its pid) at once.
        slot->completed.store(0);
        slot->item_started_ns.store(0);
        slot->init_failed.store(0);
        slot->worker_pid.store(0);
        slot->attached_pid.store(0);
        slot->state.store(detail::slot_free, std::memory_order_seq_cst);
        // Its stderr comes through a pipe, so that each line can be prefixed with its id.
        int err[2] = {-1, -1};
        if (::pipe2(err, O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "pipe2 failed");
        std::optional<detail::WorkerProcess> started;
        try {
            started.emplace(executable, env, err[1]);
        } catch (...) {
            ::close(err[0]);
            ::close(err[1]);
            throw;
        }
        ::close(err[1]);
        detail::WorkerProcess p = std::move(*started);
        {
            std::lock_guard lock(pipes_mutex);
            stderr_prefix[err[0]] = fmt::format("[worker {} pid {}] ", w, p.pid());
        }
        epoll_event pipe_ev{};
        pipe_ev.events = EPOLLIN;
        pipe_ev.data.u64 = stderr_tag | static_cast<std::uint64_t>(err[0]);
        ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, err[0], &pipe_ev);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = (static_cast<std::uint64_t>(w) << 32) | (wk.generation + 1);
        if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, p.pidfd(), &ev) != 0) {
            throw std::system_error(errno, std::generic_category(),
                                    "epoll_ctl on a worker pidfd failed");
        }
        std::lock_guard lock(workers_mutex);
        wk.generation += 1;
        wk.process.emplace(std::move(p));
        wk.kill_sent = wk.sigkill_sent = wk.cancelled = false;
        wk.timed_out.reset();
        wk.recycling.clear();
        wk.items_run = 0;
    }

    void watch() {
        epoll_event events[16];
        for (;;) {
            int k = ::epoll_wait(epoll_fd, events, 16, -1);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) return;
            for (int i = 0; i < k; ++i) {
                if (events[i].data.u64 == UINT64_MAX) return;  // stop_fd
                if (events[i].data.u64 & stderr_tag) {
                    relay_stderr(static_cast<int>(events[i].data.u64 & 0xffffffffu));
                    continue;
                }
                auto w = static_cast<unsigned>(events[i].data.u64 >> 32);
                auto gen = static_cast<unsigned>(events[i].data.u64 & 0xffffffffu);
                {
                    // Level-triggered: stop reporting this pidfd. Done before the death is
                    // reported, so the worker in slot w is still the one that died.
                    std::lock_guard lock(workers_mutex);
                    if (w < workers.size() && workers[w].process && workers[w].generation == gen) {
                        ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, workers[w].process->pidfd(), nullptr);
                    }
                }
                std::lock_guard lock(deaths_mutex);
                deaths.emplace_back(w, gen);
            }
            ring();
        }
    }

    static constexpr std::uint64_t stderr_tag = std::uint64_t{1} << 62;

    // Copies a worker's stderr to ours, each complete line prefixed with the worker's id.
    void relay_stderr(int fd) {
        char buf[4096];
        ssize_t got = ::read(fd, buf, sizeof buf);
        std::string prefix;
        {
            std::lock_guard lock(pipes_mutex);
            prefix = stderr_prefix[fd];
        }
        std::string& partial = stderr_partial[fd];
        if (got > 0) partial.append(buf, static_cast<std::size_t>(got));
        std::size_t start = 0;
        std::string out;
        for (std::size_t nl; (nl = partial.find('\n', start)) != std::string::npos;
             start = nl + 1) {
            out += prefix;
            out.append(partial, start, nl + 1 - start);
        }
        partial.erase(0, start);
        if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR))) {
            if (!partial.empty())
                out += prefix + partial + "\n";  // the last words of a dead worker
            ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
            ::close(fd);
            stderr_partial.erase(fd);
            std::lock_guard lock(pipes_mutex);
            stderr_prefix.erase(fd);
        }
        if (!out.empty()) (void)!::write(STDERR_FILENO, out.data(), out.size());
    }

    // The end of the pool, once the supervisor is gone: stops the watcher, kills and reaps any
    // worker left (so their stderr pipes reach EOF), relays their last words, removes the block.
    void teardown() {
        std::uint64_t one = 1;
        (void)!::write(stop_fd, &one, sizeof one);
        if (watcher.joinable()) watcher.join();
        workers.clear();
        drain_stderr();
        if (epoll_fd >= 0) ::close(epoll_fd);
        if (stop_fd >= 0) ::close(stop_fd);
        epoll_fd = stop_fd = -1;
        joined = true;
        if (block.is_open()) {
            try {
                block.unlink();
            } catch (const std::system_error&) {
                // already removed, e.g. by the tracker after a crash of ours
            }
            block.close();
        }
    }

    // After the watcher stopped: what the dead workers wrote last, then their pipes closed.
    void drain_stderr() {
        std::vector<int> fds;
        {
            std::lock_guard lock(pipes_mutex);
            for (const auto& [fd, prefix] : stderr_prefix)
                fds.push_back(fd);
        }
        for (int fd : fds) {
            while (true) {
                {
                    std::lock_guard lock(pipes_mutex);
                    if (!stderr_prefix.count(fd)) break;
                }
                relay_stderr(fd);
            }
        }
    }

    // Delivers records [from, to) of worker w's chunk. The statistics are updated first: whoever
    // sees a result also sees it counted.
    void deliver(unsigned w, const Chunk& chunk, std::uint32_t from, std::uint32_t to) {
        if (chunk.job->items.packed()) {
            deliver_packed(w, chunk, from, to);
            return;
        }
        const std::byte* area = view.response(w);
        struct Record {
            std::uint8_t kind;
            std::uint32_t len;
            const char* bytes;
        };
        std::vector<Record> records;
        records.reserve(to - from);
        std::uint32_t offset = 0;
        std::size_t ok = 0;
        for (std::uint32_t i = 0; i < to; ++i) {
            Record r{static_cast<std::uint8_t>(area[offset]), 0, nullptr};
            std::memcpy(&r.len, area + offset + 1, 4);
            r.bytes = reinterpret_cast<const char*>(area + offset + 5);
            offset += 5 + r.len;
            if (i < from) continue;
            ok += r.kind == detail::record_value;
            records.push_back(r);
        }
        done += ok;
        failed += records.size() - ok;
        note_progress(*chunk.job, records.size());
        detail::ResultSink& sink = *chunk.job->sink;
        // Runs of successful results go to the sink in one call; failures one by one.
        std::vector<std::pair<const char*, std::uint32_t>> run;
        run.reserve(records.size());
        std::size_t run_first = 0;
        auto flush = [&] {
            if (run.empty()) return;
            try {
                sink.set_values(run.data(), run.size(), chunk.begin + from + run_first);
            } catch (...) {
                // A result that does not decode fails its item, never the pool. The run is
                // settled again one by one (set_values settles nothing when it throws).
                for (std::size_t k = 0; k < run.size(); ++k) {
                    const std::size_t index = chunk.begin + from + run_first + k;
                    try {
                        Reader reader(run[k].first, run[k].second);
                        sink.set_value(reader, index);
                    } catch (...) {
                        --done;
                        ++failed;
                        sink.set_error(std::current_exception(), index);
                    }
                }
            }
            run.clear();
        };
        for (std::size_t k = 0; k < records.size(); ++k) {
            const Record& r = records[k];
            if (r.kind == detail::record_value) {
                if (run.empty()) run_first = k;
                run.emplace_back(r.bytes, r.len);
                continue;
            }
            flush();
            sink.set_error(task_error(chunk.job->task, std::string(r.bytes, r.len)),
                           chunk.begin + from + k);
        }
        flush();
    }

    // A packed chunk's response: the results back to back, then an error record
    // [u32 position][u32 length][payload] for each item that threw, in order.
    void deliver_packed(unsigned w, const Chunk& chunk, std::uint32_t from, std::uint32_t to) {
        const char* area = reinterpret_cast<const char*>(view.response(w));
        const std::size_t stride = chunk.job->items.out_stride;
        const std::size_t capacity = view.header()->slot_bytes;
        const std::size_t errors_end = std::min<std::size_t>(
            view.slot(w)->response_bytes.load(std::memory_order_acquire), capacity);
        std::size_t at = chunk.size() * std::max<std::size_t>(stride, 1);
        detail::ResultSink& sink = *chunk.job->sink;
        note_progress(*chunk.job, to - from);
        auto settle_run = [&](std::uint32_t b, std::uint32_t e) {
            if (b >= e) return;
            done += e - b;
            try {
                sink.set_packed(area + b * stride, stride, e - b, chunk.begin + b);
            } catch (...) {
                done -= e - b;
                failed += e - b;
                for (std::uint32_t k = b; k < e; ++k)
                    sink.set_error(std::current_exception(), chunk.begin + k);
            }
        };
        std::uint32_t next = from;
        while (at + 8 <= errors_end) {
            std::uint32_t pos = 0, len = 0;
            std::memcpy(&pos, area + at, 4);
            std::memcpy(&len, area + at + 4, 4);
            if (pos >= to || at + 8 + len > errors_end) break;
            std::string payload(area + at + 8, len);
            at += 8 + len;
            if (pos < next) continue;
            settle_run(next, pos);
            ++failed;
            sink.set_error(task_error(chunk.job->task, payload), chunk.begin + pos);
            next = pos + 1;
        }
        settle_run(next, to);
    }

    // Reports a job's progress: at most every 100 ms, and at its end.
    void note_progress(Job& job, std::size_t n) {
        const bool bar = options.progress_bar && ::isatty(STDERR_FILENO);
        if ((!options.on_progress && !bar) || job.items.size() < 2 || n == 0) return;
        job.settled += n;
        auto now = std::chrono::steady_clock::now();
        if (job.settled < job.items.size() &&
            now - job.last_report < std::chrono::milliseconds(100))
            return;
        job.last_report = now;
        Progress p;
        p.task = job.task;
        p.done = job.settled;
        p.total = job.items.size();
        p.elapsed_seconds = std::chrono::duration<double>(now - job.started).count();
        p.rate = p.elapsed_seconds > 0 ? static_cast<double>(p.done) / p.elapsed_seconds : 0;
        p.eta_seconds = p.rate > 0 ? static_cast<double>(p.total - p.done) / p.rate : 0;
        if (options.on_progress) options.on_progress(p);
        if (bar) draw_progress_bar(p);
    }

    void finish_items(std::size_t count) {
        std::lock_guard lock(queue_mutex);
        in_flight -= count;
        if (in_flight == 0) idle.notify_all();
    }

    void fail(const Chunk& chunk, std::size_t pos, std::exception_ptr e) {
        ++failed;
        note_progress(*chunk.job, 1);
        chunk.job->sink->set_error(std::move(e), chunk.begin + pos);
    }

    bool harvest() {
        bool any = false;
        for (unsigned w = 0; w < n; ++w) {
            Worker& wk = workers[w];
            if (!wk.chunk ||
                view.slot(w)->state.load(std::memory_order_acquire) != detail::slot_done)
                continue;
            Chunk chunk = std::move(*wk.chunk);
            wk.chunk.reset();
            // A worker may stop a chunk early (its error records filled the response area): the
            // items it did not reach go back to the front of the queue.
            const std::uint32_t completed =
                std::min<std::uint32_t>(view.slot(w)->completed.load(std::memory_order_acquire),
                                        static_cast<std::uint32_t>(chunk.size()));
            // Counted before the results go out: a caller woken by them sees its work in stats().
            busy_ns += view.slot(w)->chunk_busy_ns.load(std::memory_order_relaxed);
            deliver(w, chunk, 0, completed);
            if (completed < chunk.size()) {
                std::lock_guard lock(queue_mutex);
                queue.push_front(Chunk{chunk.job, chunk.begin + completed, chunk.end});
            }
            view.slot(w)->item_started_ns.store(0);
            wk.items_run += completed;
            // Recycling is decided between chunks: the worker finishes what it has, then retires.
            if (options.max_tasks_per_worker && wk.items_run >= options.max_tasks_per_worker) {
                wk.recycling = "tasks";
            } else if (options.max_memory_per_worker && wk.process &&
                       resident_bytes(wk.process->pid()) > options.max_memory_per_worker) {
                wk.recycling = "memory";
            }
            view.slot(w)->state.store(
                wk.recycling.empty() ? detail::slot_free : detail::slot_shutdown,
                std::memory_order_seq_cst);
            if (!wk.recycling.empty()) detail::futex_wake(&view.slot(w)->state, 1);
            finish_items(completed);
            any = true;
        }
        return any;
    }

    // Packs as much of the next chunk as fits worker w's request area, straight into the slot;
    // the rest goes back to the front of the queue.
    bool dispatch() {
        bool any = false;
        for (unsigned w = 0; w < n; ++w) {
            Worker& wk = workers[w];
            if (wk.chunk || !wk.process ||
                view.slot(w)->state.load(std::memory_order_acquire) != detail::slot_free) {
                continue;
            }
            Chunk chunk;
            {
                std::lock_guard lock(queue_mutex);
                if (queue.empty() || terminating) return any;
                chunk = std::move(queue.front());
                queue.pop_front();
            }
            any = true;
            Job& job = *chunk.job;
            std::byte* request = view.request(w);
            const std::size_t capacity = view.header()->slot_bytes;
            std::size_t used = 0;
            auto put = [&](const void* p, std::size_t k) {
                std::memcpy(request + used, p, k);
                used += k;
            };
            auto name_len = static_cast<std::uint64_t>(job.task.size());
            put(&name_len, 8);
            put(job.task.data(), job.task.size());
            const std::size_t count_at = used;
            used += 4;
            put(&job.items.in_stride, 4);  // 0: variable-size items, each after its length
            put(&job.items.out_stride, 4);
            std::size_t first = chunk.begin;
            std::size_t next = chunk.begin;
            std::size_t dropped = 0;
            // Only the front item can be dropped: a cancelled future, or arguments that fit no
            // slot; what is packed stays one run of consecutive items.
            auto drop_front = [&](std::size_t len) {
                if (!job.sink->cancelled(next)) {
                    ++failed;
                    job.sink->set_error(
                        std::make_exception_ptr(std::length_error(fmt::format(
                            "task '{}' item {}: {} bytes of arguments exceed the pool's "
                            "slot_bytes ({})",
                            job.task, next, len, capacity))),
                        next);
                }
                ++dropped;
                first = ++next;
            };
            if (job.items.packed()) {
                // Packed: the arguments in one copy; the results leave half the response area
                // free for the error records of items that throw.
                const std::size_t in = job.items.in_stride;
                const std::size_t out = std::max<std::size_t>(job.items.out_stride, 1);
                std::size_t fit = std::min((capacity - used) / in, capacity / 2 / out);
                if (fit == 0) {
                    while (next < chunk.end)
                        drop_front(in);
                } else {
                    next = std::min(chunk.end, first + fit);
                    put(job.items.args.data() + first * in, (next - first) * in);
                }
            } else {
                while (next < chunk.end) {
                    const std::size_t len = job.items.offsets[next + 1] - job.items.offsets[next];
                    if (next == first && (!job.sink->start(next) || used + 8 + len > capacity)) {
                        drop_front(len);
                        continue;
                    }
                    if (used + 8 + len > capacity) break;
                    auto len64 = static_cast<std::uint64_t>(len);
                    put(&len64, 8);
                    put(job.items.args.data() + job.items.offsets[next], len);
                    ++next;
                }
            }
            if (next < chunk.end) {
                std::lock_guard lock(queue_mutex);
                queue.push_front(Chunk{chunk.job, next, chunk.end});
            }
            if (dropped) finish_items(dropped);
            if (next == first) continue;
            auto count = static_cast<std::uint32_t>(next - first);
            std::memcpy(request + count_at, &count, 4);
            SlotHeader* slot = view.slot(w);
            slot->request_bytes.store(static_cast<std::uint32_t>(used), std::memory_order_relaxed);
            // A provisional start: the timeout clock runs from dispatch until the worker starts
            // the item, so a deadline exists before the supervisor sleeps.
            slot->item_started_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
            wk.chunk = Chunk{chunk.job, first, next};
            slot->state.store(detail::slot_queued, std::memory_order_seq_cst);
            if (slot->worker_sleeping.load(std::memory_order_seq_cst))
                detail::futex_wake(&slot->state, 1);
        }
        return any;
    }

    bool handle_deaths() {
        std::vector<std::pair<unsigned, unsigned>> list;
        {
            std::lock_guard lock(deaths_mutex);
            list.swap(deaths);
        }
        for (auto [w, gen] : list) {
            Worker& wk = workers[w];
            if (gen != wk.generation || !wk.process) continue;
            ExitStatus status = wk.process->reap();
            pid_t pid = wk.process->pid();
            {
                std::lock_guard lock(workers_mutex);
                wk.process.reset();
            }
            SlotHeader* slot = view.slot(w);
            // A death before the worker reported ready is a start-up failure: replaced like any
            // crash, but only so many times in a row (a program that cannot start would be
            // relaunched forever).
            const bool ready = slot->worker_pid.load() == pid;
            std::exception_ptr init_error;
            if (ready) {
                wk.start_attempts.clear();
            } else {
                if (const std::uint32_t why = slot->init_failed.load())
                    init_error = initializer_error(
                        view, w,
                        why == 2 ? "PoolOptions::shared_blocks" : options.initializer.name);
                wk.start_attempts.push_back({pid, status, slot->attached_pid.load() == pid});
                ++start_failures;
            }
            resolve(w, pid, status, !ready);
            bool respawn;
            {
                std::lock_guard lock(queue_mutex);
                respawn = !stopping || in_flight > 0;
                respawn = respawn && !terminating;
            }
            if (respawn && !ready) {
                bool starting;
                {
                    std::lock_guard lock(workers_mutex);
                    starting = !started;
                }
                std::exception_ptr give_up;
                if (init_error && starting) {
                    give_up = init_error;  // the initializer's own error, once, for the constructor
                } else if (wk.start_attempts.size() >= options.max_start_failures) {
                    give_up = init_error ? init_error
                                         : std::make_exception_ptr(
                                               WorkerStartFailed(w, executable, wk.start_attempts));
                }
                if (give_up) {
                    respawn = false;
                    if (starting) {
                        std::lock_guard lock(workers_mutex);
                        if (!start_error) start_error = give_up;
                    } else {
                        try {
                            std::rethrow_exception(give_up);
                        } catch (const std::exception& e) {
                            fmt::print(stderr, "shmpool: not replacing worker {}: {}\n", w,
                                       e.what());
                        }
                        abandon_if_no_workers(give_up);
                    }
                    ring();  // the constructor waits on the bell
                }
            }
            if (respawn) {
                try {
                    spawn(w);
                    ++respawns;
                } catch (const std::exception& e) {
                    std::lock_guard lock(workers_mutex);
                    if (!started) {
                        if (!start_error) start_error = std::current_exception();
                    } else {
                        fmt::print(stderr, "shmpool: cannot replace worker {}: {}\n", w, e.what());
                    }
                }
                if (!workers[w].process) {
                    abandon_if_no_workers(nullptr);
                    ring();
                }
            }
        }
        return !list.empty();
    }

    // The worker in slot w is dead: settle every item of its chunk exactly once.
    void resolve(unsigned w, pid_t pid, const ExitStatus& status, bool before_ready) {
        Worker& wk = workers[w];
        SlotHeader* slot = view.slot(w);
        WorkerEvent event{w,  pid,          status.signal,      status.exit_code,
                          {}, std::nullopt, status.peak_rss_kb, "shutdown"};
        bool terminating_now;
        {
            std::lock_guard lock(queue_mutex);
            terminating_now = terminating;
            event.reason = stopping ? "shutdown" : before_ready ? "start_failed" : "crashed";
        }
        if (wk.chunk) {
            Chunk chunk = std::move(*wk.chunk);
            wk.chunk.reset();
            Job& job = *chunk.job;
            event.task = job.task;
            event.reason = before_ready ? "start_failed" : "crashed";
            auto state = slot->state.load(std::memory_order_acquire);
            std::uint32_t completed =
                state == detail::slot_queued ? 0 : slot->completed.load(std::memory_order_acquire);
            deliver(w, chunk, 0, completed);
            std::size_t settled = completed;
            std::optional<Chunk> retry;
            std::size_t rest = chunk.begin + completed;
            if (state != detail::slot_queued && completed < chunk.size()) {
                // The item it was on when it died: retried, or failed with the reason.
                const std::size_t index = chunk.begin + completed;
                event.item = index;
                rest = index + 1;
                if (terminating_now) {
                    fail(chunk, completed, std::make_exception_ptr(PoolClosed()));
                    event.reason = "shutdown";
                    ++settled;
                } else if (wk.cancelled) {
                    ++cancelled;
                    event.reason = "cancelled";
                    fail(chunk, completed, std::make_exception_ptr(TaskCancelled(job.task)));
                    ++settled;
                } else if (wk.timed_out) {
                    ++timeouts;
                    event.reason = "timeout";
                    fail(chunk, completed,
                         std::make_exception_ptr(TaskTimeout(
                             job.task, index,
                             std::chrono::duration<double>(options.task_timeout).count())));
                    ++settled;
                } else {
                    ++crashes;
                    int attempts = ++job.attempts[index];
                    if (attempts <= options.max_retries) {
                        ++retries;
                        retry = Chunk{chunk.job, index, index + 1};
                    } else {
                        fail(chunk, completed,
                             std::make_exception_ptr(WorkerCrashed(
                                 job.task, index, pid, status.signal, status.exit_code, attempts)));
                        ++settled;
                    }
                }
            }
            finish_items(settled);
            // The rest of the chunk never started: back to the queue, untouched.
            std::lock_guard lock(queue_mutex);
            if (terminating) {
                std::size_t n_failed = 0;
                auto fail_range = [&](std::size_t b, std::size_t e) {
                    for (std::size_t i = b; i < e; ++i)
                        job.sink->set_error(std::make_exception_ptr(PoolClosed()), i);
                    n_failed += e - b;
                };
                if (retry) fail_range(retry->begin, retry->end);
                fail_range(rest, chunk.end);
                in_flight -= n_failed;
                if (in_flight == 0) idle.notify_all();
            } else {
                if (rest < chunk.end) queue.push_front(Chunk{chunk.job, rest, chunk.end});
                if (retry) queue.push_front(*retry);
            }
        }
        if (!wk.chunk && !wk.recycling.empty() && !event.item) {
            event.reason = "recycled";
            ++(wk.recycling == "tasks" ? recycled_tasks : recycled_memory);
        }
        slot->state.store(detail::slot_free, std::memory_order_release);
        slot->completed.store(0);
        slot->item_started_ns.store(0);
        if (options.on_worker_exit && event.reason != "shutdown" && event.reason != "recycled") {
            options.on_worker_exit(event);
        }
    }

    // With no worker left (and none coming back), queued work can only fail.
    void abandon_if_no_workers(std::exception_ptr why) {
        for (const auto& wk : workers) {
            if (wk.process) return;
        }
        if (!why)
            why = std::make_exception_ptr(std::runtime_error("no pool worker could be started"));
        std::lock_guard lock(queue_mutex);
        no_workers = why;  // work submitted from now on fails at once
        for (auto& c : queue) {
            for (std::size_t i = c.begin; i < c.end; ++i)
                c.job->sink->set_error(why, i);
            in_flight -= c.size();
        }
        queue.clear();
        if (in_flight == 0) idle.notify_all();
    }

    // Kills the workers of tasks cancelled hard.
    void check_cancels() {
        for (unsigned w = 0; w < n; ++w) {
            Worker& wk = workers[w];
            if (wk.chunk && wk.process && !wk.cancelled && wk.chunk->job->sink->kill_requested() &&
                view.slot(w)->state.load() != detail::slot_done) {
                wk.cancelled = true;
                wk.process->signal(SIGKILL);
            }
        }
    }

    // Kills the workers of items past their timeout (SIGTERM, then SIGKILL); returns the next
    // instant something is due, or 0.
    std::uint64_t check_timeouts() {
        if (options.task_timeout.count() <= 0) return 0;
        const std::uint64_t timeout =
            static_cast<std::uint64_t>(std::chrono::nanoseconds(options.task_timeout).count());
        const std::uint64_t grace =
            static_cast<std::uint64_t>(std::chrono::nanoseconds(options.kill_grace).count());
        std::uint64_t now = detail::monotonic_ns();
        std::uint64_t next = 0;
        auto due = [&](std::uint64_t t) { next = next == 0 ? t : std::min(next, t); };
        for (unsigned w = 0; w < n; ++w) {
            Worker& wk = workers[w];
            SlotHeader* slot = view.slot(w);
            auto state = slot->state.load();
            if (!wk.chunk || !wk.process ||
                (state != detail::slot_running && state != detail::slot_queued))
                continue;
            if (wk.kill_sent) {
                if (!wk.sigkill_sent && now >= wk.kill_deadline_ns) {
                    wk.process->signal(SIGKILL);
                    wk.sigkill_sent = true;
                } else if (!wk.sigkill_sent) {
                    due(wk.kill_deadline_ns);
                }
                continue;
            }
            std::uint64_t started = slot->item_started_ns.load(std::memory_order_acquire);
            if (started == 0) continue;
            // A worker may stamp a start after `now` was read: never subtract past zero.
            if (started <= now && now - started >= timeout && state == detail::slot_running) {
                wk.timed_out = slot->completed.load();
                wk.kill_sent = true;
                wk.kill_deadline_ns = now + grace;
                wk.process->signal(SIGTERM);
                due(wk.kill_deadline_ns);
            } else {
                due(started + timeout);
            }
        }
        return next;
    }

    bool finished_stopping() {
        std::lock_guard lock(queue_mutex);
        if (!stopping || in_flight > 0) return false;
        for (unsigned w = 0; w < n; ++w) {
            if (workers[w].process) return false;
        }
        return true;
    }

    void begin_shutdown_if_idle() {
        {
            std::lock_guard lock(queue_mutex);
            if (!stopping || in_flight > 0) return;
        }
        for (unsigned w = 0; w < n; ++w) {
            SlotHeader* slot = view.slot(w);
            if (workers[w].process && slot->state.load() == detail::slot_free) {
                slot->state.store(detail::slot_shutdown, std::memory_order_seq_cst);
                detail::futex_wake(&slot->state, 1);
            }
        }
    }

    void supervise() {
        detail::ControlHeader* h = view.header();
        for (;;) {
            std::uint32_t seen = h->parent_bell.load(std::memory_order_seq_cst);
            lock_slots();
            bool progress = handle_deaths();
            progress |= harvest();
            progress |= dispatch();
            check_cancels();
            std::uint64_t next = check_timeouts();
            begin_shutdown_if_idle();
            bool finished = finished_stopping();
            unlock_slots();
            if (finished) return;
            if (progress) continue;
            // No spin when workers do not spin either: the processes outnumber the cores.
            const int spin = options.idle_spin.count() > 0 ? supervisor_spin_rounds : 0;
            for (int i = 0; i < spin && h->parent_bell.load(std::memory_order_acquire) == seen;
                 ++i) {
                __builtin_ia32_pause();
            }
            if (h->parent_bell.load(std::memory_order_acquire) != seen) continue;
            timespec ts{};
            timespec* timeout = nullptr;
            if (next != 0) {
                std::uint64_t now = detail::monotonic_ns();
                std::uint64_t wait = next > now ? next - now : 0;
                ts = {static_cast<time_t>(wait / 1'000'000'000u),
                      static_cast<long>(wait % 1'000'000'000u)};
                timeout = &ts;
            }
            sleep_on_bell(seen, timeout);
        }
    }
};

Pool::Pool(PoolOptions options) : impl_(std::make_unique<Impl>()) {
    if (const char* role = std::getenv("SHMPOOL_ROLE");  // NOLINT(concurrency-mt-unsafe): read-only
        role && std::string_view(role) == "worker") {
        throw std::logic_error(
            "a pool worker tried to create a Pool: call shmpool::init(argc, argv) at the top of "
            "main()");
    }
    detail::check_task_registry();
    Impl& m = *impl_;
    m.options = std::move(options);
    m.n = m.options.workers ? m.options.workers : std::max(1u, std::thread::hardware_concurrency());
    if (m.options.slot_bytes < 4096 || m.options.slot_bytes > (std::size_t{1} << 30)) {
        throw std::invalid_argument("PoolOptions::slot_bytes must be between 4 KiB and 1 GiB");
    }
    // Slots lie back to back: a whole number of cache lines keeps every slot header aligned.
    m.options.slot_bytes = (m.options.slot_bytes + 63) / 64 * 64;
    if (m.options.idle_spin.count() < 0)
        throw std::invalid_argument("PoolOptions::idle_spin is negative");
    if (m.options.max_start_failures == 0)
        throw std::invalid_argument("PoolOptions::max_start_failures must be at least 1");
    for (const auto& var : m.options.environment) {
        if (var.find('=') == std::string::npos || var.front() == '=')
            throw std::invalid_argument(
                fmt::format("PoolOptions::environment: '{}' is not NAME=value", var));
    }
    for (const auto& name : m.options.shared_blocks) {
        SharedMemory::validate_name(name);
        std::string_view bare =
            name.starts_with('/') ? std::string_view(name).substr(1) : std::string_view(name);
        if (!m.shared_block_list.empty()) m.shared_block_list += '/';
        m.shared_block_list += bare;
    }
    m.executable = m.options.worker_executable.empty()
                       ? std::filesystem::read_symlink("/proc/self/exe").string()
                       : m.options.worker_executable;
    // The control block is owned by this process: if it dies, its tracker removes the block.
    Tracker::ensure();
    m.block = SharedMemory::create(detail::control_size(m.n, m.options.slot_bytes));
    m.view.base = m.block.data();
    auto* h = m.view.header();
    h->workers = m.n;
    h->slot_bytes = static_cast<std::uint32_t>(m.options.slot_bytes);
    h->timeouts = m.options.task_timeout.count() > 0 ? 1 : 0;
    h->measure_busy = m.options.measure_busy ? 1 : 0;
    h->worker_spin_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(m.options.idle_spin).count());
    h->threads_per_worker = m.options.threads_per_worker
                                ? m.options.threads_per_worker
                                : std::max(1u, std::thread::hardware_concurrency() / m.n);
    if (m.options.initializer.name.size() >= sizeof h->initializer) {
        throw std::invalid_argument("PoolOptions::initializer: the task name is too long");
    }
    std::memcpy(h->initializer, m.options.initializer.name.data(),
                m.options.initializer.name.size());
    std::memcpy(h->magic, detail::control_magic, 8);
    m.workers.resize(m.n);
    m.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    m.stop_fd = ::eventfd(0, EFD_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = UINT64_MAX;
    ::epoll_ctl(m.epoll_fd, EPOLL_CTL_ADD, m.stop_fd, &ev);
    try {
        for (unsigned w = 0; w < m.n; ++w)
            m.spawn(w);
    } catch (...) {
        m.workers.clear();
        ::close(m.epoll_fd);
        ::close(m.stop_fd);
        m.block.unlink();
        throw;
    }
    m.watcher = std::thread([&m] { m.watch(); });
    // The supervisor replaces a worker that dies before it is ready, as it does later; the pool
    // is up when every worker has attached and published its pid in its slot, and fails when
    // the supervisor gives up on one (PoolOptions::max_start_failures) or an initializer throws.
    m.supervisor = std::thread([&m] { m.supervise(); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
        const std::uint32_t seen = h->parent_bell.load();
        std::exception_ptr failed;
        bool ready = true;
        {
            std::lock_guard lock(m.workers_mutex);
            failed = m.start_error;
            for (unsigned w = 0; w < m.n; ++w) {
                ready = ready && m.workers[w].process &&
                        m.view.slot(w)->worker_pid.load(std::memory_order_acquire) ==
                            m.workers[w].process->pid();
            }
            m.started = ready && !failed;
        }
        if (failed) {
            terminate();
            std::rethrow_exception(failed);
        }
        if (ready) break;
        if (std::chrono::steady_clock::now() > deadline) {
            terminate();
            throw std::runtime_error(
                fmt::format("pool workers ({}) did not start within 30 s", m.executable));
        }
        timespec ts{0, 50'000'000};  // bounded: the deadline above is checked between waits
        m.sleep_on_bell(seen, &ts);
    }
}

Pool::~Pool() {
    if (!impl_) return;
    try {
        close();
        join();
    } catch (...) {
        terminate();
    }
}

void Pool::enqueue(const std::string& task, detail::JobItems items,
                   std::shared_ptr<detail::ResultSink> sink, std::size_t chunksize) {
    Impl& m = *impl_;
    const std::size_t count = items.size();
    auto job = std::make_shared<Job>();
    job->task = task;
    job->sink = std::move(sink);
    job->items = std::move(items);
    std::exception_ptr no_workers;
    {
        std::lock_guard lock(m.queue_mutex);
        if (m.closed) throw PoolClosed();
        no_workers = m.no_workers;
        if (!no_workers) {
            for (std::size_t i = 0; i < count; i += chunksize)
                m.queue.push_back(Chunk{job, i, std::min(count, i + chunksize)});
            m.in_flight += count;
        }
    }
    if (no_workers) {
        for (std::size_t i = 0; i < count; ++i)
            job->sink->set_error(no_workers, i);
        return;
    }
    // Straight into a free slot when nobody else is at the slots: no hop through the supervisor.
    bool all_dispatched = false;
    if (m.try_lock_slots()) {
        m.dispatch();
        m.unlock_slots();
        std::lock_guard lock(m.queue_mutex);
        all_dispatched = m.queue.empty();
    }
    // The supervisor still learns of it when it must: queued work left, or a deadline to watch.
    if (!all_dispatched || m.options.task_timeout.count() > 0) m.ring();
}

std::function<void(const std::function<bool()>&)> Pool::assist_function() {
    return [self = impl_->self](const std::function<bool()>& ready) {
        self->users.fetch_add(1, std::memory_order_seq_cst);
        if (Impl* m = self->impl.load(std::memory_order_seq_cst)) m->assist(ready);
        self->users.fetch_sub(1, std::memory_order_seq_cst);
    };
}

std::function<void()> Pool::wake_function() {
    return [self = impl_->self] {
        self->users.fetch_add(1, std::memory_order_seq_cst);
        if (Impl* m = self->impl.load(std::memory_order_seq_cst)) m->ring();
        self->users.fetch_sub(1, std::memory_order_seq_cst);
    };
}

void Pool::close() {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->closed = true;
}

void Pool::join() {
    Impl& m = *impl_;
    if (m.joined) return;
    {
        std::unique_lock lock(m.queue_mutex);
        m.closed = true;
        m.idle.wait(lock, [&] { return m.in_flight == 0; });
        m.stopping = true;
    }
    // Every future is settled: the threads still inside the pool (a get() about to return, a
    // wake) leave at once; no new one comes in.
    m.self->impl.store(nullptr, std::memory_order_seq_cst);
    while (m.self->users.load(std::memory_order_seq_cst) > 0)
        std::this_thread::yield();
    m.ring();
    if (m.supervisor.joinable()) m.supervisor.join();
    m.teardown();
}

void Pool::terminate() {
    Impl& m = *impl_;
    if (m.joined) return;
    std::deque<Chunk> dropped;
    {
        std::lock_guard lock(m.queue_mutex);
        m.closed = m.stopping = m.terminating = true;
        dropped.swap(m.queue);
        for (auto& c : dropped) {
            for (std::size_t i = c.begin; i < c.end; ++i)
                c.job->sink->set_error(std::make_exception_ptr(PoolClosed()), i);
            m.in_flight -= c.size();
        }
        if (m.in_flight == 0) m.idle.notify_all();
    }
    {
        std::lock_guard lock(m.workers_mutex);
        for (auto& w : m.workers) {
            if (w.process) w.process->signal(SIGKILL);
        }
    }
    if (m.supervisor.joinable()) {
        m.ring();
        join();
    } else {
        m.teardown();  // no supervisor yet: the constructor failed
    }
}

unsigned Pool::size() const noexcept {
    return impl_->n;
}

std::vector<pid_t> Pool::worker_pids() const {
    std::lock_guard lock(impl_->workers_mutex);
    std::vector<pid_t> pids;
    for (const auto& w : impl_->workers)
        pids.push_back(w.process ? w.process->pid() : 0);
    return pids;
}

PoolStats Pool::stats() const {
    const Impl& m = *impl_;
    PoolStats s;
    s.tasks_done = m.done.load();
    s.tasks_failed = m.failed.load();
    s.retries = m.retries.load();
    s.crashes = m.crashes.load();
    s.respawns = m.respawns.load();
    s.start_failures = m.start_failures.load();
    s.timeouts = m.timeouts.load();
    s.cancelled = m.cancelled.load();
    s.recycled_tasks = m.recycled_tasks.load();
    s.recycled_memory = m.recycled_memory.load();
    s.busy_seconds = static_cast<double>(m.busy_ns.load()) / 1e9;
    return s;
}

const std::string& Pool::control_block() const noexcept {
    return impl_->block.name();
}

}  // namespace shmpool
