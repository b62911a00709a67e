// The fork server: one poll loop over its socket to the pool and a signalfd for SIGCHLD. It is
// single-threaded, so fork() is safe here; the pool's parent, which has threads, never forks.
#include "worker/fork_server_main.hpp"

#include <signal.h>
#include <sys/signalfd.h>  // signalfd_siginfo
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
            if ((fds[1].revents & POLLIN) != 0 && !reap()) return 0;
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                switch (serve()) {
                    case Served::request:
                        break;
                    case Served::pool_gone:
                        return 0;  // the workers die with this process (their PDEATHSIG)
                    case Served::in_worker:
                        return std::nullopt;
                }
            }
        }
    }

  private:
    enum class Served { request, pool_gone, in_worker };

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
        return send({.kind = Kind::spawned, .pid = pid}, pidfd.get()) ? Served::request
                                                                      : Served::pool_gone;
    }

    // In the forked child: what the exec path's launcher does between fork and exec, then the
    // worker's own environment. Failures end the child at once; the pool sees a death before
    // ready, as for an exec'd worker that fails there.
    // NOLINTBEGIN(concurrency-mt-unsafe): the child is single-threaded
    void become_worker(const std::vector<std::string_view>& environment, int stderr_fd) {
        socket_.reset();  // the pool must see EOF when the server dies, not wait on a worker
        signals_.reset();
        sys::unblock_signals(sigchld_);
        if (sys::dup2(stderr_fd, STDERR_FILENO) < 0) ::_exit(127);
        sys::close(stderr_fd);
        for (const std::string_view entry : environment) {
            const std::size_t eq = entry.find('=');
            if (eq == std::string_view::npos || eq == 0) continue;
            const std::string name(entry.substr(0, eq));
            const std::string value(entry.substr(eq + 1));
            ::setenv(name.c_str(), value.c_str(), 1);
        }
        // Dies with the server, and so with the pool (the server dies with the pool's thread).
        sys::set_parent_death_signal(SIGKILL);
        if (::getppid() != server_pid_) ::_exit(1);  // the server died before the line above
        sys::set_own_process_group();                // a terminal's Ctrl-C is the pool's to handle
    }
    // NOLINTEND(concurrency-mt-unsafe)

    sys::FileDescriptor socket_;
    sys::FileDescriptor signals_;
    sigset_t sigchld_{};
    pid_t server_pid_;
    std::map<pid_t, bool> children_;  // live children, and whether the pool was told of each
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
    Server server(socket);
    return server.run();
}
// NOLINTEND(concurrency-mt-unsafe)

}  // namespace shmpool::detail
