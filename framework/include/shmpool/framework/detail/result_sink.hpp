// ResultSink: where the pool delivers a job's results (a future, a map's result vector, an imap
// stream, a pipeline's step events); the pool's side of Future and map (not for users).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <utility>

#include "shmpool/framework/codec.hpp"

namespace shmpool::detail {

/// What a Future holds to reach its pool (to wake it, and to harvest its own result while it
/// waits); it outlives the pool, which then answers nothing.
struct PoolLink;
/// Rings the pool's bell (a cancel that needs the supervisor, a result delivered).
void wake(const PoolLink& link) noexcept;
/// Harvests results on the calling thread until `ready(context)` holds: spinning briefly, then
/// sleeping on the pool's bell. Returns at once if the pool is gone.
void assist(const PoolLink& link, bool (*ready)(const void*), const void* context);
/// Harvests and dispatches once on the calling thread if results are waiting and nobody else is
/// at the pool's slots; never blocks. Whether it did.
bool help(const PoolLink& link);
/// Whether the calling thread is delivering the pool's callbacks (on_progress, on_worker_exit).
bool in_pool_callback() noexcept;

/// Where a job's results go. Every item is settled exactly once, by a value or an error, from
/// whichever pool thread holds the slots; implementations are thread-safe across items.
class ResultSink {
  public:
    virtual ~ResultSink() = default;
    /// Decodes item `index`'s result.
    virtual void set_value(Reader& r, std::size_t index) = 0;
    virtual void set_error(std::exception_ptr e, std::size_t index) = 0;
    /// Whether the item was cancelled before it started (then it is not dispatched).
    virtual bool cancelled(std::size_t /*index*/) const noexcept { return false; }
    /// Marks the item dispatched (it can no longer be cancelled); false if it was cancelled.
    virtual bool start(std::size_t /*index*/) noexcept { return true; }
    /// Decodes a run of successful results for items first, first + 1, ...; sinks override it to
    /// settle a whole chunk at once.
    virtual void set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                            std::size_t first) {
        for (std::size_t k = 0; k < n; ++k) {
            Reader r(results[k].first, results[k].second);
            set_value(r, first + k);
        }
    }
    /// Settles items first, first + 1, ... from results of `stride` bytes back to back (a packed
    /// chunk of Pool::map).
    virtual void set_packed(const char* results, std::size_t stride, std::size_t n,
                            std::size_t first) {
        for (std::size_t k = 0; k < n; ++k) {
            Reader r(results + k * stride, stride);
            set_value(r, first + k);
        }
    }
    /// Item `index` as the job's submitter counts it, for WorkerEvent::item (a cluster node's
    /// job is one chunk of a job on rank 0).
    virtual std::size_t submitted_index(std::size_t index) const noexcept { return index; }
    /// Whether the caller asked to kill the item's worker (a hard cancel of a running task).
    virtual bool kill_requested() const noexcept { return false; }
    /// Whether its items may be cancelled before they run (a Future): they are then never
    /// queued behind a running chunk, where a worker could claim them after a cancel.
    virtual bool cancellable() const noexcept { return false; }
    /// The pool it was submitted to (a future uses it to wake and to help the pool).
    virtual void bind(const std::shared_ptr<const PoolLink>& /*link*/) {}
    /// The pool will report the job's progress: its caller waits for the final report too.
    virtual void expect_final_progress() noexcept {}
    /// The final progress report was delivered.
    virtual void final_progress_delivered() noexcept {}
};

}  // namespace shmpool::detail
