// PipelinePlan: what a Pipeline was built with, handed to each run.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "shmpool/framework/pipeline.hpp"

namespace shmpool::detail {

struct PipelinePlan {
    PipelineOptions options;
    std::function<bool(std::string&)> parent_source;
    std::function<void(Reader&)> parent_sink;
    StageMode sink_mode = StageMode::serial_in_order;
    std::vector<StageSpec> specs;
};

}  // namespace shmpool::detail
