// PipelineDisplay: what a running pipeline shows of itself, at most every 100 ms and at its end:
// the status board (a guarded ShareableList that `shmpool show` and CPython read) and the
// one-line progress display on a terminal.
#pragma once

#include <chrono>
#include <optional>
#include <vector>

#include "pipeline/plan.hpp"
#include "pipeline/stage_queue.hpp"
#include "shmpool/shm/shareable_list.hpp"

namespace shmpool::detail {

class PipelineDisplay {
  public:
    /// Creates the status board in `board` when the plan asks for one (it outlives the run).
    PipelineDisplay(const PipelinePlan& plan, std::optional<ShareableList>& board);
    void show(const PipelineStats& stats, const std::vector<StageQueue>& queues, bool final);

  private:
    const PipelinePlan& plan_;
    std::optional<ShareableList>& board_;
    std::chrono::steady_clock::time_point last_{};
};

}  // namespace shmpool::detail
