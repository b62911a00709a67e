// ProcessWatcher: one epoll set; each registration carries a tag saying what it watches.
#include "parent/process_watcher.hpp"

#include <cerrno>
#include <system_error>
#include <utility>

namespace shmpool::detail {
namespace {

// What an epoll registration watches, packed into its 64-bit tag.
struct WatchTag {
    enum class Kind : std::uint64_t { stop = 0, death = 1, output = 2 };
    Kind kind = Kind::stop;
    std::uint32_t id = 0;          // death: the worker; output: the pipe's descriptor
    std::uint32_t generation = 0;  // death: which of the slot's workers

    std::uint64_t pack() const noexcept {
        return (static_cast<std::uint64_t>(kind) << 62) |
               (static_cast<std::uint64_t>(id & 0x3fffffffu) << 32) | generation;
    }
    static WatchTag unpack(std::uint64_t tag) noexcept {
        return {static_cast<Kind>(tag >> 62), static_cast<std::uint32_t>(tag >> 32) & 0x3fffffffu,
                static_cast<std::uint32_t>(tag)};
    }
};

void throw_if(bool failed, const char* what) {
    if (failed) throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

ProcessWatcher::ProcessWatcher(std::function<void()> on_event)
    : on_event_(std::move(on_event)), epoll_(sys::epoll_create()), stop_(sys::eventfd()) {
    throw_if(!epoll_.valid(), "epoll_create1 failed");
    throw_if(!stop_.valid(), "eventfd failed");
    throw_if(sys::epoll_add(epoll_.get(), stop_.get(), EPOLLIN, WatchTag{}.pack()) != 0,
             "epoll_ctl on the watcher's eventfd failed");
}

ProcessWatcher::~ProcessWatcher() {
    stop();
}

void ProcessWatcher::watch(unsigned worker, unsigned generation, int pidfd) {
    // One-shot: a death is reported once, and the registration goes with the pidfd.
    const WatchTag tag{WatchTag::Kind::death, worker, generation};
    throw_if(sys::epoll_add(epoll_.get(), pidfd, EPOLLIN | EPOLLONESHOT, tag.pack()) != 0,
             "epoll_ctl on a worker pidfd failed");
}

void ProcessWatcher::relay(sys::FileDescriptor read_end, std::string prefix) {
    const int fd = relay_.add(std::move(read_end), std::move(prefix));
    const WatchTag tag{WatchTag::Kind::output, static_cast<std::uint32_t>(fd), 0};
    if (sys::epoll_add(epoll_.get(), fd, EPOLLIN, tag.pack()) != 0) {
        // Unwatched, the pipe would fill and block the worker: drop it (the worker then gets
        // EPIPE on stderr, never a hang).
        while (relay_.pump(fd)) {
        }
    }
}

std::vector<WorkerDeath> ProcessWatcher::take_deaths() {
    std::lock_guard lock(deaths_mutex_);
    return std::exchange(deaths_, {});
}

void ProcessWatcher::start() {
    thread_ = std::thread([this] { run(); });
}

void ProcessWatcher::stop() {
    if (!thread_.joinable()) return;
    const std::uint64_t one = 1;
    (void)sys::write(stop_.get(), &one, sizeof one);
    thread_.join();
}

void ProcessWatcher::run() {
    epoll_event events[16];
    for (;;) {
        const int n = sys::epoll_wait(epoll_.get(), events, 16, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return;
        bool died = false;
        for (int i = 0; i < n; ++i) {
            const WatchTag tag = WatchTag::unpack(events[i].data.u64);
            switch (tag.kind) {
                case WatchTag::Kind::stop:
                    return;
                case WatchTag::Kind::output:
                    relay_.pump(static_cast<int>(tag.id));
                    break;
                case WatchTag::Kind::death: {
                    std::lock_guard lock(deaths_mutex_);
                    deaths_.push_back({tag.id, tag.generation});
                    died = true;
                    break;
                }
            }
        }
        if (died) on_event_();
    }
}

}  // namespace shmpool::detail
