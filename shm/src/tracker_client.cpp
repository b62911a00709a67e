// The client side of the tracker: finding or starting it (Boost.Process v2), its line protocol,
// and the public ownership API of tracker.hpp.
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "internal.hpp"
#include "registry.hpp"
#include "tracker_protocol.hpp"

namespace shmpool {
namespace detail {
namespace {

namespace bp = boost::process::v2;

std::mutex tracker_mutex;
TrackerConnection* connection = nullptr;   // this process's HELLO connection, kept for life
std::atomic<bool> tracker_settled{false};  // connected, or told to do without

// Waits until `fd` is readable (or hung up), at most `timeout` in all: poll_one returns EINTR
// to us, the owner of the deadline. poll()'s result: >0 ready, 0 timed out, -1 failed.
int wait_readable(int fd, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now());
        int n =
            sys::poll_one(fd, POLLIN, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
        if (n < 0 && errno == EINTR) continue;
        return n;
    }
}

std::string find_tracker_executable() {
    namespace fs = std::filesystem;
    std::vector<fs::path> candidates;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read under tracker_mutex, once per process
    if (const char* env = std::getenv("SHMPOOL_TRACKER_EXE"); env && *env) return env;
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back(self.parent_path() / "shmpool-tracker");
    candidates.emplace_back(SHMPOOL_TRACKER_INSTALLED_PATH);
    candidates.emplace_back(SHMPOOL_TRACKER_BUILD_PATH);
    for (const auto& c : candidates) {
        if (sys::access(c.c_str(), X_OK) == 0) return c.string();
    }
    throw_errno(ENOENT,
                fmt::format("cannot find the shmpool-tracker executable (looked next to this "
                            "program, in {} and in {}); set SHMPOOL_TRACKER_EXE, or create "
                            "blocks with track = false",
                            SHMPOOL_TRACKER_INSTALLED_PATH, SHMPOOL_TRACKER_BUILD_PATH));
}

// Starts a tracker whose root is this process; returns the socket path it announced.
std::string start_tracker() {
    std::string exe = find_tracker_executable();
    boost::asio::io_context ctx;
    boost::asio::readable_pipe out(ctx);
    boost::system::error_code ec;
    std::optional<bp::process> started;
    try {
        started.emplace(ctx, exe,
                        std::vector<std::string>{"--root-pid", std::to_string(::getpid())},
                        bp::process_stdio{nullptr, out, {}});
    } catch (const boost::system::system_error& e) {  // e.g. SHMPOOL_TRACKER_EXE names nothing
        throw_errno(e.code().value(), fmt::format("cannot start the tracker '{}'", exe));
    }
    bp::process& proc = *started;
    // The tracker announces "READY <socket>" once it listens; a bounded wait, never a sleep.
    std::string line;
    int fd = out.native_handle();
    for (;;) {
        int n = wait_readable(fd, std::chrono::seconds(10));
        if (n <= 0) {
            proc.terminate(ec);
            throw_errno(ETIMEDOUT, fmt::format("{} did not start within 10 s", exe));
        }
        char c;
        ssize_t got = sys::read(fd, &c, 1);
        if (got <= 0) {
            proc.wait(ec);
            throw_errno(ECHILD, fmt::format("{} exited before it was ready", exe));
        }
        if (c == '\n') break;
        line += c;
        if (line.size() > 4096) throw_errno(EPROTO, "the tracker announced nonsense");
    }
    proc.detach();  // it outlives this handle, and exits when this process dies
    if (line.rfind("READY ", 0) != 0)
        throw_errno(EPROTO, fmt::format("the tracker said '{}'", line));
    return line.substr(6);
}

}  // namespace

TrackerConnection::TrackerConnection(const std::string& socket_path) : path_(socket_path) {
    fd_ = sys::FileDescriptor(sys::unix_socket(false));
    if (!fd_.valid()) {
        throw_errno(errno,
                    fmt::format("socket(AF_UNIX) for the tracker at '{}' failed", socket_path));
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path) {
        throw_errno(ENAMETOOLONG, fmt::format("tracker socket path '{}' is too long", socket_path));
    }
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    // EINTR is retried there.
    if (sys::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw_errno(errno, fmt::format("connect('{}') failed", socket_path));
}

std::string TrackerConnection::request(const std::string& line) {
    std::string msg = line + "\n";
    std::size_t sent = 0;
    while (sent < msg.size()) {
        ssize_t n = sys::send(fd_.get(), msg.data() + sent, msg.size() - sent);  // EINTR retried
        if (n <= 0) throw_errno(errno, fmt::format("sending to the tracker at '{}' failed", path_));
        sent += static_cast<std::size_t>(n);
    }
    return read_line();
}

std::string TrackerConnection::read_line() {
    for (;;) {
        if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
            std::string line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return line;
        }
        int n = wait_readable(fd_.get(), std::chrono::seconds(10));
        if (n == 0)
            throw_errno(ETIMEDOUT, fmt::format("the tracker at '{}' did not answer", path_));
        char buf[4096];
        ssize_t got = sys::read(fd_.get(), buf, sizeof buf);
        if (got <= 0)
            throw_errno(got == 0 ? ECONNRESET : errno,
                        fmt::format("the tracker at '{}' hung up", path_));
        buffer_.append(buf, static_cast<std::size_t>(got));
        if (buffer_.size() > max_line * 1024)
            throw_errno(EPROTO, "the tracker's answer is too long");
    }
}

std::vector<TrackedBlock> TrackerConnection::list() {
    std::vector<TrackedBlock> blocks;
    std::string line = request("LIST");
    while (line != "END") {
        TrackedBlock b;
        if (!parse_block_line(line, b))
            throw_errno(EPROTO, fmt::format("the tracker said '{}'", line));
        blocks.push_back(std::move(b));
        line = read_line();
    }
    return blocks;
}

// Connects this process's node to a tracker: the inherited one, else a new one it starts.
void connect_tracker(LocalNode& node) {
    if (tracker_settled.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> guard(tracker_mutex);
    if (connection != nullptr || tracker_settled.load()) return;
    const char* env = std::getenv("SHMPOOL_TRACKER");  // NOLINT(concurrency-mt-unsafe): see below
    if (env && std::string_view(env) == "none") {      // registry only: gc cleans up
        tracker_settled.store(true, std::memory_order_release);
        return;
    }
    auto hello = [&](const std::string& path) {
        auto* c = new TrackerConnection(path);
        std::string reply = c->request("HELLO " + node.id());
        std::string tracker_id;
        pid_t pid = 0;
        if (!parse_ok_line(reply, tracker_id, pid)) {
            delete c;
            throw_errno(EPROTO,
                        fmt::format("the tracker at '{}' refused this process: {}", path, reply));
        }
        c->tracker_pid = pid;
        node.set_tracker(tracker_id);
        connection = c;  // kept open for life: the tracker watches this process through a pidfd
        tracker_settled.store(true, std::memory_order_release);
    };
    if (env && *env) {
        try {
            hello(env);
            return;
        } catch (const std::system_error&) {
            // The inherited tracker is gone: this process starts its own.
        }
    }
    std::string path = start_tracker();
    hello(path);
    // Children of this process use the same tracker. setenv() races with getenv() in other
    // threads; it runs once per process, on its first tracked create (docs/ownership.md), and a
    // launcher that cares calls Tracker::ensure() before starting threads.
    ::setenv("SHMPOOL_TRACKER", path.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
}

LocalNode& tracked_node() {
    LocalNode& node = LocalNode::get();
    connect_tracker(node);
    return node;
}

// After fork() the child has neither the parent's node nor its tracker connection.
void forget_tracker_after_fork() noexcept {
    connection = nullptr;  // the parent's object; leaked in the child on purpose
    tracker_settled.store(false);
}

}  // namespace detail

pid_t Tracker::ensure() {
    detail::tracked_node();
    return pid();
}

pid_t Tracker::pid() noexcept {
    std::lock_guard<std::mutex> guard(detail::tracker_mutex);
    return detail::connection ? detail::connection->tracker_pid : 0;
}

std::vector<TrackedBlock> Tracker::blocks() {
    std::lock_guard<std::mutex> guard(detail::tracker_mutex);
    if (detail::connection == nullptr) detail::throw_errno(ENOTCONN, "this process has no tracker");
    // A separate connection: the HELLO one is the tracker's handle on this process's life.
    detail::TrackerConnection query(detail::connection->path());
    return query.list();
}

std::vector<TrackerStatus> Tracker::list_all() {
    std::vector<TrackerStatus> result;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(detail::runtime_dir(), ec)) {
        std::string file = e.path().filename().string();
        if (file.rfind("tracker.", 0) != 0 || !file.ends_with(".sock")) continue;
        try {
            detail::TrackerConnection c(e.path().string());
            std::string reply = c.request("PING");
            TrackerStatus status;
            status.socket = e.path().string();
            if (reply.rfind("PONG ", 0) != 0) continue;
            status.pid = std::atoi(reply.c_str() + 5);
            status.blocks = c.list();
            result.push_back(std::move(status));
        } catch (const std::system_error&) {
            // A stale socket of a dead tracker: gc removes it.
        }
    }
    return result;
}

std::optional<TrackedBlock> tracked_block(std::string_view name) {
    detail::BlockId id = detail::block_id(name);
    if (!id.exists()) return std::nullopt;
    std::string bare(detail::strip_name(name));
    std::optional<TrackedBlock> result;
    for (const auto& node : detail::read_nodes()) {
        for (const auto& e : node.entries) {
            if (e.name != bare || e.ino != id.ino || e.dev != id.dev) continue;
            if (!result) result = TrackedBlock{bare, 0, false, false, {}};
            result->shared_lifetime |= e.refcounted;
            if (e.kind == detail::EntryKind::owner) {
                result->owner_pid = node.pid;
                result->owner_alive = node.alive;
            } else {
                result->users.push_back(node.pid);
            }
        }
    }
    return result;
}

void release_ownership(std::string_view name) {
    std::string bare(detail::strip_name(name));
    detail::LocalNode* node = detail::LocalNode::existing();
    if (node == nullptr || !node->has(bare, detail::EntryKind::owner)) {
        throw std::invalid_argument(fmt::format("block '{}' is not owned by this process", bare));
    }
    node->remove(bare);
}

void adopt_ownership(std::string_view name) {
    std::string bare(detail::strip_name(name));
    detail::LocalNode& self = detail::tracked_node();
    detail::RegistryLock lock;
    detail::BlockId id = detail::block_id(bare);
    if (!id.exists())
        detail::throw_errno(ENOENT,
                            fmt::format("cannot adopt block '{}': it does not exist", bare));
    bool refcounted = false;
    auto nodes = detail::read_nodes();
    for (const auto& node : nodes) {
        for (const auto& e : node.entries) {
            if (e.name == bare && e.ino == id.ino && e.kind == detail::EntryKind::owner)
                refcounted |= e.refcounted;
        }
    }
    if (!self.has(bare, detail::EntryKind::owner)) {
        self.add(bare, id.dev, id.ino, detail::EntryKind::owner,
                 refcounted ? detail::entry_refcounted : 0);
    }
    for (const auto& node : nodes) {
        if (node.id != self.id())
            detail::clear_in_node(node, bare, id.ino, detail::EntryKind::owner);
    }
}

void transfer_ownership(std::string_view name, pid_t new_owner) {
    std::string bare(detail::strip_name(name));
    detail::LocalNode* self = detail::LocalNode::existing();
    if (self == nullptr || !self->has(bare, detail::EntryKind::owner)) {
        throw std::invalid_argument(fmt::format("block '{}' is not owned by this process", bare));
    }
    detail::RegistryLock lock;
    detail::BlockId id = detail::block_id(bare);
    if (!id.exists())
        detail::throw_errno(ENOENT,
                            fmt::format("cannot transfer block '{}': it does not exist", bare));
    for (const auto& node : detail::read_nodes()) {
        if (node.pid != new_owner || !node.alive || node.tracker) continue;
        bool refcounted = false;
        for (const auto& e : node.entries)
            refcounted |= e.name == bare && e.refcounted;
        // Added before removed: at every instant some live process owns the block.
        detail::add_to_node(node, {bare, id.dev, id.ino, detail::EntryKind::owner, refcounted});
        self->remove(bare);
        return;
    }
    detail::throw_errno(
        ESRCH, fmt::format("cannot transfer block '{}': no live shmpool process with pid {}", bare,
                           new_owner));
}

std::vector<CollectedBlock> collect_garbage(bool dry_run) {
    detail::RegistryLock lock;
    auto nodes = detail::read_nodes();
    std::vector<CollectedBlock> removed;
    for (const auto& node : nodes) {
        if (node.alive || detail::node_alive(node.tracker_id)) continue;
        // The same rule with or without dry_run: a preview is exactly what a run would do.
        auto r = detail::clean_node(node, nodes, false, dry_run);
        removed.insert(removed.end(), r.begin(), r.end());
        if (node.tracker && !dry_run) {
            sys::unlink(fmt::format("{}/tracker.{}.sock", detail::runtime_dir(), node.id).c_str());
        }
    }
    return removed;
}

}  // namespace shmpool
