// JobQueue: admission and the chunk deque under one mutex.
#include "parent/job_queue.hpp"

#include <algorithm>
#include <utility>

#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {

std::exception_ptr JobQueue::push(const std::shared_ptr<Job>& job, std::size_t chunksize) {
    const std::size_t count = job->items.size();
    std::lock_guard lock(mutex_);
    if (closed_) throw PoolClosed();
    if (no_workers_) return no_workers_;
    for (std::size_t i = 0; i < count; i += chunksize)
        chunks_.push_back(Chunk{job, i, std::min(count, i + chunksize)});
    in_flight_ += count;
    return nullptr;
}

std::optional<Chunk> JobQueue::take() {
    std::lock_guard lock(mutex_);
    if (chunks_.empty() || terminating_) return std::nullopt;
    Chunk c = std::move(chunks_.front());
    chunks_.pop_front();
    return c;
}

std::optional<Chunk> JobQueue::take_to_queue_behind() {
    std::lock_guard lock(mutex_);
    if (chunks_.empty() || terminating_ || chunks_.front().job->sink->cancellable())
        return std::nullopt;
    Chunk c = std::move(chunks_.front());
    chunks_.pop_front();
    return c;
}

std::optional<Chunk> JobQueue::take_sharing_the_last(unsigned parts, bool& shared) {
    std::lock_guard lock(mutex_);
    shared = false;
    if (chunks_.empty() || terminating_) return std::nullopt;
    Chunk& front = chunks_.front();
    if (chunks_.size() == 1 && parts > 1 && front.size() > 1) {
        const std::size_t end = front.begin + (front.size() + parts - 1) / parts;
        Chunk share{front.job, front.begin, end};
        front.begin = end;
        shared = true;
        return share;
    }
    Chunk c = std::move(front);
    chunks_.pop_front();
    return c;
}

bool JobQueue::requeue_front(const Chunk& chunk) {
    std::lock_guard lock(mutex_);
    if (terminating_) return false;
    chunks_.push_front(chunk);
    return true;
}

void JobQueue::finish(std::size_t n) {
    if (n == 0) return;
    std::lock_guard lock(mutex_);
    in_flight_ -= n;
    if (in_flight_ == 0) idle_.notify_all();
}

std::size_t JobQueue::front_size() const {
    std::lock_guard lock(mutex_);
    return chunks_.empty() ? 0 : chunks_.front().size();
}

bool JobQueue::empty() const {
    std::lock_guard lock(mutex_);
    return chunks_.empty();
}

void JobQueue::close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
}

void JobQueue::wait_idle_then_stop() {
    std::unique_lock lock(mutex_);
    closed_ = true;
    idle_.wait(lock, [&] { return in_flight_ == 0; });
    stopping_ = true;
}

std::deque<Chunk> JobQueue::terminate() {
    std::lock_guard lock(mutex_);
    closed_ = stopping_ = terminating_ = true;
    return std::exchange(chunks_, {});
}

std::deque<Chunk> JobQueue::abandon(std::exception_ptr why) {
    std::lock_guard lock(mutex_);
    no_workers_ = std::move(why);
    return std::exchange(chunks_, {});
}

bool JobQueue::terminating() const {
    std::lock_guard lock(mutex_);
    return terminating_;
}

bool JobQueue::wants_workers() const {
    std::lock_guard lock(mutex_);
    return (!stopping_ || in_flight_ > 0) && !terminating_;
}

bool JobQueue::stopping_and_idle() const {
    std::lock_guard lock(mutex_);
    return stopping_ && in_flight_ == 0;
}

}  // namespace shmpool::detail
