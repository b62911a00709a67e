// WorkerSet: the process half of the workers. Launching, reaping, the replacement policy (deaths
// before ready counted against max_start_failures, recycling after max_tasks_per_worker or
// max_memory_per_worker) and the pool's start-up state. Owns one mutex (after the slot lock).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "parent/fork_server.hpp"
#include "parent/pool_counters.hpp"
#include "parent/process_watcher.hpp"
#include "parent/worker_process.hpp"
#include "protocol/control_block.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool_options.hpp"

namespace shmpool::detail {

/// Why a worker is to leave after its current chunk.
enum class Retirement { none, tasks, memory };

/// A worker process that is gone, as its slot and the kernel tell it.
struct Departure {
    unsigned worker = 0;
    pid_t pid = 0;
    ExitStatus status;
    bool was_ready = false;          // it had reported ready for work
    bool reached_init = false;       // it got as far as shmpool::init attaching the pool
    std::exception_ptr start_error;  // died before ready with its own reason (initializer, ...)
    bool incompatible = false;       // it refused the pool's layout: never worth a retry
    Retirement retiring = Retirement::none;
};

/// What became of a departed worker's slot.
struct Replacement {
    bool launched = false;
    bool while_starting = false;  // the pool's constructor still waits for its workers
    std::exception_ptr gave_up;   // no replacement: why (the pool's start fails with it, or its
                                  // work once no worker is left)
};

class WorkerSet {
  public:
    struct Launch {
        std::string executable;
        std::vector<std::string> environment;  // the pool's variables, then the user's
        std::vector<std::string> hidden{};     // prefixes of variables workers must not inherit
    };
    WorkerSet(const ControlView& view, const PoolOptions& options, Launch launch,
              ProcessWatcher& watcher, PoolCounters& counters);

    /// Starts a worker in slot `w` (its next generation): exec'd, or forked by the fork server
    /// (started first if none runs). Throws std::system_error, and ForkServerDied.
    void launch(unsigned w);
    /// Reaps the worker of slot `w` if it is still `generation`'s (a stale report: nothing).
    std::optional<Departure> reap(unsigned w, unsigned generation);
    /// Replaces a departed worker if the pool still `wants` workers, or gives up on its slot
    /// (too many deaths before ready in a row, an incompatible program, an initializer that
    /// fails while the pool starts).
    Replacement replace(const Departure& departure, bool wanted);
    /// Counts `n` more items run by worker `w`; whether it must retire now.
    Retirement count_items(unsigned w, std::size_t n);
    void signal(unsigned w, int sig) noexcept;
    void kill_all() noexcept;
    /// Kills and reaps every worker left, then the fork server if any (the end of the pool).
    void clear() noexcept;

    bool any_alive() const;
    std::vector<pid_t> pids() const;
    /// While the pool starts: whether every worker reported ready (the pool then counts as
    /// started), or why it cannot start.
    bool ready_to_start();
    std::exception_ptr start_error() const;
    const std::string& executable() const noexcept { return launch_.executable; }

  private:
    struct Record {
        std::optional<WorkerProcess> process;
        unsigned generation = 0;
        std::size_t items_run = 0;
        Retirement retiring = Retirement::none;
        std::vector<WorkerStartFailed::Attempt> start_attempts;  // deaths before ready, in a row
    };
    std::exception_ptr give_up_reason(const Departure& d, Record& record, bool starting);

    ControlView view_;
    const PoolOptions& options_;
    Launch launch_;
    ProcessWatcher& watcher_;
    PoolCounters& counters_;
    // Declared before the records: the workers it forked point at it, and go first.
    std::unique_ptr<ForkServer> fork_server_;
    mutable std::mutex mutex_;
    std::vector<Record> records_;
    bool started_ = false;
    std::exception_ptr start_error_;
};

}  // namespace shmpool::detail
