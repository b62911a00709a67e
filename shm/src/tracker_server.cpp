// The tracker process (shmpool-tracker): watches its clients through pidfds and cleans up after
// each one that dies, and after everything when its root dies (see tracker.hpp).
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "internal.hpp"
#include "registry.hpp"
#include "tracker_protocol.hpp"

namespace shmpool::detail {
namespace {

constexpr std::size_t max_connections = 1024;
constexpr std::size_t max_output = 16u << 20;

struct Connection {
    sys::FileDescriptor fd;
    pid_t peer_pid = 0;
    std::string in;
    std::string out;
};

struct Client {
    sys::FileDescriptor pidfd;
    pid_t pid = 0;
};

class TrackerServer {
  public:
    TrackerServer(pid_t root, sys::FileDescriptor root_pidfd)
        : root_(root), root_pidfd_(std::move(root_pidfd)), self_(LocalNode::get_as_tracker()) {}

    void listen();
    void run();

  private:
    void add_fd(int fd, std::uint32_t events);
    void accept_connections();
    void on_readable(int fd);
    void flush(Connection& c);
    void close_connection(int fd);
    void handle_line(Connection& c, std::string_view line);
    void hello(Connection& c, std::string_view node_id);
    void client_died(int pidfd);
    void shut_down(const char* why);
    std::vector<TrackedBlock> holdings();
    void report(const std::vector<CollectedBlock>& removed, const std::string& who);

    pid_t root_;
    sys::FileDescriptor root_pidfd_;
    LocalNode& self_;
    sys::FileDescriptor epoll_;
    sys::FileDescriptor listener_;
    sys::FileDescriptor signals_;
    std::string socket_path_;
    std::map<int, Connection> connections_;
    std::map<int, Client> clients_;  // by pidfd
};

// Every descriptor is registered with itself as its tag.
void TrackerServer::add_fd(int fd, std::uint32_t events) {
    if (sys::epoll_add(epoll_.get(), fd, events, static_cast<std::uint64_t>(fd)) != 0)
        throw_errno(errno, "epoll_ctl failed");
}

void TrackerServer::listen() {
    epoll_ = sys::FileDescriptor(sys::epoll_create());
    if (!epoll_.valid()) throw_errno(errno, "epoll_create1 failed");
    socket_path_ = fmt::format("{}/tracker.{}.sock", runtime_dir(), self_.id());
    listener_ = sys::FileDescriptor(sys::unix_socket(true));
    if (!listener_.valid()) throw_errno(errno, "socket failed");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path_.size() >= sizeof addr.sun_path) throw_errno(ENAMETOOLONG, socket_path_);
    std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
    if (sys::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        sys::listen(listener_.get(), 128) != 0) {
        throw_errno(errno, fmt::format("cannot listen on '{}'", socket_path_));
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sys::block_signals(set);
    signals_ = sys::FileDescriptor(sys::signal_fd(set));
    if (!signals_.valid()) throw_errno(errno, "signalfd failed");
    add_fd(listener_.get(), EPOLLIN);
    add_fd(root_pidfd_.get(), EPOLLIN);
    add_fd(signals_.get(), EPOLLIN);
}

void TrackerServer::report(const std::vector<CollectedBlock>& removed, const std::string& who) {
    if (removed.empty()) return;
    std::vector<std::string> names;
    names.reserve(removed.size());
    for (const auto& r : removed)
        names.push_back(r.name);
    // One line per event, on the root's stderr, like CPython's leaked-shared_memory warning.
    fmt::print(stderr, "shmpool-tracker: {} left {} tracked block(s) behind; unlinked: {}\n", who,
               removed.size(), fmt::join(names, ", "));
    std::fflush(stderr);
}

void TrackerServer::accept_connections() {
    for (;;) {
        sys::FileDescriptor owned(sys::accept(listener_.get()));
        if (!owned.valid()) return;  // EAGAIN, or a connection that vanished
        int fd = owned.get();
        ucred cred{};
        // Only processes of this user may talk to the tracker (the directory is private too).
        if (sys::peer_credentials(fd, &cred) != 0 || cred.uid != ::geteuid() ||
            connections_.size() >= max_connections) {
            continue;
        }
        add_fd(fd, EPOLLIN | EPOLLRDHUP);
        Connection c;
        c.peer_pid = cred.pid;
        c.fd = std::move(owned);
        connections_.emplace(fd, std::move(c));
    }
}

void TrackerServer::close_connection(int fd) {
    sys::epoll_remove(epoll_.get(), fd);
    connections_.erase(fd);
}

void TrackerServer::flush(Connection& c) {
    while (!c.out.empty()) {
        ssize_t n = sys::send(c.fd.get(), c.out.data(), c.out.size());  // EINTR retried there
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {
            c.out.clear();
            return;
        }
        c.out.erase(0, static_cast<std::size_t>(n));
    }
    std::uint32_t events =
        EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT));
    sys::epoll_modify(epoll_.get(), c.fd.get(), events, static_cast<std::uint64_t>(c.fd.get()));
}

