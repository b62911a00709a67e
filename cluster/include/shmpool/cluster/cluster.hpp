// Cluster mode: the same Pool, map and Pipeline code across the nodes of an MPI job.
//
//   mpirun -n 3 --map-by ppr:1:node --bind-to none ./app      (or: shmpool run --hosts a,b,c --
//   ./app)
//
// Link shmpool::cluster (it is linked whole: nothing to call). Rank 0 runs main(); on every other
// rank shmpool::init(argc, argv) runs that node's supervisor and never returns. A Pool created on
// rank 0 then spreads over every node (PoolOptions::cluster): each node runs its own pool of
// workers, so a task that crashes or hangs never takes a rank down. ./app alone, or a job of one
// rank, works exactly as without this library. docs/cluster.md has the rules.
#pragma once

namespace shmpool::cluster {

/// Whether this program runs as rank 0 of a job of several nodes.
bool active() noexcept;
/// The job's nodes, this one included (1 outside a job); on rank 0.
unsigned node_count() noexcept;
/// In a task: the node its worker runs on (0: rank 0's machine, or no job).
unsigned this_node() noexcept;

}  // namespace shmpool::cluster
