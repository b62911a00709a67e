// Transport: the outbox, the sends in flight, and the polling rhythm.
#include "transport.hpp"

#include <algorithm>
#include <thread>

namespace shmpool::cluster {

void Transport::post(int destination, Tag tag, std::string bytes) {
    {
        std::lock_guard lock(mutex_);
        outbox_.push_back({destination, tag, std::move(bytes)});
    }
    posted_.notify_one();
}

bool Transport::pump() {
    std::deque<Outgoing> out;
    {
        std::lock_guard lock(mutex_);
        out.swap(outbox_);
    }
    bool did = !out.empty();
    for (Outgoing& o : out)
        sending_.emplace_back(o.destination, static_cast<int>(o.tag), std::move(o.bytes));
    const auto before = sending_.size();
    std::erase_if(sending_, [](mpi::Send& s) { return s.complete(); });
    return did || sending_.size() != before;
}

void Transport::sleep(std::chrono::microseconds timeout) {
    std::unique_lock lock(mutex_);
    posted_.wait_for(lock, timeout, [&] { return !outbox_.empty() || woken_; });
    woken_ = false;
}

void Transport::wake() {
    {
        std::lock_guard lock(mutex_);
        woken_ = true;
    }
    posted_.notify_one();
}

void Transport::flush(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while ((pump(), !sending_.empty()) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
}

std::chrono::microseconds Backoff::next(bool found_something, bool busy) {
    using namespace std::chrono;
    const auto now = steady_clock::now();
    if (found_something) {
        last_activity_ = now;
        sleep_ = microseconds(0);
        return sleep_;
    }
    // Right after activity more is likely: poll again at once (the caller yields) for a while.
    if (now - last_activity_ < microseconds(100)) return microseconds(0);
    const microseconds ceiling = busy ? microseconds(50) : milliseconds(1);
    sleep_ = std::min(ceiling, std::max(microseconds(10), sleep_ * 2));
    return sleep_;
}

}  // namespace shmpool::cluster