void TrackerServer::on_readable(int fd) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    Connection& c = it->second;
    char buf[4096];
    ssize_t n = sys::read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        close_connection(fd);  // the client's death is seen through its pidfd, not here
        return;
    }
    c.in.append(buf, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = c.in.find('\n')) != std::string::npos) {
        std::string line = c.in.substr(0, nl);
        c.in.erase(0, nl + 1);
        handle_line(c, line);
        if (c.fd.get() < 0) break;
    }
    bool bad = c.in.size() > max_line || c.out.size() > max_output || c.fd.get() < 0;
    if (c.in.size() > max_line) {
        c.out += "ERR line too long\n";
        flush(c);
    }
    if (bad) close_connection(fd);
}

void TrackerServer::handle_line(Connection& c, std::string_view line) {
    if (line.size() > max_line) {
        c.out += "ERR line too long\n";
    } else if (line.rfind("HELLO ", 0) == 0) {
        hello(c, line.substr(6));
    } else if (line == "LIST") {
        for (const auto& b : holdings())
            c.out += format_block_line(b) + "\n";
        c.out += "END\n";
    } else if (line == "PING") {
        c.out += fmt::format("PONG {}\n", ::getpid());
    } else {
        // Malformed or hostile: answer once, hang up; the tracker itself carries on.
        c.out += "ERR unknown request\n";
        flush(c);
        c.fd.reset();
        return;
    }
    flush(c);
}

void TrackerServer::hello(Connection& c, std::string_view node_id) {
    // "<pid>.<8 hex>", the pid must be the peer's own (from the kernel), the node alive.
    auto dot = node_id.find('.');
    pid_t pid = 0;
    bool well_formed =
        dot != std::string_view::npos && parse_int(node_id.substr(0, dot), pid) &&
        node_id.size() == dot + 9 &&
        node_id.substr(dot + 1).find_first_not_of("0123456789abcdef") == std::string_view::npos;
    if (!well_formed || pid != c.peer_pid || !node_alive(std::string(node_id))) {
        c.out += "ERR bad HELLO\n";
        flush(c);
        c.fd.reset();
        return;
    }
    sys::FileDescriptor pidfd(sys::pidfd_open(pid));
    if (!pidfd.valid()) {
        c.out += "ERR cannot watch the process\n";
        flush(c);
        c.fd.reset();
        return;
    }
    const int key = pidfd.get();
    add_fd(key, EPOLLIN);
    Client client;
    client.pidfd = std::move(pidfd);
    client.pid = pid;
    clients_.emplace(key, std::move(client));
    c.out += fmt::format("OK {} {}\n", self_.id(), ::getpid());
}

void TrackerServer::client_died(int pidfd) {
    auto it = clients_.find(pidfd);
    if (it == clients_.end()) return;
    pid_t pid = it->second.pid;
    sys::epoll_remove(epoll_.get(), pidfd);
    clients_.erase(it);
    // The process is gone and its descriptors with it, so its node lock is free by now.
    RegistryLock lock;
    auto nodes = read_nodes();
    for (const auto& node : nodes) {
        if (node.pid == pid && !node.alive && node.tracker_id == self_.id()) {
            report(clean_node(node, nodes, false), fmt::format("process {}", pid));
        }
    }
}

