// The pipeline walk-through of docs/guide.md, compiled and run by the test suite.
#include <fmt/format.h>

#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

// [guide-pipeline]
#include <shmpool/framework/pipeline.hpp>
#include <shmpool/framework/pool.hpp>

struct Reading {
    long id = 0;
    double celsius = 0;
};

// Stage 1, parallel: text in, a struct out. A line it cannot parse throws: that item fails
// and is reported; the others go on.
Reading parse(const std::string& line) {
    Reading r;
    if (std::sscanf(line.c_str(), "%ld,%lf", &r.id, &r.celsius) != 2)
        throw std::invalid_argument("not 'id,celsius': '" + line + "'");
    return r;
}
SHMPOOL_TASK(parse_task, parse);

// Stage 2, parallel: any pure function of one item.
std::string to_fahrenheit(Reading r) {
    return fmt::format("{} {:.1f}F", r.id, r.celsius * 9 / 5 + 32);
}
SHMPOOL_TASK(fahrenheit_task, to_fahrenheit);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    try {
        std::vector<std::string> lines;  // stands for a file or a socket
        lines.reserve(10'000);
        for (int i = 0; i < 10'000; ++i)
            lines.push_back(i == 4321 ? "oops" : fmt::format("{},{}", i, i % 40));

        std::vector<std::string> out;
        shmpool::Pipeline pipeline({.max_tokens = 32, .max_retries = 1});
        pipeline
            .source([&, next = std::size_t{0}]() mutable -> std::optional<std::string> {
                if (next == lines.size()) return std::nullopt;  // the end of the stream
                return lines[next++];  // called only while fewer than 32 items are in flight
            })
            .stage(parse_task, shmpool::StageMode::parallel, 2)
            .stage(fahrenheit_task, shmpool::StageMode::parallel, 2)
            .sink([&](std::string s) { out.push_back(std::move(s)); });  // in source order

        const shmpool::PipelineStats stats = pipeline.run();  // item failures are not thrown
        fmt::print("{} of {} items, first '{}'\n", stats.completed, stats.produced, out.front());
        for (const shmpool::ItemFailure& f : stats.failures)
            fmt::print("item {} failed in {}: {}\n", f.sequence, f.stage, f.message);
        for (const shmpool::StageStats& s : stats.stages)
            fmt::print("{}: {} items, {} crashes\n", s.task, s.items_out, s.crashes);
    } catch (const std::exception& e) {  // the source or the sink threw, a worker cannot start
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}
// [guide-pipeline]
