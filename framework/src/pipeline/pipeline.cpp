// Pipeline: the builder (types checked stage by stage) and run(), which hands the plan to a
// PipelineRun (run.hpp).
#include "shmpool/framework/pipeline.hpp"

#include <fmt/format.h>

#include <atomic>
#include <optional>
#include <stdexcept>

#include "pipeline/arena.hpp"
#include "pipeline/run.hpp"
#include "pipeline/step_events.hpp"
#include "shmpool/shm/shareable_list.hpp"

namespace shmpool {

struct Pipeline::Impl {
    detail::PipelinePlan plan;
    std::optional<std::type_index> out_type;  // what the last part added produces
    bool ran = false;
    std::atomic<bool> cancelled{false};
    detail::StepEvents events;
    std::optional<ShareableList> board;  // lives until the Pipeline goes

    void check_type(std::type_index in, const std::string& what) const {
        if (!out_type)
            throw std::logic_error(fmt::format("pipeline: {} comes before any source", what));
        if (*out_type == typeid(void))
            throw std::logic_error(
                fmt::format("pipeline: {} follows a stage that returns void", what));
        if (*out_type != in)
            throw std::logic_error(fmt::format(
                "pipeline: {} takes a different type from what the stage before it produces",
                what));
    }
};

Pipeline::Pipeline(PipelineOptions options) : impl_(std::make_unique<Impl>()) {
    if (options.token_bytes == 0 || options.token_bytes > (std::size_t{1} << 30))
        throw std::invalid_argument("PipelineOptions::token_bytes must be between 1 and 1 GiB");
    if (options.max_tokens > (std::size_t{1} << 20))
        throw std::invalid_argument("PipelineOptions::max_tokens is over 1,048,576");
    impl_->plan.options = options;
    detail::register_pipeline_step();
}

Pipeline::~Pipeline() {
    if (impl_->board) {
        try {
            impl_->board->unlink();
        } catch (const std::exception&) {  // removed by someone else: nothing to do
        }
    }
}

void Pipeline::set_source(std::function<bool(std::string&)> next, std::type_index type) {
    Impl& m = *impl_;
    if (m.out_type) throw std::logic_error("pipeline: the source must come first, and only once");
    m.plan.parent_source = std::move(next);
    m.out_type = type;
}

void Pipeline::add_stage(detail::StageSpec spec, std::type_index in, std::type_index out) {
    Impl& m = *impl_;
    if (spec.source) {
        if (m.out_type)
            throw std::logic_error("pipeline: the source must come first, and only once");
    } else {
        m.check_type(in, fmt::format("stage '{}'", spec.task));
    }
    if (m.plan.parent_sink) throw std::logic_error("pipeline: no stage can follow the sink");
    if (m.plan.specs.size() == detail::max_pipeline_stages)
        throw std::logic_error(
            fmt::format("pipeline: more than {} stages", detail::max_pipeline_stages));
    if (spec.task.size() >= detail::stage_task_chars)
        throw std::invalid_argument(fmt::format("pipeline: task name '{}' is too long", spec.task));
    if (spec.mode != StageMode::parallel) spec.workers = 1;
    if (spec.workers == 0)
        throw std::invalid_argument(fmt::format("pipeline: stage '{}' has no workers", spec.task));
    m.plan.specs.push_back(std::move(spec));
    m.out_type = out;
}

void Pipeline::set_sink(std::function<void(Reader&)> consume, std::type_index type,
                        StageMode mode) {
    Impl& m = *impl_;
    m.check_type(type, "the sink");
    if (m.plan.parent_sink) throw std::logic_error("pipeline: only one sink");
    m.plan.parent_sink = std::move(consume);
    m.plan.sink_mode = mode;
}

void Pipeline::cancel() noexcept {
    impl_->cancelled.store(true);
    impl_->events.cv.notify_all();
}

std::string Pipeline::status_board() const {
    return impl_->board ? impl_->board->name() : std::string{};
}

PipelineStats Pipeline::run() {
    Impl& m = *impl_;
    if (m.ran) throw std::logic_error("pipeline: run() was already called");
    if (m.plan.specs.empty()) throw std::logic_error("pipeline: no stage runs in a worker");
    if (!m.plan.parent_source && !m.plan.specs.front().source)
        throw std::logic_error("pipeline: no source");
    m.ran = true;
    detail::PipelineRun run(m.plan, m.cancelled, m.events, m.board);
    return run.run();
}

}  // namespace shmpool
