// The pipeline example of docs/pipeline.md, compiled and run by the test suite.
// [pipeline-quickstart]
#include <fmt/format.h>

#include <shmpool/framework/pipeline.hpp>
#include <shmpool/framework/pool.hpp>

long square(int x) {
    return static_cast<long>(x) * x;
}
SHMPOOL_TASK(square_task, square);
std::string label(long x) {
    return fmt::format("#{}", x);
}
SHMPOOL_TASK(label_task, label);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // the stage workers are this program, re-executed
    std::vector<std::string> out;
    shmpool::Pipeline p({.max_tokens = 64});
    p.source([i = 0]() mutable -> std::optional<int> {
         if (i == 1000) return std::nullopt;
         return i++;
     })
        .stage(square_task, shmpool::StageMode::parallel, 2)     // two processes
        .stage(label_task, shmpool::StageMode::serial_in_order)  // one process, in order
        .sink([&](std::string s) { out.push_back(std::move(s)); });
    shmpool::PipelineStats stats = p.run();
    fmt::print("{} items, last {}, {} failed\n", stats.completed, out.back(), stats.failed);
}
// [pipeline-quickstart]
