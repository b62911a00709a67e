// WorkerSet: launching through WorkerProcess, reading a dead worker's slot, the replacement rules.
#include "parent/worker_set.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "parent/result_router.hpp"
#include "protocol/records.hpp"
#include "protocol/slot.hpp"

namespace shmpool::detail {
namespace {

// Resident set size of a live process, in bytes (0 if unknown).
std::size_t resident_bytes(pid_t pid) {
    std::ifstream statm(fmt::format("/proc/{}/statm", pid));
    std::size_t size = 0, resident = 0;
    if (!(statm >> size >> resident)) return 0;
    return resident * sys::page_size();
}

// The error a worker left in its slot when it could not get ready, as a TaskError.
std::exception_ptr start_failure_error(const ParentSlot& slot, const std::string& initializer) {
    RecordReader reader(slot.response_area(), slot.capacity());
    RecordReader::Record record;
    const std::string task = slot.start_failure() == StartFailure::shared_blocks
                                 ? "PoolOptions::shared_blocks"
                                 : initializer;
    return ResultRouter::task_error(task, reader.next(record) ? record.bytes : std::string_view{});
}

}  // namespace

WorkerSet::WorkerSet(const ControlView& view, const PoolOptions& options, Launch launch,
                     ProcessWatcher& watcher, PoolCounters& counters)
    : view_(view),
      options_(options),
      launch_(std::move(launch)),
      watcher_(watcher),
      counters_(counters),
      records_(view.workers()) {
    if (options.start_method == StartMethod::fork_server) {
        // The server's environment is what every worker it forks inherits; each request adds
        // the worker's own variables (`own` in launch()).
        std::vector<std::string> env = launch_.environment;
        for (std::string& var : env) {
            if (var.starts_with("SHMPOOL_ROLE=")) var = "SHMPOOL_ROLE=fork_server";
        }
        fork_server_ =
            std::make_unique<ForkServer>(launch_.executable, std::move(env), launch_.hidden);
    }
}

void WorkerSet::launch(unsigned w) {
    // What differs from one worker to the next; an exec'd worker gets the pool's variables too.
    const std::vector<std::string> own{"SHMPOOL_WORKER=" + std::to_string(w)};
    ParentSlot(view_, w).reset_for_launch();
    // Its stderr comes through a pipe, so that each line can be prefixed with its id.
    int fds[2] = {-1, -1};
    if (sys::pipe(fds) != 0)
        throw std::system_error(errno, std::generic_category(), "pipe2 for a worker's stderr");
    sys::FileDescriptor read_end(fds[0]);
    sys::FileDescriptor write_end(fds[1]);
    auto start = [&] {
        if (fork_server_) return WorkerProcess(*fork_server_, own, write_end.get());
        std::vector<std::string> env = launch_.environment;
        env.insert(env.end(), own.begin(), own.end());
        return WorkerProcess(launch_.executable, env, write_end.get(), launch_.hidden);
    };
    WorkerProcess process = start();
    write_end.reset();  // the worker has its copy
    std::lock_guard lock(mutex_);
    Record& r = records_[w];
    watcher_.watch(w, r.generation + 1, process.pidfd());
    watcher_.relay(std::move(read_end), fmt::format("[worker {} pid {}] ", w, process.pid()));
    r.generation += 1;
    r.process.emplace(std::move(process));
    r.items_run = 0;
    r.retiring = Retirement::none;
}

std::optional<Departure> WorkerSet::reap(unsigned w, unsigned generation) {
    std::lock_guard lock(mutex_);
    Record& r = records_[w];
    if (generation != r.generation || !r.process) return std::nullopt;
    Departure d;
    d.worker = w;
    d.pid = r.process->pid();
    d.status = r.process->reap();
    r.process.reset();
    d.retiring = r.retiring;
    const ParentSlot slot(view_, w);
    d.was_ready = slot.ready_pid() == d.pid;
    d.reached_init = slot.attached_pid() == d.pid;
    if (!d.was_ready && slot.start_failure() != StartFailure::none)
        d.start_error = start_failure_error(slot, options_.initializer.name);
    if (!d.reached_init) {
        if (const std::uint32_t theirs = view_.header().prefix.refused_by.load()) {
            d.incompatible = true;
            d.start_error = std::make_exception_ptr(
                IncompatibleWorker(launch_.executable, theirs, control_layout_version));
        }
    }
    return d;
}

std::exception_ptr WorkerSet::give_up_reason(const Departure& d, Record& record, bool starting) {
    if (d.incompatible) return d.start_error;
    if (d.start_error && starting) return d.start_error;  // the initializer's own error, once
    if (record.start_attempts.size() >= options_.max_start_failures) {
        return d.start_error ? d.start_error
                             : std::make_exception_ptr(WorkerStartFailed(
                                   d.worker, launch_.executable, record.start_attempts));
    }
    return nullptr;
}

Replacement WorkerSet::replace(const Departure& d, bool wanted) {
    Replacement out;
    bool starting = false;
    {
        std::lock_guard lock(mutex_);
        Record& r = records_[d.worker];
        starting = !started_;
        out.while_starting = starting;
        if (!wanted) return out;  // the pool is stopping: whatever ended this worker, it stays
        if (d.was_ready) {
            r.start_attempts.clear();
        } else {
            r.start_attempts.push_back({d.pid, d.status, d.reached_init});
            ++counters_.start_failures;
            out.gave_up = give_up_reason(d, r, starting);
        }
        if (out.gave_up && starting && !start_error_) start_error_ = out.gave_up;
    }
    if (out.gave_up) return out;
    try {
        launch(d.worker);
        ++counters_.respawns;
        out.launched = true;
    } catch (const std::exception&) {
        out.gave_up = std::current_exception();
        std::lock_guard lock(mutex_);
        if (starting && !start_error_) start_error_ = out.gave_up;
    }
    return out;
}

Retirement WorkerSet::count_items(unsigned w, std::size_t n) {
    // Called for every chunk: no lock when there is no recycling to decide.
    if (options_.max_tasks_per_worker == 0 && options_.max_memory_per_worker == 0)
        return Retirement::none;
    std::lock_guard lock(mutex_);
    Record& r = records_[w];
    r.items_run += n;
    // Decided between chunks: the worker finishes what it has, then retires.
    if (options_.max_tasks_per_worker && r.items_run >= options_.max_tasks_per_worker) {
        r.retiring = Retirement::tasks;
    } else if (options_.max_memory_per_worker && r.process &&
               resident_bytes(r.process->pid()) > options_.max_memory_per_worker) {
        r.retiring = Retirement::memory;
    }
    return r.retiring;
}

void WorkerSet::signal(unsigned w, int sig) noexcept {
    std::lock_guard lock(mutex_);
    if (records_[w].process) records_[w].process->signal(sig);
}

void WorkerSet::kill_all() noexcept {
    std::lock_guard lock(mutex_);
    for (Record& r : records_) {
        if (r.process) r.process->signal(SIGKILL);
    }
}

void WorkerSet::clear() noexcept {
    std::lock_guard lock(mutex_);
    for (Record& r : records_)
        r.process.reset();  // SIGKILL and reap, if still there
    if (fork_server_) fork_server_->stop();
}

bool WorkerSet::any_alive() const {
    std::lock_guard lock(mutex_);
    for (const Record& r : records_) {
        if (r.process) return true;
    }
    return false;
}

std::vector<pid_t> WorkerSet::pids() const {
    std::lock_guard lock(mutex_);
    std::vector<pid_t> out;
    out.reserve(records_.size());
    for (const Record& r : records_)
        out.push_back(r.process ? r.process->pid() : 0);
    return out;
}

bool WorkerSet::ready_to_start() {
    std::lock_guard lock(mutex_);
    if (start_error_) return false;
    for (unsigned w = 0; w < records_.size(); ++w) {
        const Record& r = records_[w];
        if (!r.process || ParentSlot(view_, w).ready_pid() != r.process->pid()) return false;
    }
    started_ = true;
    return true;
}

std::exception_ptr WorkerSet::start_error() const {
    std::lock_guard lock(mutex_);
    return start_error_;
}

}  // namespace shmpool::detail
