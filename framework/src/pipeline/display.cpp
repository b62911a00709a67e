// PipelineDisplay: the status board's layout and the progress line.
#include "pipeline/display.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "posix/sys.hpp"

namespace shmpool::detail {

// [state, produced, completed, failed, then per stage: task, in, out, failed, queued]
PipelineDisplay::PipelineDisplay(const PipelinePlan& plan, std::optional<ShareableList>& board)
    : plan_(plan), board_(board) {
    if (!plan.options.status_board) return;
    std::vector<Value> values{Value("cancelled"), Value(std::int64_t{0}), Value(std::int64_t{0}),
                              Value(std::int64_t{0})};
    for (const auto& s : plan.specs) {
        values.emplace_back(s.task);
        for (int k = 0; k < 4; ++k)
            values.emplace_back(std::int64_t{0});
    }
    board_.emplace(ShareableList::create(values, {.guarded = true}));
}

void PipelineDisplay::show(const PipelineStats& stats, const std::vector<StageQueue>& queues,
                           bool final) {
    const auto now = std::chrono::steady_clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const std::size_t stages = plan_.specs.size();
    if (board_) {
        auto lock = board_->lock();
        board_->set(0, final ? (stats.cancelled ? "cancelled" : "done") : "running");
        board_->set(1, static_cast<std::int64_t>(stats.produced));
        board_->set(2, static_cast<std::int64_t>(stats.completed));
        board_->set(3, static_cast<std::int64_t>(stats.failed));
        for (std::size_t s = 0; s < stages; ++s) {
            const auto at = 4 + static_cast<std::ptrdiff_t>(s) * 5;
            board_->set(at + 1, static_cast<std::int64_t>(stats.stages[s].items_in));
            board_->set(at + 2, static_cast<std::int64_t>(stats.stages[s].items_out));
            board_->set(at + 3, static_cast<std::int64_t>(stats.stages[s].failed));
            board_->set(at + 4, static_cast<std::int64_t>(queues[s].depth()));
        }
    }
    if (plan_.options.progress_line && sys::isatty(STDERR_FILENO) == 1) {
        std::string line = fmt::format("\rpipeline: {} made", stats.produced);
        for (std::size_t s = 0; s < stages; ++s) {
            line += fmt::format(" | {} {}/{} q{}", plan_.specs[s].task, stats.stages[s].items_out,
                                stats.stages[s].items_in, queues[s].depth());
        }
        line += fmt::format(" | {} done ", stats.completed);
        if (final) line += '\n';
        std::fputs(line.c_str(), stderr);
        std::fflush(stderr);
    }
}

}  // namespace shmpool::detail
