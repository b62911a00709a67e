// The fork server: one poll loop over its socket to the pool and a signalfd for SIGCHLD, and one
// child forked ahead of each request (the spare). It is single-threaded, so fork() is safe
// here; the pool's parent, which has threads, never forks.
#include "worker/fork_server_main.hpp"

#include <signal.h>
#include <sys/signalfd.h>  // signalfd_siginfo
#include <tbb/global_control.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "posix/sys.hpp"
#include "protocol/fork_messages.hpp"

namespace shmpool::detail {
namespace {

using fork_protocol::Kind;
using fork_protocol::Reply;

class Server {
  public:
    explicit Server(int socket)
        : socket_(socket), server_pid_(::getpid()), buffer_(fork_protocol::max_request_bytes) {
        sigemptyset(&sigchld_);
        sigaddset(&sigchld_, SIGCHLD);
        // SIGCHLD is read from a descriptor in the loop, never delivered to a handler.
        if (sys::block_signals(sigchld_) != 0)
            throw std::system_error(errno, std::generic_category(), "fork server: sigprocmask");
        signals_ = sys::FileDescriptor(sys::signal_fd(sigchld_));
        if (!signals_.valid())
            throw std::system_error(errno, std::generic_category(), "fork server: signalfd");
    }

    // The server's exit status; nothing in a forked worker.
    std::optional<int> run() {
        if (make_spare() == Forked::worker) return std::nullopt;
        if (!send({.kind = Kind::hello,
                   .pid = server_pid_,
                   .value = static_cast<std::int32_t>(fork_protocol::version)}))
            return 0;
        for (;;) {
            pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {signals_.get(), POLLIN, 0}};
            if (sys::poll(fds, 2, -1) < 0) {
                if (errno == EINTR) continue;
                throw std::system_error(errno, std::generic_category(), "fork server: poll");
            }
            // Deaths first: a pool that asks for a replacement has already seen the death.
            if ((fds[1].revents & POLLIN) != 0 && !reap()) return leave();
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                switch (serve()) {
                    case Served::request:
                        break;
                    case Served::pool_gone:
                        return leave();
                    case Served::in_worker:
                        return std::nullopt;
                }
            }
        }
    }

  private:
    enum class Served { request, pool_gone, in_worker };
    enum class Forked { server, worker };

    // A child forked ahead of the next request, waiting for it on a socket pair of its own: a
    // request then costs a message to it, not a fork and the child's first page faults.
    struct Spare {
        pid_t pid = -1;
        sys::FileDescriptor channel;
        sys::FileDescriptor pidfd;
    };

    // The pool is gone: the spare goes first, reaped here, so that nothing of this server
    // outlives it; workers still running die with it (their PDEATHSIG).
    int leave() {
        if (spare_) {
            sys::pidfd_send_signal(spare_->pidfd.get(), SIGKILL);
            int status = 0;
            sys::wait4(spare_->pid, &status, nullptr);
            spare_.reset();
        }
        return 0;
    }

    bool send(const Reply& reply, int fd = -1) {
        return sys::send_message(socket_.get(), &reply, sizeof reply, fd) ==
               static_cast<ssize_t>(sizeof reply);
    }

