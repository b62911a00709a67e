// WorkerProcess: one worker process, launched with Boost.Process v2 (exec) or forked by the
// pool's fork server, and watched through a pidfd either way.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "posix/sys.hpp"
#include "shmpool/framework/exit_status.hpp"

namespace shmpool::detail {

class ForkServer;

/// How a wait status (and the peak RSS, in KiB) reads as an ExitStatus.
ExitStatus wait_status(int status, long peak_rss_kb) noexcept;

/// Owns a worker process; move-only. The destructor kills (SIGKILL) and reaps it if still there.
class WorkerProcess {
  public:
    /// Starts `executable` with `env` added to this environment, less the variables that start
    /// with one of `hidden`; the child gets SIGKILL when the calling thread dies
    /// (PR_SET_PDEATHSIG) and runs in its own process group. Its stderr goes to `stderr_fd`;
    /// `inherited_fd`, unless -1, stays open in it under the same number (the rest are closed).
    WorkerProcess(const std::string& executable, const std::vector<std::string>& env,
                  int stderr_fd = 2, const std::vector<std::string>& hidden = {},
                  int inherited_fd = -1);
    /// Has `server` fork a worker with `env` set in it and its stderr on `stderr_fd`; the server
    /// must outlive this object. The worker dies with the server, and runs in its own process
    /// group. Throws what ForkServer::spawn throws.
    WorkerProcess(ForkServer& server, const std::vector<std::string>& env, int stderr_fd);
    WorkerProcess(WorkerProcess&& other) noexcept;
    WorkerProcess& operator=(WorkerProcess&& other) noexcept;
    WorkerProcess(const WorkerProcess&) = delete;
    WorkerProcess& operator=(const WorkerProcess&) = delete;
    ~WorkerProcess();

    pid_t pid() const noexcept { return pid_; }
    /// Readable (POLLIN) once the process has exited.
    int pidfd() const noexcept { return pidfd_.get(); }
    void signal(int sig) noexcept;
    /// Reaps the process (it must have exited: pidfd readable); returns how it ended. A forked
    /// worker's status comes from its server (ForkServer::reap): unknown, and reported as
    /// SIGKILL, if the server died first.
    ExitStatus reap() noexcept;

  private:
    void reset() noexcept;
    pid_t pid_ = -1;
    sys::FileDescriptor pidfd_;
    bool reaped_ = false;
    ForkServer* server_ = nullptr;  // who forked it, if it was forked; its parent, who reaps it
    unsigned server_generation_ = 0;
};

}  // namespace shmpool::detail
