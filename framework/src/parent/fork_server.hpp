// ForkServer: a pool's fork server (PoolOptions::start_method = fork_server): the server process,
// exec'd once like a worker, and the socket pair to it. It starts workers by asking the server to
// fork, and learns from the server, their parent, how each one ended.
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parent/worker_process.hpp"
#include "posix/sys.hpp"
#include "protocol/fork_messages.hpp"
#include "shmpool/framework/exit_status.hpp"

namespace shmpool::detail {

/// Owns the server process and the pool's end of its socket; neither copyable nor movable (the
/// workers it forked point at it, and it must outlive them). Thread-safe; its mutex is a leaf.
class ForkServer {
  public:
    /// A worker the server forked: its pid, a pidfd for it (readable once it exited), and which
    /// server (the first is 1; a server that dies is replaced by the next) forked it.
    struct Worker {
        pid_t pid = -1;
        sys::FileDescriptor pidfd;
        unsigned generation = 0;
    };

    /// Starts nothing yet: the first spawn() starts the server. `environment` is the server's
    /// (and so every worker's) on top of this process's, less the variables that start with one
    /// of `hidden`.
    ForkServer(std::string executable, std::vector<std::string> environment,
               std::vector<std::string> hidden);
    /// Closes the socket and kills (SIGKILL) and reaps the server; workers still running die
    /// with it (their parent-death signal).
    ~ForkServer();
    ForkServer(const ForkServer&) = delete;
    ForkServer& operator=(const ForkServer&) = delete;

    /// Has the server fork a worker with `environment` set and its stderr on `stderr_fd`. Starts
    /// the server first if none runs (the first call, or after it died); the server, like an
    /// exec'd worker, dies when the calling thread does. Throws ForkServerDied if the server
    /// cannot start, or dies during the request and so does the one started in its place;
    /// std::system_error if it cannot fork; std::length_error for an environment too big.
    Worker spawn(const std::vector<std::string>& environment, int stderr_fd);
    /// How worker `pid` of server `generation` ended, as its server reported it. Call it once the
    /// worker exited (its pidfd is readable): the report follows at once, and is waited for at
    /// most a few seconds. If the server died first, or does not answer, the status is unknown:
    /// reported as killed by SIGKILL, which is what a server's death does to its workers.
    ExitStatus reap(pid_t pid, unsigned generation) noexcept;
    /// The running server's pid (0 before the first spawn, or after its death until the next).
    pid_t pid() const;
    /// Ends the server now (closes the socket, SIGKILL, reap), as the pool ends; a later spawn()
    /// would start another.
    void stop() noexcept;

  private:
    enum class Read { message, closed, timeout };
    Read read_reply(int timeout_ms, fork_protocol::Reply& reply, sys::FileDescriptor& fd);
    void keep_exit(const fork_protocol::Reply& reply);
    bool alive() const;
    void start();
    void retire() noexcept;

    const std::string executable_;
    const std::vector<std::string> environment_;
    const std::vector<std::string> hidden_;
    mutable std::mutex mutex_;
    std::optional<WorkerProcess> server_;
    sys::FileDescriptor socket_;
    unsigned generation_ = 0;
    pid_t last_pid_ = 0;  // the last server that died, and how
    ExitStatus last_status_;
    // Exit reports that came before anyone asked, by (server generation, pid).
    std::map<std::pair<unsigned, pid_t>, ExitStatus> exits_;
};

}  // namespace shmpool::detail
