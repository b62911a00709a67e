// pipeline: produce -> transform -> aggregate, each stage in worker processes, with a status board
// (a guarded ShareableList) that a monitor reads while it runs; the aggregate is checked against
// the same computation done in this process.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <shmpool/framework/pipeline.hpp>
#include <shmpool/framework/pool.hpp>
#include <shmpool/shm/shareable_list.hpp>
#include <string>
#include <thread>

namespace {

// Stage 1, in a worker: the numbers 0, 1, ... PIPELINE_ITEMS - 1. Workers are this program
// re-executed without its arguments, but with its environment: the count travels there.
std::optional<std::uint64_t> produce(std::uint64_t sequence) {
    static const std::uint64_t items =
        std::strtoull(std::getenv("PIPELINE_ITEMS"), nullptr, 10);  // NOLINT(concurrency-mt-unsafe)
    if (sequence >= items) return std::nullopt;
    return sequence;
}
SHMPOOL_TASK(produce_task, produce);

// Stage 2, in parallel workers: some work per item.
std::uint64_t transform(std::uint64_t x) {
    std::uint64_t h = x * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 50; ++i)
        h = (h ^ (h >> 31)) * 0xBF58476D1CE4E5B9ull;
    return h % 1000003;
}
SHMPOOL_TASK(transform_task, transform);

// Stage 3, one worker, in order: a running hash that depends on the order of the items.
std::uint64_t aggregate(std::uint64_t x) {
    static std::uint64_t running = 0;
    running = running * 31 + x;
    return running;
}
SHMPOOL_TASK(aggregate_task, aggregate);

int run(int argc, char** argv) {
    CLI::App app{"A three-stage pipeline across processes, with a status board"};
    std::uint64_t items = 200000;
    unsigned workers = 2;
    app.add_option("--items", items, "items to push through")->check(CLI::Range(1, 100'000'000));
    app.add_option("--workers", workers, "processes of the parallel stage")
        ->check(CLI::Range(1, 64));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        fmt::print(stderr, "pipeline: error: {}\n", e.what());
        return 1;
    }
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before any thread starts; the workers inherit it
    ::setenv("PIPELINE_ITEMS", std::to_string(items).c_str(), 1);

    shmpool::Pipeline pipeline({.max_tokens = 256, .status_board = true, .cancel_on_sigint = true});
    std::uint64_t result = 0;
    std::mutex mutex;
    std::condition_variable changed;
    std::string board;  // the status board's name, once the pipeline runs
    bool finished = false;
    pipeline.source(produce_task)
        .stage(transform_task, shmpool::StageMode::parallel, workers)
        .stage(aggregate_task, shmpool::StageMode::serial_in_order)
        .sink([&](std::uint64_t running) {
            result = running;
            if (board.empty()) {
                std::lock_guard lock(mutex);
                board = pipeline.status_board();
                changed.notify_all();
            }
        });

    // The monitor reads the board as any other process would (`shmpool show NAME` does the
    // same): by name, under the board's lock.
    std::thread monitor([&] {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return finished || !board.empty(); });
        if (board.empty()) return;
        auto list = shmpool::ShareableList::attach(board);
        do {
            lock.unlock();
            {
                auto guard = list.lock();
                // [state, produced, completed, failed, then per stage: task, in, out, failed,
                // queued] (docs/pipeline.md)
                std::string line =
                    fmt::format("monitor: {} produced {} completed {}", shmpool::repr(list.get(0)),
                                shmpool::repr(list.get(1)), shmpool::repr(list.get(2)));
                for (std::ptrdiff_t at = 4; at + 4 < static_cast<std::ptrdiff_t>(list.size());
                     at += 5) {
                    line += fmt::format(" | {} {}/{}", *list.get(at).get_if<std::string>(),
                                        shmpool::repr(list.get(at + 2)),
                                        shmpool::repr(list.get(at + 1)));
                }
                fmt::print("{}\n", line);
            }
            lock.lock();
        } while (!changed.wait_for(lock, std::chrono::milliseconds(200), [&] { return finished; }));
    });

    shmpool::PipelineStats stats;
    try {
        stats = pipeline.run();
    } catch (const std::exception& e) {
        {
            std::lock_guard lock(mutex);
            finished = true;
        }
        changed.notify_all();
        monitor.join();
        fmt::print(stderr, "pipeline: error: {}\n", e.what());
        return 1;
    }
    {
        std::lock_guard lock(mutex);
        finished = true;
    }
    changed.notify_all();
    monitor.join();

    for (const auto& s : stats.stages) {
        fmt::print("stage {}: {} in, {} out, {} failed, busy {:.3f} s, deepest queue {}\n", s.task,
                   s.items_in, s.items_out, s.failed, s.busy_seconds, s.max_queue_depth);
    }
    if (stats.cancelled) {
        fmt::print("cancelled after {} items\n", stats.completed);
        return 1;
    }
    std::uint64_t expected = 0;  // the same three stages, in this process
    for (std::uint64_t i = 0; i < items; ++i)
        expected = expected * 31 + transform(i);
    fmt::print("{} items in {:.3f} s ({:.0f}/s)\n", stats.completed, stats.seconds,
               static_cast<double>(stats.completed) / stats.seconds);
    fmt::print("aggregate: {:016x} expected: {:016x}\n", result, expected);
    const bool ok = result == expected && stats.completed == items && stats.failed == 0;
    fmt::print("{}\n", ok ? "pipeline ok" : "pipeline WRONG");
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process this runs the worker and never returns
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // what run() does not handle itself: a bug, or no memory
        std::fprintf(stderr, "pipeline: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "pipeline: error: unknown exception\n");
    }
    return 1;
}
