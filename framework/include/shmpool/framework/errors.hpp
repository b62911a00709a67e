// The ways a task can fail, as exceptions thrown by Future::get() and Pool::map().
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "shmpool/framework/exit_status.hpp"

namespace shmpool {

namespace detail {
/// " on node N" for a node of a cluster, nothing for this machine (node 0).
inline std::string on_node(unsigned node) {
    return node == 0 ? std::string() : " on node " + std::to_string(node);
}
}  // namespace detail

/// The task threw: its exception's type name and what() came back from the worker.
class TaskError : public std::runtime_error {
  public:
    TaskError(std::string task, std::string type, std::string message, unsigned node = 0)
        : std::runtime_error("task '" + task + "' threw " + type + detail::on_node(node) + ": " +
                             message),
          task_(std::move(task)),
          type_(std::move(type)),
          message_(std::move(message)),
          node_(node) {}
    const std::string& task() const noexcept { return task_; }
    const std::string& type() const noexcept { return type_; }
    const std::string& message() const noexcept { return message_; }
    unsigned node() const noexcept { return node_; }  ///< where it ran (0: this machine)

  private:
    std::string task_, type_, message_;
    unsigned node_;
};

/// The worker running the task died (signal or exit) on every attempt allowed by max_retries.
class WorkerCrashed : public std::runtime_error {
  public:
    WorkerCrashed(std::string task, std::size_t item, pid_t pid, int signal, int exit_code,
                  int attempts, unsigned node = 0)
        : std::runtime_error(describe(task, item, pid, signal, exit_code, attempts, node)),
          task_(std::move(task)),
          item_(item),
          pid_(pid),
          signal_(signal),
          exit_code_(exit_code),
          attempts_(attempts),
          node_(node) {}
    const std::string& task() const noexcept { return task_; }
    std::size_t item() const noexcept { return item_; }  ///< index of the item in its job
    pid_t pid() const noexcept { return pid_; }          ///< the last worker that died on it
    int signal() const noexcept { return signal_; }      ///< terminating signal, or 0
    /// Exit status if not signalled, else -1.
    int exit_code() const noexcept { return exit_code_; }
    int attempts() const noexcept { return attempts_; }
    unsigned node() const noexcept { return node_; }  ///< where it ran (0: this machine)

  private:
    static std::string describe(const std::string& task, std::size_t item, pid_t pid, int signal,
                                int exit_code, int attempts, unsigned node) {
        std::string how = signal ? "was killed by signal " + std::to_string(signal)
                                 : "exited with status " + std::to_string(exit_code);
        return "task '" + task + "' item " + std::to_string(item) + ": worker " +
               std::to_string(pid) + detail::on_node(node) + " " + how + " (" +
               std::to_string(attempts) + " attempt" + (attempts == 1 ? "" : "s") + ")";
    }
    std::string task_;
    std::size_t item_;
    pid_t pid_;
    int signal_;
    int exit_code_;
    int attempts_;
    unsigned node_;
};

/// The task ran past its timeout; its worker was killed and replaced.
class TaskTimeout : public std::runtime_error {
  public:
    TaskTimeout(std::string task, std::size_t item, double seconds, unsigned node = 0)
        : std::runtime_error("task '" + task + "' item " + std::to_string(item) +
                             detail::on_node(node) + " ran past its timeout of " +
                             std::to_string(seconds) + " s"),
          task_(std::move(task)),
          item_(item),
          seconds_(seconds),
          node_(node) {}
    const std::string& task() const noexcept { return task_; }
    std::size_t item() const noexcept { return item_; }   ///< index of the item in its job
    double seconds() const noexcept { return seconds_; }  ///< the timeout it ran past
    unsigned node() const noexcept { return node_; }      ///< where it ran (0: this machine)

