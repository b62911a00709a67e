// crash_resilience: a pool survives tasks that segfault, abort, SIGKILL themselves, throw, exit or
// hang.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using namespace std::chrono_literals;

// Fails the way `how` says; each way but "throw" and "hang" takes the worker down with it.
void fail(const std::string& how) {
    if (how == "segfault") {
        volatile int* p = nullptr;
        *p = 1;  // NOLINT: the point is to crash
    }
    if (how == "abort") std::abort();
    if (how == "sigkill") ::kill(::getpid(), SIGKILL);
    if (how == "exit") std::exit(3);  // NOLINT(concurrency-mt-unsafe): the point is to die
    if (how == "throw") throw std::runtime_error("the input was rejected");
    if (how == "hang") std::this_thread::sleep_for(1h);  // far past the pool's task_timeout
}

// x * x, but the first attempt at an item dies the way `how` says. The attempt counters live in
// shared memory because the worker that counted the first attempt does not survive it.
std::int64_t flaky_square(const std::string& counters, std::int64_t x, const std::string& how) {
    auto& attempts = shmpool::SharedArray<std::int64_t>::cached(counters);
    if (__atomic_add_fetch(&attempts[static_cast<std::size_t>(x)], 1, __ATOMIC_SEQ_CST) == 1)
        fail(how);
    return x * x;
}
SHMPOOL_TASK(flaky_square_task, flaky_square);

// Fails on every attempt, so no retry can save it.
std::int64_t doomed(const std::string& how) {
    fail(how);
    return 0;
}
SHMPOOL_TASK(doomed_task, doomed);

std::string describe(const shmpool::WorkerEvent& e) {
    std::string item = e.item ? std::to_string(*e.item) : "-";
    return fmt::format("worker {} pid {} {}, task {} item {}: {}", e.worker, e.pid, e.status,
                       e.task.empty() ? "-" : e.task, item, e.reason);
}

int run() {
    constexpr std::int64_t n = 60;
    // Which items crash on their first attempt, and how: each is retried on a fresh worker.
    const std::vector<std::pair<std::int64_t, std::string>> first_attempt_crashes{
        {7, "segfault"}, {19, "abort"}, {31, "sigkill"}, {43, "exit"}};

    auto counters = shmpool::SharedArray<std::int64_t>::create(n);
    std::vector<std::string> blocks{counters.name()};  // every block this run creates
    std::mutex events_mutex;
    std::vector<shmpool::WorkerEvent> events;  // outlives the pool, which appends from its thread
    bool correct = true;
    shmpool::PoolStats stats;
    try {
        shmpool::Pool pool({.workers = 2,
                            .max_retries = 1,
                            // Pool-wide: every normal item takes microseconds, far below this.
                            .task_timeout = 300ms,
                            .on_worker_exit = [&](const shmpool::WorkerEvent& e) {
                                std::lock_guard lock(events_mutex);
                                events.push_back(e);
                            }});
        blocks.push_back(pool.control_block());

        std::vector<std::tuple<std::string, std::int64_t, std::string>> items;
        for (std::int64_t x = 0; x < n; ++x)
            items.emplace_back(counters.name(), x, "");
        for (const auto& [x, how] : first_attempt_crashes)
            std::get<2>(items[static_cast<std::size_t>(x)]) = how;

        std::vector<std::int64_t> squares = pool.starmap(flaky_square_task, items);
        for (std::int64_t x = 0; x < n; ++x)
            correct = correct && squares[static_cast<std::size_t>(x)] == x * x;
        for (const auto& [x, how] : first_attempt_crashes) {
            std::int64_t tries = counters[static_cast<std::size_t>(x)];
            fmt::print("item {:2} died by {:8} on attempt 1, result {} after {} attempts\n", x, how,
                       squares[static_cast<std::size_t>(x)], tries);
            correct = correct && tries == 2;
        }
        fmt::print("map of {} items: {}\n\n", n, correct ? "every result right" : "WRONG results");

        // Failures no retry can fix reach the caller as exceptions; the pool carries on.
        try {
            pool.submit(doomed_task, std::string("segfault")).get();
            correct = false;
        } catch (const shmpool::WorkerCrashed& e) {
            fmt::print("WorkerCrashed (item {}, {} attempts): {}\n", e.item(), e.attempts(),
                       e.what());
        }
        try {
            pool.submit(doomed_task, std::string("throw")).get();
            correct = false;
        } catch (const shmpool::TaskError& e) {
            fmt::print("TaskError: {}\n", e.what());
        }
        try {
            pool.submit(doomed_task, std::string("hang")).get();
            correct = false;
        } catch (const shmpool::TaskTimeout& e) {
            fmt::print("TaskTimeout: {}\n", e.what());
        }
        stats = pool.stats();
    } catch (const std::exception& e) {  // not expected: a failure the demo did not plan
        fmt::print("unexpected failure: {}\n", e.what());
        correct = false;
    }  // either way, the pool's destructor has stopped the workers and removed its control block
    counters.unlink();

    fmt::print("\npool statistics:\n");
    fmt::print("  tasks_done   {}\n  tasks_failed {}\n  retries      {}\n", stats.tasks_done,
               stats.tasks_failed, stats.retries);
    fmt::print("  crashes      {}\n  respawns     {}\n  timeouts     {}\n", stats.crashes,
               stats.respawns, stats.timeouts);

    // The pool is gone, so nothing appends any more; the lock is for form's sake.
    std::lock_guard lock(events_mutex);
    fmt::print("\n{} worker exits reported to on_worker_exit:\n", events.size());
    for (const auto& e : events)
        fmt::print("  {}\n", describe(e));

    int leaked = 0;
    for (const auto& name : blocks)
        leaked += std::filesystem::exists("/dev/shm/" + name) ? 1 : 0;
    fmt::print("\nresult: {} crashes: {} retries: {} timeouts: {} leaked-segments: {}\n",
               correct ? "correct" : "WRONG", stats.crashes, stats.retries, stats.timeouts, leaked);
    return correct && leaked == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process, this runs the worker and never returns
    try {
        return run();
    } catch (const std::exception& e) {  // what run() does not handle itself: a bug, or no memory
        std::fprintf(stderr, "crash_resilience: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "crash_resilience: error: unknown exception\n");
    }
    return 1;
}