std::vector<TrackedBlock> TrackerServer::holdings() {
    std::vector<TrackedBlock> blocks;
    for (const auto& node : read_nodes()) {
        if (node.tracker_id != self_.id()) continue;
        for (const auto& e : node.entries) {
            BlockId id = block_id(e.name);
            if (!id.exists() || id.ino != e.ino) continue;
            TrackedBlock b{e.name, 0, false, e.refcounted, {}};
            if (e.kind == EntryKind::owner) {
                b.owner_pid = node.pid;
                b.owner_alive = node.alive;
            } else {
                b.users.push_back(node.pid);
            }
            blocks.push_back(std::move(b));
        }
    }
    return blocks;
}

void TrackerServer::shut_down(const char* why) {
    {
        RegistryLock lock;
        auto nodes = read_nodes();
        for (const auto& node : nodes) {
            if (node.tracker_id == self_.id() || node.pid == root_) {
                report(clean_node(node, nodes, true),
                       fmt::format("process {} ({})", node.pid, why));
            }
        }
    }
    sys::unlink(socket_path_.c_str());
    sys::unlink(fmt::format("{}/node.{}", runtime_dir(), self_.id()).c_str());
}

void TrackerServer::run() {
    epoll_event events[64];
    for (;;) {
        int n = sys::epoll_wait(epoll_.get(), events, 64, -1);  // no timeout: EINTR retried there
        if (n < 0) throw_errno(errno, "epoll_wait failed");
        for (int i = 0; i < n; ++i) {
            int fd = static_cast<int>(events[i].data.u64);
            if (fd == root_pidfd_.get()) {
                shut_down("the root process exited");
                return;
            }
            if (fd == signals_.get()) {
                shut_down("the tracker was terminated");
                return;
            }
            if (fd == listener_.get()) {
                accept_connections();
            } else if (clients_.count(fd)) {
                client_died(fd);
            } else if (auto it = connections_.find(fd); it != connections_.end()) {
                if (events[i].events & EPOLLOUT) flush(it->second);
                if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    on_readable(fd);
            }
        }
    }
}

}  // namespace

int tracker_main(int argc, char** argv) {
    pid_t root = 0;
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::string_view(argv[i]) == "--root-pid")
            parse_int(std::string_view(argv[i + 1]), root);
    }
    if (root <= 0) {
        fmt::print(stderr, "usage: shmpool-tracker --root-pid PID\n");
        return 2;
    }
    // Its own session: a Ctrl-C meant for the program must not kill the one who cleans up after it.
    sys::set_own_session();
    sys::ignore_signal(SIGINT);
    sys::ignore_signal(SIGHUP);
    sys::ignore_signal(SIGPIPE);
    try {
        sys::FileDescriptor root_pidfd(sys::pidfd_open(root));
        if (!root_pidfd.valid()) throw_errno(errno, fmt::format("pidfd_open({}) failed", root));
        TrackerServer server(root, std::move(root_pidfd));
        server.listen();
        // A restarted tracker first cleans up what dead owners of dead trackers left behind.
        auto orphans = collect_garbage(false);
        if (!orphans.empty()) {
            std::vector<std::string> names;
            names.reserve(orphans.size());
            for (const auto& o : orphans)
                names.push_back(fmt::format("{} (pid {})", o.name, o.owner_pid));
            fmt::print(stderr, "shmpool-tracker: unlinked {} block(s) of dead processes: {}\n",
                       orphans.size(), fmt::join(names, ", "));
        }
        fmt::print("READY {}/tracker.{}.sock\n", runtime_dir(), LocalNode::existing()->id());
        std::fflush(stdout);
        if (sys::FileDescriptor devnull(sys::open("/dev/null", O_WRONLY)); devnull.valid())
            sys::dup2(devnull.get(), STDOUT_FILENO);  // closes the announcement pipe
        server.run();
        return 0;
    } catch (const std::exception& e) {
        fmt::print(stderr, "shmpool-tracker: {}\n", e.what());
        return 1;
    }
}

}  // namespace shmpool::detail