  private:
    std::string task_;
    std::size_t item_;
    double seconds_;
    unsigned node_;
};

/// The task was cancelled before it produced a result.
class TaskCancelled : public std::runtime_error {
  public:
    explicit TaskCancelled(const std::string& task)
        : std::runtime_error("task '" + task + "' was cancelled") {}
};

/// A worker died before it reported ready PoolOptions::max_start_failures times in a row: pool
/// creation fails with it (and a running pool stops replacing that worker). attempts() says how
/// each attempt ended.
class WorkerStartFailed : public std::runtime_error {
  public:
    struct Attempt {
        pid_t pid = 0;
        ExitStatus status;
        bool reached_init = false;  ///< it got as far as shmpool::init attaching the pool
    };
    WorkerStartFailed(unsigned worker, std::string executable, std::vector<Attempt> attempts)
        : std::runtime_error(describe(worker, executable, attempts)),
          worker_(worker),
          executable_(std::move(executable)),
          attempts_(std::move(attempts)) {}
    unsigned worker() const noexcept { return worker_; }  ///< its index in the pool
    const std::string& executable() const noexcept { return executable_; }
    const std::vector<Attempt>& attempts() const noexcept { return attempts_; }

  private:
    static std::string describe(unsigned worker, const std::string& executable,
                                const std::vector<Attempt>& attempts) {
        std::string out =
            fmt::format("pool worker {} ({}) failed to start {} time{} in a row:", worker,
                        executable, attempts.size(), attempts.size() == 1 ? "" : "s");
        bool exited_before_init = false;
        for (const Attempt& a : attempts) {
            out += fmt::format(" pid {} {}{};", a.pid, a.status,
                               a.reached_init ? "" : " before it reached shmpool::init");
            exited_before_init |= a.status.exited() && !a.reached_init;
        }
        out.pop_back();
        // Only a clean exit before init says "this program never runs the worker": a signal may
        // come from outside at any moment (an operator, the OOM killer).
        if (exited_before_init)
            out +=
                " (a worker that exits before it reaches shmpool::init: does the program's "
                "main() call shmpool::init(argc, argv) first?)";
        return out;
    }
    unsigned worker_;
    std::string executable_;
    std::vector<Attempt> attempts_;
};

/// The worker program speaks another version of the pool's protocol (PoolOptions::
/// worker_executable built against another shmpool): it refused the pool's control block.
class IncompatibleWorker : public std::runtime_error {
  public:
    IncompatibleWorker(const std::string& executable, unsigned worker_layout, unsigned pool_layout)
        : std::runtime_error(fmt::format(
              "pool worker '{}' speaks pool protocol version {}, this program version {}: build "
              "the worker program against the same shmpool",
              executable, worker_layout, pool_layout)) {}
};

/// The fork server of a pool (PoolOptions::start_method = StartMethod::fork_server) could not
/// start, or died and so did the one started in its place: pool creation fails with it, and a
/// running pool cannot replace workers (its work fails with it once no worker is left). pid()
/// and status() name the server that failed and how it ended.
class ForkServerDied : public std::runtime_error {
  public:
    ForkServerDied(pid_t pid, const std::string& executable, ExitStatus status,
                   const std::string& what)
        : std::runtime_error(describe(pid, executable, status, what)), pid_(pid), status_(status) {}
    pid_t pid() const noexcept { return pid_; }  ///< the server's pid
    /// How it ended; a default ExitStatus (exit_code -1) if it was still running and killed.
    const ExitStatus& status() const noexcept { return status_; }

  private:
    static std::string describe(pid_t pid, const std::string& executable, ExitStatus status,
                                const std::string& what) {
        std::string out =
            fmt::format("the pool's fork server (pid {}, {}) {}", pid, executable, what);
        if (status.signalled() || status.exited()) out += fmt::format(": {}", status);
        // As for a worker: only a clean exit says that the program never runs the server.
        if (status.exited() && what.find("before it was ready") != std::string::npos)
            out += " (does the program's main() call shmpool::init(argc, argv) first?)";
        return out;
    }
    pid_t pid_;
    ExitStatus status_;
};

/// The pool was closed or terminated before the task could run.
class PoolClosed : public std::runtime_error {
  public:
    PoolClosed() : std::runtime_error("the pool is closed") {}
};

}  // namespace shmpool
