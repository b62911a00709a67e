// JobQueue: the chunks waiting for a worker, the count of items not yet settled, and the pool's
// admission phase (open, closed, stopping, terminating). Owns one mutex; never calls a sink.
// A repeated index job's chunks wait by the worker that ran them last (its Placement): each
// worker takes its own, then steals from the back of another's only when it has none left.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "parent/job.hpp"

namespace shmpool::detail {

class JobQueue {
  public:
    /// For take(): a taker that is not one of this machine's slots (a cluster node).
    static constexpr unsigned any_slot = ~0U;

    /// Queues `job` in chunks of `chunksize` items. Throws PoolClosed once closed. Returns the
    /// error every item must fail with instead if the pool has no worker left (nothing queued).
    std::exception_ptr push(const std::shared_ptr<Job>& job, std::size_t chunksize);
    /// The next chunk for the worker in slot `slot`, unless there is none or the pool is
    /// terminating: of a placed job, its own range first, then one never placed, then one
    /// stolen from the back of the longest list of another.
    std::optional<Chunk> take(unsigned slot = any_slot);
    /// As take(), but only a chunk that may wait behind a running one: not cancellable, and of
    /// a placed job only the slot's own (a stolen one must run at once, not queue).
    std::optional<Chunk> take_to_queue_behind(unsigned slot);
    /// As take(), but of the last chunk left only a share of 1/`parts` (rounded up) is taken,
    /// the rest staying queued, so that the end of a job spreads over the `parts` places that
    /// are free (a node far away must not hold the tail). `shared` says whether it was a share.
    std::optional<Chunk> take_sharing_the_last(unsigned parts, bool& shared);
    /// Puts a chunk back at the front (items a worker did not reach, a retry). False, and
    /// nothing queued, when the pool is terminating: the caller fails its items.
    bool requeue_front(const Chunk& chunk);
    /// `n` items were settled (a result or an error each).
    void finish(std::size_t n);
    bool empty() const;
    /// Items in the next chunk (0: none).
    std::size_t front_size() const;

    /// No more work is accepted.
    void close();
    /// Closes, waits until every item is settled, then the pool is stopping.
    void wait_idle_then_stop();
    /// Closes and stops at once; returns the chunks still queued (the caller fails their items
    /// with PoolClosed, then calls finish()).
    std::deque<Chunk> terminate();
    /// The pool has no worker left and none coming: work from now on fails with `why`; returns
    /// the chunks still queued (the caller fails them, then calls finish()).
    std::deque<Chunk> abandon(std::exception_ptr why);

    bool terminating() const;
    /// Whether the pool needs its workers: not stopping, or items left; never when terminating.
    bool wants_workers() const;
    /// Stopping with every item settled: the workers may go.
    bool stopping_and_idle() const;

  private:
    // A placed job's chunks, by the slot that ran each last time.
    struct PlacedChunks {
        std::vector<std::deque<Chunk>> by_slot;
        std::deque<Chunk> unplaced;  // ranges the last run did not reach
        std::size_t left = 0;
        std::optional<Chunk> take(unsigned slot, bool steal);
        std::size_t next_size() const;
        void drain_into(std::deque<Chunk>& out);
    };
    // One chunk, or every chunk of a placed job.
    struct Entry {
        Chunk chunk;
        std::unique_ptr<PlacedChunks> placed;
        std::size_t front_size() const { return placed ? placed->next_size() : chunk.size(); }
    };
    std::optional<Chunk> take_locked(unsigned slot, bool steal);
    std::deque<Chunk> drain_locked();

    mutable std::mutex mutex_;
    std::condition_variable idle_;
    std::deque<Entry> chunks_;
    std::size_t in_flight_ = 0;  // items queued or running
    bool closed_ = false;
    bool stopping_ = false;
    bool terminating_ = false;
    std::exception_ptr no_workers_;
};

}  // namespace shmpool::detail
