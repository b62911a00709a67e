// The seam a cluster library plugs into (cluster/, on MPI): the framework holds no network code.
// A library installs one ClusterHook at static initialisation; shmpool::init and every Pool ask
// it whether the program runs as part of a job of several nodes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parent/callback_queue.hpp"
#include "parent/chunk_executor.hpp"
#include "parent/job_queue.hpp"
#include "parent/pool_counters.hpp"
#include "parent/result_router.hpp"
#include "protocol/bell.hpp"
#include "shmpool/framework/pool_options.hpp"

namespace shmpool::detail {

/// What a pool's remote part works with: the parts of the pool on this machine.
struct PoolWiring {
    const PoolOptions& options;  // as validated on this machine
    unsigned requested_workers;  // the user's PoolOptions::workers (0: each node its cores)
    Bell& bell;                  // rung when a remote result is ready to harvest
    JobQueue& queue;
    ResultRouter& router;
    CallbackQueue& callbacks;
};

/// A pool's other nodes.
class RemoteNodes {
  public:
    virtual ~RemoteNodes() = default;
    /// The other nodes' executors; the supervisor runs them in its rounds, after this machine's.
    virtual std::vector<ChunkExecutor*> executors() = 0;
    /// How many other nodes.
    virtual unsigned nodes() const noexcept = 0;
    /// Workers on the other nodes, in all.
    virtual unsigned workers() const = 0;
    /// The other nodes' statistics, in node order (1, 2, ...).
    virtual std::vector<PoolStats> stats() const = 0;
    /// Under the slot lock, once per round: hard cancels of chunks running remotely.
    virtual void kill_cancelled(const SlotsLocked& locked) = 0;
    /// terminate(): items running remotely fail with PoolClosed, the nodes' pools stop now.
    virtual void terminate(const SlotsLocked& locked) = 0;
    /// The pool's work is done: it closes on every node (blocks until they say so).
    virtual void close() noexcept = 0;
};

class ClusterHook {
  public:
    virtual ~ClusterHook() = default;
    /// In shmpool::init, in the user's program (never in a pool's worker): on a node of a job,
    /// runs that node's supervisor and never returns; elsewhere returns at once.
    virtual void init(int argc, char** argv) noexcept = 0;
    /// Whether this program is rank 0 of a job of several nodes.
    virtual bool active() const noexcept = 0;
    /// For a new pool: its other nodes, after opening the pool on each (throws what opening
    /// fails with, say an initializer's TaskError naming the node).
    virtual std::unique_ptr<RemoteNodes> attach(const PoolWiring& wiring) = 0;
    /// Environment variables (by prefix) a worker must not inherit: the job's own.
    virtual std::vector<std::string> private_environment() const = 0;
};

/// Installs the hook (a cluster library calls it once, during static initialisation).
void install_cluster_hook(ClusterHook* hook) noexcept;
/// The installed hook, or null.
ClusterHook* cluster_hook() noexcept;

}  // namespace shmpool::detail
