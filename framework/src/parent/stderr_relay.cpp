// StderrRelay: line assembly per pipe, one write(2) per batch of lines.
#include "parent/stderr_relay.hpp"

#include <unistd.h>

#include <cerrno>
#include <vector>

namespace shmpool::detail {

int StderrRelay::add(sys::FileDescriptor read_end, std::string prefix) {
    const int fd = read_end.get();
    std::lock_guard lock(mutex_);
    pipes_[fd] = Pipe{std::move(read_end), std::move(prefix), {}};
    return fd;
}

bool StderrRelay::pump(int fd) {
    std::string out;
    bool open = true;
    {
        std::lock_guard lock(mutex_);
        auto it = pipes_.find(fd);
        if (it == pipes_.end()) return false;
        Pipe& pipe = it->second;
        char buf[4096];
        const ssize_t got = sys::read(fd, buf, sizeof buf);
        if (got > 0) pipe.partial.append(buf, static_cast<std::size_t>(got));
        std::size_t start = 0;
        for (std::size_t nl; (nl = pipe.partial.find('\n', start)) != std::string::npos;
             start = nl + 1) {
            out += pipe.prefix;
            out.append(pipe.partial, start, nl + 1 - start);
        }
        pipe.partial.erase(0, start);
        if (got == 0 || (got < 0 && errno != EAGAIN)) {
            if (!pipe.partial.empty())
                out += pipe.prefix + pipe.partial + "\n";  // the last words of a dead worker
            pipes_.erase(it);  // closes the read end (and leaves the watcher's epoll set)
            open = false;
        }
    }
    if (!out.empty()) (void)sys::write(STDERR_FILENO, out.data(), out.size());
    return open;
}

void StderrRelay::drain() {
    std::vector<int> fds;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [fd, pipe] : pipes_)
            fds.push_back(fd);
    }
    // Only what is there now: a worker's own child may still hold the write end open.
    for (int fd : fds) {
        while (sys::poll_one(fd, POLLIN, 0) > 0 && pump(fd)) {
        }
    }
    std::lock_guard lock(mutex_);
    for (auto& [fd, pipe] : pipes_) {
        if (!pipe.partial.empty()) {
            const std::string last = pipe.prefix + pipe.partial + "\n";
            (void)sys::write(STDERR_FILENO, last.data(), last.size());
        }
    }
    pipes_.clear();
}

}  // namespace shmpool::detail
