// JobQueue: the chunks waiting for a worker, the count of items not yet settled, and the pool's
// admission phase (open, closed, stopping, terminating). Owns one mutex; never calls a sink.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>

#include "parent/job.hpp"

namespace shmpool::detail {

class JobQueue {
  public:
    /// Queues `job` in chunks of `chunksize` items. Throws PoolClosed once closed. Returns the
    /// error every item must fail with instead if the pool has no worker left (nothing queued).
    std::exception_ptr push(const std::shared_ptr<Job>& job, std::size_t chunksize);
    /// The next chunk, unless there is none or the pool is terminating.
    std::optional<Chunk> take();
    /// As take(), but only a chunk that may wait behind a running one (not cancellable).
    std::optional<Chunk> take_to_queue_behind();
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
    mutable std::mutex mutex_;
    std::condition_variable idle_;
    std::deque<Chunk> chunks_;
    std::size_t in_flight_ = 0;  // items queued or running
    bool closed_ = false;
    bool stopping_ = false;
    bool terminating_ = false;
    std::exception_ptr no_workers_;
};

}  // namespace shmpool::detail
