// ForkServer: starting the server and its hello, spawn requests and their replies, the exit
// reports that arrive in between, and a dead server's replacement.
#include "parent/fork_server.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <system_error>

#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {
namespace {

using fork_protocol::Kind;
using fork_protocol::Reply;

// A server that never says hello, or never answers a request, is stuck: a guard, not a timing.
constexpr int answer_limit_ms = 30'000;
// How long reap() waits for the report of a worker that has exited: the server sends it as
// soon as it sees SIGCHLD, so only a stopped or stuck server makes this wait matter.
constexpr int report_limit_ms = 5'000;
// After a server closed its socket before hello: how long it gets to finish exiting, so that
// its own exit status is what the error reports.
constexpr int exit_grace_ms = 1'000;

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

}  // namespace

ForkServer::ForkServer(std::string executable, std::vector<std::string> environment,
                       std::vector<std::string> hidden)
    : executable_(std::move(executable)),
      environment_(std::move(environment)),
      hidden_(std::move(hidden)) {
}

ForkServer::~ForkServer() {
    stop();
}

void ForkServer::stop() noexcept {
    std::lock_guard lock(mutex_);
    // At the EOF, the server reaps its spare and exits: nothing of it is left dying in the
    // background when the pool is gone. One that does not is killed.
    socket_.reset();
    if (server_) (void)sys::poll_one(server_->pidfd(), POLLIN, exit_grace_ms);
    server_.reset();  // SIGKILL (if still there) and reap
}

pid_t ForkServer::pid() const {
    std::lock_guard lock(mutex_);
    return server_ ? server_->pid() : 0;
}

bool ForkServer::alive() const {
    return server_ && socket_.valid() && sys::poll_one(server_->pidfd(), POLLIN, 0) == 0;
}

ForkServer::Read ForkServer::read_reply(int timeout_ms, Reply& reply, sys::FileDescriptor& fd) {
    for (;;) {
        const int ready = sys::poll_one(socket_.get(), POLLIN, timeout_ms);
        if (ready < 0 && errno == EINTR) continue;  // the caller's deadline is checked again
        if (ready == 0) return Read::timeout;
        int received = -1;
        const ssize_t n =
            sys::receive_message(socket_.get(), &reply, sizeof reply, &received, true);
        fd = sys::FileDescriptor(received);
        if (n < 0 && errno == EAGAIN) continue;
        // EOF, an error, or bytes that are no reply: either way this server is done for.
        if (n != static_cast<ssize_t>(sizeof reply) || reply.magic != fork_protocol::magic)
            return Read::closed;
        return Read::message;
    }
}

void ForkServer::keep_exit(const Reply& reply) {
    exits_[{generation_, reply.pid}] = wait_status(reply.value, reply.peak_rss_kb);
}

void ForkServer::start() {
    int fds[2] = {-1, -1};
    if (sys::seqpacket_pair(fds) != 0)
        throw std::system_error(errno, std::generic_category(), "socketpair for a fork server");
    sys::FileDescriptor mine(fds[0]);
    sys::FileDescriptor theirs(fds[1]);
    std::vector<std::string> env = environment_;
    env.push_back(fmt::format("{}={}", fork_protocol::socket_variable, theirs.get()));
    WorkerProcess server(executable_, env, STDERR_FILENO, hidden_, theirs.get());
    theirs.reset();  // the server's end lives in the server alone: its death is our EOF
    const pid_t pid = server.pid();
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(answer_limit_ms);
    for (;;) {
        pollfd watch[2] = {{mine.get(), POLLIN, 0}, {server.pidfd(), POLLIN, 0}};
        const int ready = sys::poll(watch, 2, remaining_ms(deadline));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0)
            throw std::system_error(errno, std::generic_category(), "poll on a fork server");
        if (ready == 0) {
            server.signal(SIGKILL);
            server.reap();
            throw ForkServerDied(pid, executable_, {}, "did not start within 30 s, and was killed");
        }
        Reply hello;
        int received = -1;
        const ssize_t n =
            (watch[0].revents & POLLIN) != 0
                ? sys::receive_message(mine.get(), &hello, sizeof hello, &received, true)
                : 0;
        sys::FileDescriptor ignored(received);
        if (n < 0 && errno == EAGAIN) continue;
        if (n == static_cast<ssize_t>(sizeof hello) && hello.magic == fork_protocol::magic &&
            hello.kind == Kind::hello) {
            if (hello.value != static_cast<std::int32_t>(fork_protocol::version)) {
                server.signal(SIGKILL);
                server.reap();
                throw ForkServerDied(
                    pid, executable_, {},
                    fmt::format("speaks fork-server protocol version {}, this program version {}: "
                                "build the worker program against the same shmpool",
                                hello.value, fork_protocol::version));
            }
            break;
        }
        // It closed its end, or died, before hello: a program that exits before it reaches
        // shmpool::init, or a server killed as it started. Let it finish exiting to say how.
        (void)sys::poll_one(server.pidfd(), POLLIN, exit_grace_ms);
        server.signal(SIGKILL);
        const ExitStatus status = server.reap();
        throw ForkServerDied(pid, executable_, status, "died before it was ready");
    }
    server_.emplace(std::move(server));
    socket_ = std::move(mine);
    ++generation_;
}

