// Pipeline steps on other nodes. A chunk of the pipeline's internal step task names token slots
// in rank 0's arena, which no other node sees: sent to a node it travels as each item's bytes
// instead (the stage's task, and its input), the node's worker runs the stage's task on them,
// and rank 0 writes what comes back into the arena, as the step would have (docs/cluster.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "messages.hpp"
#include "parent/job.hpp"
#include "pipeline/arena.hpp"

namespace shmpool::cluster {

constexpr char remote_step_name[] = "shmpool.remote_step";

/// Registers the node side's task (every rank does, at start-up).
void register_remote_step();

/// Whether a chunk is made of pipeline steps.
bool is_pipeline_step(const detail::Chunk& chunk);

/// The items of a chunk of steps, as the remote step task takes them.
void remote_step_items(const detail::Chunk& chunk, const detail::ArenaView& arena,
                       ChunkRequest& request);

/// Writes a node's outputs into the arena; `r.response` becomes the steps' own packed results.
void apply_remote_steps(const detail::Chunk& chunk, const detail::ArenaView& arena, ChunkResult& r);

}  // namespace shmpool::cluster
