// NodeSupervisor: what runs in shmpool::init on every rank but 0. It makes the rank's MPI calls on
// its own thread (the main one), opens a local Pool for each pool of rank 0, runs the chunks it
// is sent there, and answers with their results. User code runs only in the local pools'
// workers, never in this process: a task that crashes or hangs never takes the rank down.
#pragma once

#include "mpi/mpi.hpp"

namespace shmpool::cluster {

/// Runs the node until rank 0 ends the job, then exits the process.
[[noreturn]] void run_node(mpi::Launch launch, int argc, char** argv) noexcept;

}  // namespace shmpool::cluster
