// JobQueue: admission and the chunk deque under one mutex.
#include "parent/job_queue.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {

std::optional<Chunk> JobQueue::PlacedChunks::take(unsigned slot, bool steal) {
    std::deque<Chunk>* from = nullptr;
    if (slot < by_slot.size() && !by_slot[slot].empty()) {
        from = &by_slot[slot];
    } else if (!unplaced.empty()) {
        from = &unplaced;
    } else if (steal) {
        // The tail: from the back of the longest list, where its owner would come last.
        for (auto& list : by_slot)
            if (!list.empty() && (from == nullptr || list.size() > from->size())) from = &list;
        if (from == nullptr) return std::nullopt;
        Chunk c = std::move(from->back());
        from->pop_back();
        --left;
        return c;
    }
    if (from == nullptr) return std::nullopt;
    Chunk c = std::move(from->front());
    from->pop_front();
    --left;
    return c;
}

std::size_t JobQueue::PlacedChunks::next_size() const {
    if (!unplaced.empty()) return unplaced.front().size();
    for (const auto& list : by_slot)
        if (!list.empty()) return list.front().size();
    return 0;
}

void JobQueue::PlacedChunks::drain_into(std::deque<Chunk>& out) {
    std::move(unplaced.begin(), unplaced.end(), std::back_inserter(out));
    for (auto& list : by_slot)
        std::move(list.begin(), list.end(), std::back_inserter(out));
    unplaced.clear();
    by_slot.clear();
    left = 0;
}

std::exception_ptr JobQueue::push(const std::shared_ptr<Job>& job, std::size_t chunksize) {
    const std::size_t count = job->items.size();
    const Placement* placement =
        job->placement && job->placement->recorded() ? job->placement.get() : nullptr;
    std::lock_guard lock(mutex_);
    if (closed_) throw PoolClosed();
    if (no_workers_) return no_workers_;
    if (placement != nullptr) {
        auto placed = std::make_unique<PlacedChunks>();
        for (std::size_t i = 0; i < count; i += chunksize) {
            Chunk c{job, i, std::min(count, i + chunksize)};
            const std::uint32_t slot = placement->slot(i);
            if (slot == Placement::none) {
                placed->unplaced.push_back(std::move(c));
                ++placed->left;
                continue;
            }
            if (slot >= placed->by_slot.size()) placed->by_slot.resize(slot + 1);
            placed->by_slot[slot].push_back(std::move(c));
            ++placed->left;
        }
        chunks_.push_back(Entry{{}, std::move(placed)});
    } else {
        for (std::size_t i = 0; i < count; i += chunksize)
            chunks_.push_back(Entry{Chunk{job, i, std::min(count, i + chunksize)}, nullptr});
    }
    in_flight_ += count;
    return nullptr;
}

std::optional<Chunk> JobQueue::take_locked(unsigned slot, bool steal) {
    if (chunks_.empty() || terminating_) return std::nullopt;
    Entry& front = chunks_.front();
    if (!front.placed) {
        Chunk c = std::move(front.chunk);
        chunks_.pop_front();
        return c;
    }
    std::optional<Chunk> c = front.placed->take(slot, steal);
    if (front.placed->left == 0) chunks_.pop_front();
    return c;
}

std::optional<Chunk> JobQueue::take(unsigned slot) {
    std::lock_guard lock(mutex_);
    return take_locked(slot, true);
}

std::optional<Chunk> JobQueue::take_to_queue_behind(unsigned slot) {
    std::lock_guard lock(mutex_);
    if (chunks_.empty()) return std::nullopt;
    const Entry& front = chunks_.front();
    if (!front.placed && front.chunk.job->sink->cancellable()) return std::nullopt;
    return take_locked(slot, false);
}

std::optional<Chunk> JobQueue::take_sharing_the_last(unsigned parts, bool& shared) {
    std::lock_guard lock(mutex_);
    shared = false;
    if (chunks_.empty() || terminating_) return std::nullopt;
    Entry& front = chunks_.front();
    if (!front.placed && chunks_.size() == 1 && parts > 1 && front.chunk.size() > 1) {
        Chunk& last = front.chunk;
        const std::size_t end = last.begin + (last.size() + parts - 1) / parts;
        Chunk share{last.job, last.begin, end};
        last.begin = end;
        shared = true;
        return share;
    }
    return take_locked(any_slot, true);
}

bool JobQueue::requeue_front(const Chunk& chunk) {
    std::lock_guard lock(mutex_);
    if (terminating_) return false;
    chunks_.push_front(Entry{chunk, nullptr});
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
    return chunks_.empty() ? 0 : chunks_.front().front_size();
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

std::deque<Chunk> JobQueue::drain_locked() {
    std::deque<Chunk> out;
    for (Entry& e : chunks_) {
        if (e.placed)
            e.placed->drain_into(out);
        else
            out.push_back(std::move(e.chunk));
    }
    chunks_.clear();
    return out;
}

std::deque<Chunk> JobQueue::terminate() {
    std::lock_guard lock(mutex_);
    closed_ = stopping_ = terminating_ = true;
    return drain_locked();
}

std::deque<Chunk> JobQueue::abandon(std::exception_ptr why) {
    std::lock_guard lock(mutex_);
    no_workers_ = std::move(why);
    return drain_locked();
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
