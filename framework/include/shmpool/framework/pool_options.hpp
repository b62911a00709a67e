// What a Pool is configured with (PoolOptions) and what it reports: statistics (PoolStats), the
// progress of a job (Progress) and the exit of a worker (WorkerEvent, ExitReason).
//
// Callbacks (on_worker_exit, on_progress) run on a thread of the pool's own, with no lock of the
// pool held, one at a time and in the order of their events: they may block, submit work and wait
// for it, but not destroy their pool.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmpool/framework/exit_status.hpp"
#include "shmpool/framework/task.hpp"

namespace shmpool {

/// Why a worker left the pool, as reported to PoolOptions::on_worker_exit.
enum class ExitReason {
    crashed,          ///< died (a signal, an exit) while it was part of the pool
    start_failed,     ///< died before it reported ready (PoolOptions::max_start_failures)
    timeout,          ///< killed because its item ran past task_timeout
    cancelled,        ///< killed by Future::cancel(true)
    recycled_tasks,   ///< retired after max_tasks_per_worker items
    recycled_memory,  ///< retired after growing past max_memory_per_worker
};

/// "crashed", "start_failed", "timeout", "cancelled", "recycled_tasks", "recycled_memory".
std::string_view to_string(ExitReason reason) noexcept;

/// A worker that exited or died, as reported to PoolOptions::on_worker_exit (not the workers
/// that the pool stops itself at join() or terminate()).
struct WorkerEvent {
    unsigned worker = 0;  ///< its index in the pool
    pid_t pid = 0;
    ExitStatus status;  ///< the signal or exit status, and the peak RSS
    ExitReason reason = ExitReason::crashed;
    std::string task;                 ///< the task it was running, if any
    std::optional<std::size_t> item;  ///< the item of that task's job it was on
    unsigned node = 0;                ///< the node it ran on (0: this machine; docs/cluster.md)
};

/// Progress of a map-style job (map, starmap, for_each_index; imap chunks count separately).
struct Progress {
    std::string task;
    std::size_t done = 0;  ///< items settled (results and failures)
    std::size_t total = 0;
    double elapsed_seconds = 0;
    double rate = 0;         ///< items per second so far
    double eta_seconds = 0;  ///< at that rate
};

struct PoolStats {
    std::size_t tasks_done = 0;    ///< items that produced a result
    std::size_t tasks_failed = 0;  ///< items that failed (TaskError, WorkerCrashed, TaskTimeout)
    std::size_t retries = 0;
    std::size_t crashes = 0;  ///< workers that died running a task
    std::size_t respawns = 0;
    std::size_t start_failures = 0;  ///< workers that died before they reported ready
    std::size_t timeouts = 0;
    std::size_t cancelled = 0;        ///< running tasks killed by a hard cancel
    std::size_t recycled_tasks = 0;   ///< workers replaced after max_tasks_per_worker
    std::size_t recycled_memory = 0;  ///< workers replaced after max_memory_per_worker
    std::size_t reclaimed = 0;  ///< chunks queued behind a busy worker, taken back for an idle one
    /// for_each_index ranges run by another worker than the one that ran them last time (taken
    /// at the tail of a job by a worker with none of its own left, or after a worker died).
    std::size_t stolen_ranges = 0;
    double busy_seconds = 0;    ///< with measure_busy: time workers spent on completed chunks
};

/// The name of a registered task (any Task<Fn> converts to it), e.g. for PoolOptions::initializer.
struct TaskName {
    TaskName() = default;
    template <auto Fn>
    TaskName(const Task<Fn>& task) : name(task.name()) {}  // NOLINT(google-explicit-constructor)
    std::string name;
};

/// How a pool starts its worker processes (docs/pool.md, "Choosing the start method").
enum class StartMethod {
    /// Each worker is the program executed again (Boost.Process, vfork + exec): it starts from
    /// scratch, as a fresh run of the program up to shmpool::init.
    exec,
    /// The pool executes the program once more as a fork server, which forks each worker (and
    /// each replacement) from its state just after static initialisation: no exec, dynamic
    /// loading or static initialisation per worker. The pool's own process never forks. Workers
    /// start as copies of the server, not of the parent: what main() did before creating the
    /// pool is not in them, exactly as with exec. The program's static initialisation must not
    /// start threads (fork copies only the forking thread).
    fork_server,
};

/// "exec", "fork_server".
std::string_view to_string(StartMethod method) noexcept;

/// Whether a pool spreads over the nodes of an MPI job (docs/cluster.md).
enum class ClusterMode {
    automatic,  ///< across the nodes when the program runs as rank 0 of an MPI job of more than
                ///< one rank and links shmpool::cluster; on this machine otherwise
    off,        ///< on this machine only
    required,   ///< across the nodes, or the constructor throws std::logic_error
};

/// A block of PoolOptions::shared_blocks that tasks write in cluster mode: after each
/// for_each_index range a node ran, the bytes of that range (element_bytes per index) come back
/// to this machine's block. Other writes on other nodes stay there (docs/cluster.md).
struct WritableBlock {
    std::string name;
    std::size_t element_bytes = 1;
};

struct ClusterOptions {
    ClusterMode mode = ClusterMode::automatic;
    std::vector<WritableBlock> writable_blocks{};
    /// Run chunks on this machine too (false: rank 0 only hands out work).
    bool use_this_node = true;
};

struct PoolOptions {
    /// Number of workers; 0 means one per core.
    unsigned workers = 0;
    /// How often an item whose worker died is tried again before it fails with WorkerCrashed.
    int max_retries = 1;
    /// Kill the worker of an item running longer than this (then TaskTimeout); 0: no limit.
    std::chrono::milliseconds task_timeout{0};
    /// How many times in a row a worker may die before it reports ready (killed during
    /// start-up, or its program exits) before the pool gives up on it: pool creation then fails
    /// with WorkerStartFailed, and a running pool stops replacing that worker. Each such death is
    /// replaced like a crash and counted in PoolStats::start_failures.
    unsigned max_start_failures = 5;
    /// After SIGTERM, how long a worker has before SIGKILL.
    std::chrono::milliseconds kill_grace{200};
    /// Bytes of arguments, and of results, one chunk carries in place (each way); 4 KiB to 1 GiB,
    /// rounded up to a multiple of 64. A worker's slot holds two chunks (one running, the next
    /// queued), so it takes 4 × slot_bytes of shared memory. A tuning knob, not a limit: an
    /// item's arguments or result that does not fit travels in a block of its own (docs/pool.md).
    std::size_t slot_bytes = std::size_t{256} << 10;
    /// The largest result one item may return, as encoded (a std::string of n bytes is n + 8); a
    /// bigger one fails that item with a TaskError of type std::length_error (the worker never
    /// creates its block).
    std::size_t max_result_bytes = std::size_t{1} << 30;
    /// The worker program (it must call shmpool::init); default: this program.
    std::string worker_executable{};
    /// How workers start: each one exec'd (the default), or forked by a fork server that the
    /// pool execs once (faster start-up and respawn; see StartMethod).
    StartMethod start_method = StartMethod::exec;
    /// Called for every worker that dies or is retired (see WorkerEvent).
    std::function<void(const WorkerEvent&)> on_worker_exit{};
    /// Blocks every worker attaches once, before it takes work, and keeps; tasks reach them with
    /// shmpool::shared_block(name), or a SharedHeap with SharedHeap::cached(name) (mapped
    /// read-only if it was frozen). A block that cannot be attached fails pool creation.
    std::vector<std::string> shared_blocks{};
    /// Each worker maps every page of the shared_blocks when it attaches them, in one system call
    /// per block (SharedMemory::prefault), instead of a page fault per page on first touch (on a
    /// virtual machine, microseconds each). Worth it when the tasks sweep the blocks; a waste of
    /// start-up time (and, for sparse blocks, of memory) when they touch a little of them.
    bool prefault_shared_blocks = false;
    /// Extra environment variables ("NAME=value") for every worker, on top of this process's.
    std::vector<std::string> environment{};
    /// A task taking no arguments, run once in every worker before it takes work. If it throws,
    /// pool creation fails with its error.
    TaskName initializer{};
    /// Called with the progress of every job of more than one item, at most every 100 ms and
    /// once at its end, before the job's caller gets its results (unless that caller is itself a
    /// callback).
    std::function<void(const Progress&)> on_progress{};
    /// Draw a progress bar for such jobs on stderr, when stderr is a terminal.
    bool progress_bar = false;
    /// oneTBB threads a task may use inside one worker (tbb::global_control in each worker), so
    /// that workers × threads do not oversubscribe the cores; 0: cores / workers, at least 1.
    unsigned threads_per_worker = 0;
    /// How long an idle worker spins, watching its slot, before it sleeps: new work within that
    /// time costs no wake-up. 0 suits pools with more busy processes than cores (a spinning
    /// worker takes the core from the one it waits for).
    std::chrono::microseconds idle_spin{20};
    /// Sum the time the workers spend on chunks in stats().busy_seconds. It costs two clock reads
    /// per chunk, which shows in a map of tiny tasks with chunksize 1 (so it is off by default).
    bool measure_busy = false;
    /// Replace a worker after it ran this many items (0: never).
    std::size_t max_tasks_per_worker = 0;
    /// Replace a worker whose resident set grew past this many bytes, checked between chunks (0:
    /// never).
    std::size_t max_memory_per_worker = 0;
    /// Cluster mode: `workers` and the other options then apply on every node.
    ClusterOptions cluster{};
};

}  // namespace shmpool

template <>
struct fmt::formatter<shmpool::StartMethod> : fmt::formatter<std::string_view> {
    auto format(shmpool::StartMethod m, fmt::format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(shmpool::to_string(m), ctx);
    }
};

template <>
struct fmt::formatter<shmpool::ExitReason> : fmt::formatter<std::string_view> {
    auto format(shmpool::ExitReason r, fmt::format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(shmpool::to_string(r), ctx);
    }
};