    // Reaps the children that ended and reports each one the pool knows; false if the pool is
    // gone. Only this server's own children: never waitpid(-1), which would take a child that
    // some library in this program started.
    bool reap() {
        signalfd_siginfo info;
        while (sys::read(signals_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        }
        for (auto it = children_.begin(); it != children_.end();) {
            int status = 0;
            struct rusage usage {};
            const pid_t r = sys::try_wait4(it->first, &status, &usage);
            if (r == 0 || (r < 0 && errno != ECHILD)) {
                ++it;
                continue;
            }
            const bool announced = it->second;
            if (spare_ && spare_->pid == it->first) spare_.reset();  // killed while it waited
            it = children_.erase(it);
            if (r < 0 || !announced) continue;
            if (!send({.kind = Kind::exited,
                       .pid = r,
                       .value = status,
                       .peak_rss_kb = static_cast<std::int64_t>(usage.ru_maxrss)}))
                return false;
        }
        return true;
    }

    Served serve() {
        int received = -1;
        const ssize_t n =
            sys::receive_message(socket_.get(), buffer_.data(), buffer_.size(), &received);
        sys::FileDescriptor stderr_fd(received);
        if (n == 0) return Served::pool_gone;
        if (n < 0) {
            if (errno == EAGAIN) return Served::request;
            if (errno != EMSGSIZE) return Served::pool_gone;
            return send({.kind = Kind::spawn_failed, .value = EMSGSIZE}) ? Served::request
                                                                         : Served::pool_gone;
        }
        std::vector<std::string_view> environment;
        if (!fork_protocol::decode_request({buffer_.data(), static_cast<std::size_t>(n)},
                                           environment) ||
            !stderr_fd.valid()) {
            return send({.kind = Kind::spawn_failed, .value = EPROTO}) ? Served::request
                                                                       : Served::pool_gone;
        }
        if (spare_) {
            Spare spare = std::move(*spare_);
            spare_.reset();
            // The request as it came, stderr pipe and all; a spare that died meanwhile cannot
            // take it, and a child is forked for it instead.
            if (sys::send_message(spare.channel.get(), buffer_.data(), static_cast<std::size_t>(n),
                                  stderr_fd.get()) == n) {
                stderr_fd.reset();
                children_[spare.pid] = true;
                const bool sent =
                    send({.kind = Kind::spawned, .pid = spare.pid}, spare.pidfd.get());
                spare = {};  // closed here: the next spare must not inherit them
                if (!sent) return Served::pool_gone;
                return make_spare() == Forked::worker ? Served::in_worker : Served::request;
            }
            sys::pidfd_send_signal(spare.pidfd.get(), SIGKILL);
        }
        const pid_t pid = sys::fork();
        if (pid == 0) {
            become_worker(environment, stderr_fd.release());
            return Served::in_worker;
        }
        if (pid < 0)
            return send({.kind = Kind::spawn_failed, .value = errno}) ? Served::request
                                                                      : Served::pool_gone;
        stderr_fd.reset();  // the worker's copy is the only writer: its death is the pipe's end
        // This server is the parent and has not reaped the child: the pid names this worker
        // until the pidfd exists, whatever happens to it meanwhile.
        sys::FileDescriptor pidfd(sys::pidfd_open(pid));
        if (!pidfd.valid()) {
            const int err = errno;
            sys::kill(pid, SIGKILL);
            children_.emplace(pid, false);  // reaped, never reported: the pool never knew it
            return send({.kind = Kind::spawn_failed, .value = err}) ? Served::request
                                                                    : Served::pool_gone;
        }
        children_.emplace(pid, true);
        const bool sent = send({.kind = Kind::spawned, .pid = pid}, pidfd.get());
        pidfd.reset();  // closed here: the next spare must not inherit it
        if (!sent) return Served::pool_gone;
        return make_spare() == Forked::worker ? Served::in_worker : Served::request;
    }

    // Forks the spare, after the reply to the request that used the last one. In the spare,
    // returns only once it got a request (Forked::worker: it is then set up as the worker);
    // without a spare (no descriptors, no processes), requests fork on demand.
    Forked make_spare() {
        if (spare_) return Forked::server;
        int pair[2] = {-1, -1};
        if (sys::seqpacket_pair(pair) != 0) return Forked::server;
        sys::FileDescriptor ours(pair[0]);
        sys::FileDescriptor theirs(pair[1]);
        const pid_t pid = sys::fork();
        if (pid == 0) {
            ours.reset();
            wait_as_spare(std::move(theirs));
            return Forked::worker;
        }
        if (pid < 0) return Forked::server;
        children_.emplace(pid, false);  // not the pool's until a request makes it a worker
        sys::FileDescriptor pidfd(sys::pidfd_open(pid));
        if (!pidfd.valid()) {
            sys::kill(pid, SIGKILL);
            return Forked::server;
        }
        spare_ = Spare{pid, std::move(ours), std::move(pidfd)};
        return Forked::server;
    }

    // In the spare: what needs no request, then its request. It ends with the server: the
    // parent-death signal, or the end of its channel when the server exits.
    void wait_as_spare(sys::FileDescriptor channel) {
        leave_server();
        int received = -1;
        const ssize_t n =
            sys::receive_message(channel.get(), buffer_.data(), buffer_.size(), &received);
        sys::FileDescriptor stderr_fd(received);
        std::vector<std::string_view> environment;
        if (n <= 0) ::_exit(0);
        if (!fork_protocol::decode_request({buffer_.data(), static_cast<std::size_t>(n)},
                                           environment) ||
            !stderr_fd.valid())
            ::_exit(1);
        channel.reset();
        become_worker(environment, stderr_fd.release());
    }

    // In the forked child: what the exec path's launcher does between fork and exec, then the
    // worker's own environment. Failures end the child at once; the pool sees a death before
    // ready, as for an exec'd worker that fails there.
    // NOLINTBEGIN(concurrency-mt-unsafe): the child is single-threaded
    void become_worker(const std::vector<std::string_view>& environment, int stderr_fd) {
        leave_server();
        if (sys::dup2(stderr_fd, STDERR_FILENO) < 0) ::_exit(127);
        sys::close(stderr_fd);
        for (const std::string_view entry : environment) {
            const std::size_t eq = entry.find('=');
            if (eq == std::string_view::npos || eq == 0) continue;
            const std::string name(entry.substr(0, eq));
            const std::string value(entry.substr(eq + 1));
            ::setenv(name.c_str(), value.c_str(), 1);
        }
    }
    // NOLINTEND(concurrency-mt-unsafe)

    // In a child (a spare or a worker forked on demand): the server's descriptors closed, and
    // what the exec path's launcher does between fork and exec. Done once (a spare does it
    // before it waits).
    void leave_server() {
        if (!socket_.valid()) return;
        socket_.reset();  // the pool must see EOF when the server dies, not wait on a worker
        signals_.reset();
        spare_.reset();  // another spare's channel is not this child's business
        sys::unblock_signals(sigchld_);
        // Dies with the server, and so with the pool (the server dies with the pool's thread).
        sys::set_parent_death_signal(SIGKILL);
        if (::getppid() != server_pid_) ::_exit(1);  // the server died before the line above
        sys::set_own_process_group();                // a terminal's Ctrl-C is the pool's to handle
    }

    sys::FileDescriptor socket_;
    sys::FileDescriptor signals_;
    sigset_t sigchld_{};
    pid_t server_pid_;
    std::map<pid_t, bool> children_;  // live children, and whether the pool was told of each
    std::optional<Spare> spare_;
    std::vector<char> buffer_;
};

}  // namespace

// NOLINTBEGIN(concurrency-mt-unsafe): runs from shmpool::init, before main() starts any thread
std::optional<int> run_fork_server() {
    const std::string variable(fork_protocol::socket_variable);
    const char* fd_text = std::getenv(variable.c_str());
    if (fd_text == nullptr) return 2;
    const int socket = std::atoi(fd_text);
    ::unsetenv(variable.c_str());  // neither the workers nor their children are servers
    // Whatever static initialisation printed must not be printed again by every worker.
    std::fflush(nullptr);
    {
        // oneTBB's one-time set-up (a fifth of a worker's start when each worker does it; no
        // thread is started by it) is done here once, and every worker inherits it.
        tbb::global_control warm(tbb::global_control::max_allowed_parallelism, 1);
    }
    Server server(socket);
    return server.run();
}
// NOLINTEND(concurrency-mt-unsafe)

}  // namespace shmpool::detail
