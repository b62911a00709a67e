// ChunkExecutor: where the supervisor's chunks run. Today the local slot table (slot_table.hpp);
// a second kind (a node of a cluster) plugs in here without touching the queue, the routing, the
// futures or the pipeline. Called once per round by the holder of the slot lock, never per chunk.
#pragma once

#include "parent/job_queue.hpp"
#include "parent/slot_lock.hpp"

namespace shmpool::detail {

class ChunkExecutor {
  public:
    virtual ~ChunkExecutor() = default;
    /// Hands queued chunks to idle places; true if it gave out any.
    virtual bool dispatch(const SlotsLocked& locked, JobQueue& queue) = 0;
    /// Delivers every finished chunk's results (and requeues what a chunk left undone); true if
    /// there were any.
    virtual bool harvest(const SlotsLocked& locked, JobQueue& queue) = 0;
    /// Whether harvest() has something to do: cheap and lock-free, for threads that help.
    virtual bool has_finished() const noexcept = 0;
};

}  // namespace shmpool::detail
