// WorkerProcess: one worker child, launched with Boost.Process v2, watched through a pidfd.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "posix/sys.hpp"
#include "shmpool/framework/exit_status.hpp"

namespace shmpool::detail {

/// Owns a worker process; move-only. The destructor kills (SIGKILL) and reaps it if still there.
class WorkerProcess {
  public:
    /// Starts `executable` with `env` added to this environment, less the variables that start
    /// with one of `hidden`; the child gets SIGKILL when the calling thread dies
    /// (PR_SET_PDEATHSIG) and runs in its own process group. Its stderr goes to `stderr_fd`.
    WorkerProcess(const std::string& executable, const std::vector<std::string>& env,
                  int stderr_fd = 2, const std::vector<std::string>& hidden = {});
    WorkerProcess(WorkerProcess&& other) noexcept;
    WorkerProcess& operator=(WorkerProcess&& other) noexcept;
    WorkerProcess(const WorkerProcess&) = delete;
    WorkerProcess& operator=(const WorkerProcess&) = delete;
    ~WorkerProcess();

    pid_t pid() const noexcept { return pid_; }
    /// Readable (POLLIN) once the process has exited.
    int pidfd() const noexcept { return pidfd_.get(); }
    void signal(int sig) noexcept;
    /// Reaps the process (it must have exited: pidfd readable); returns how it ended.
    ExitStatus reap() noexcept;

  private:
    void reset() noexcept;
    pid_t pid_ = -1;
    sys::FileDescriptor pidfd_;
    bool reaped_ = false;
};

}  // namespace shmpool::detail