void ForkServer::retire() noexcept {
    // What a dead server said before it died (exit reports of its last workers) is kept.
    if (socket_.valid()) {
        for (;;) {
            Reply reply;
            int received = -1;
            const ssize_t n =
                sys::receive_message(socket_.get(), &reply, sizeof reply, &received, true);
            sys::FileDescriptor ignored(received);
            if (n != static_cast<ssize_t>(sizeof reply) || reply.magic != fork_protocol::magic)
                break;
            if (reply.kind == Kind::exited) keep_exit(reply);
        }
        socket_.reset();
    }
    if (server_) {
        server_->signal(SIGKILL);  // nothing if it is dead already; if it is stuck, it ends here
        last_pid_ = server_->pid();
        last_status_ = server_->reap();
        server_.reset();
        fmt::print(stderr,
                   "shmpool: the pool's fork server (pid {}) ended ({}); its workers die with it\n",
                   last_pid_, last_status_);
    }
}

ForkServer::Worker ForkServer::spawn(const std::vector<std::string>& environment, int stderr_fd) {
    const std::string request = fork_protocol::encode_request(environment);
    if (request.size() > fork_protocol::max_request_bytes)
        throw std::length_error(
            fmt::format("a worker's environment for the fork server takes {} bytes, more than {}",
                        request.size(), fork_protocol::max_request_bytes));
    std::lock_guard lock(mutex_);
    // A server that dies during the request, or is killed as it starts, is replaced once; the
    // replacement dying as well is no accident to retry.
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!alive()) {
            retire();
            try {
                start();
            } catch (const ForkServerDied& e) {
                // Killed as it started (a signal from outside, not its own exit or error): once
                // more, as a worker killed during its start-up is replaced.
                if (attempt > 0 || !e.status().signalled()) throw;
                last_pid_ = e.pid();
                last_status_ = e.status();
                continue;
            }
        }
        if (sys::send_message(socket_.get(), request.data(), request.size(), stderr_fd) < 0) {
            if (errno != EPIPE && errno != ECONNRESET && errno != ECONNREFUSED)
                throw std::system_error(
                    errno, std::generic_category(),
                    fmt::format("sending a request to the pool's fork server (pid {})",
                                server_->pid()));
            retire();
            continue;
        }
        for (;;) {
            Reply reply;
            sys::FileDescriptor fd;
            const Read r = read_reply(answer_limit_ms, reply, fd);
            if (r == Read::timeout) {
                const pid_t stuck = server_->pid();
                retire();
                throw ForkServerDied(
                    stuck, executable_, {},
                    "did not answer a request to fork a worker within 30 s, and was killed");
            }
            if (r == Read::closed) {
                retire();
                break;
            }
            switch (reply.kind) {
                case Kind::exited:
                    keep_exit(reply);
                    continue;
                case Kind::spawned:
                    if (!fd.valid()) {
                        const pid_t odd = server_->pid();
                        retire();
                        throw ForkServerDied(odd, executable_, {},
                                             "sent no pidfd with a worker, and was killed");
                    }
                    return Worker{reply.pid, std::move(fd), generation_};
                case Kind::spawn_failed:
                    throw std::system_error(
                        reply.value, std::generic_category(),
                        fmt::format("the pool's fork server (pid {}) could not fork a worker",
                                    server_->pid()));
                default:
                    continue;  // a stray hello: nothing to do with this request
            }
        }
    }
    throw ForkServerDied(last_pid_, executable_, last_status_,
                         "died while forking a worker, and so did the one started in its place");
}

ExitStatus ForkServer::reap(pid_t pid, unsigned generation) noexcept {
    // Unknown: its server is gone, and with it the report (the server's death killed it).
    const ExitStatus unknown{.signal = SIGKILL};
    std::lock_guard lock(mutex_);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(report_limit_ms);
    for (;;) {
        if (auto it = exits_.find({generation, pid}); it != exits_.end()) {
            const ExitStatus status = it->second;
            exits_.erase(it);
            return status;
        }
        if (generation != generation_ || !socket_.valid()) return unknown;
        const int left = remaining_ms(deadline);
        if (left == 0) return unknown;
        Reply reply;
        sys::FileDescriptor fd;
        switch (read_reply(left, reply, fd)) {
            case Read::message:
                if (reply.kind == Kind::exited) keep_exit(reply);
                break;
            case Read::closed:
                retire();  // keeps what it still had to say; the loop looks once more
                break;
            case Read::timeout:
                return unknown;
        }
    }
}

}  // namespace shmpool::detail
