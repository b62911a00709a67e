// Workers that die before they report ready: killed from outside or by themselves, by several
// signals or an exit, while a pool or a pipeline starts and while a running pool replaces one.
// Real processes and real signals; the start-up gate (gate.hpp) says when and how they die.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pipeline.hpp"
#include "shmpool/framework/pool.hpp"
#include "test_support.hpp"

using shmpool::Pool;
using shmpool::PoolOptions;
using shmpool::WorkerEvent;
using shmpool::WorkerStartFailed;
using shmpool::test::Gate;
using shmpool::test::start_gate_name;

namespace {

long startup_square(int x) {
    return static_cast<long>(x) * x;
}
SHMPOOL_TASK(startup_square_task, startup_square);

long startup_plus_one(long x) {
    return x + 1;
}
SHMPOOL_TASK(startup_plus_one_task, startup_plus_one);

std::vector<int> iota(int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
        v[static_cast<std::size_t>(i)] = i;
    return v;
}

void expect_squares(Pool& pool, int n) {
    std::vector<long> got = pool.map(startup_square_task, iota(n), 1);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
        EXPECT_EQ(got[static_cast<std::size_t>(i)], static_cast<long>(i) * i);
}

// Worker events, collected from the pool's supervisor thread.
struct EventLog {
    std::mutex mutex;
    std::vector<WorkerEvent> events;
    std::function<void(const WorkerEvent&)> callback() {
        return [this](const WorkerEvent& e) {
            std::lock_guard lock(mutex);
            events.push_back(e);
        };
    }
    std::size_t count(shmpool::ExitReason reason) {
        std::lock_guard lock(mutex);
        return static_cast<std::size_t>(
            std::count_if(events.begin(), events.end(),
                          [&](const WorkerEvent& e) { return e.reason == reason; }));
    }
};

// How a worker dies at start-up: by a signal, or by exiting with a status (signal 0).
struct Death {
    int signal;
    int exit_code;
};

class StartUpDeath : public ::testing::TestWithParam<Death> {};

TEST_P(StartUpDeath, IsReplacedAndThePoolComesUp) {
    const Death how = GetParam();
    Gate gate = Gate::create(start_gate_name());
    gate.state().deaths_left = 4;  // spread over two workers: never five in a row for one
    gate.state().death_signal = how.signal;
    gate.state().death_exit_code = how.exit_code;
    EventLog log;
    Pool pool({.workers = 2, .on_worker_exit = log.callback()});
    expect_squares(pool, 20);
    const shmpool::PoolStats stats = pool.stats();
    EXPECT_EQ(stats.start_failures, 4u);
    EXPECT_EQ(stats.respawns, 4u);
    EXPECT_EQ(stats.crashes, 0u);
    ASSERT_EQ(log.count(shmpool::ExitReason::start_failed), 4u);
    std::lock_guard lock(log.mutex);
    for (const WorkerEvent& e : log.events) {
        EXPECT_EQ(e.status.signal, how.signal);
        if (how.signal == 0) {
            EXPECT_EQ(e.status.exit_code, how.exit_code);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(ByItself, StartUpDeath,
                         ::testing::Values(Death{SIGKILL, -1}, Death{SIGTERM, -1},
                                           Death{SIGABRT, -1}, Death{0, 3}));

class KilledFromOutside : public ::testing::TestWithParam<int> {};

TEST_P(KilledFromOutside, WhileStartingAWorkerIsReplacedAndThePoolComesUp) {
    const int signal = GetParam();
    Gate gate = Gate::create(start_gate_name());
    gate.state().hold = 1;  // every worker waits at the gate, where the test can kill it
    std::vector<pid_t> killed;
    std::thread killer([&] {
        for (int k = 0; k < 3 && gate.wait_arrivals(k + 1); ++k) {
            killed.push_back(gate.arrival(k));
            ::kill(gate.arrival(k), signal);
        }
        gate.release();
    });
    EventLog log;
    {
        // Created on this thread, which outlives it (the workers die with the thread that
        // started them).
        Pool pool({.workers = 1, .on_worker_exit = log.callback()});
        killer.join();
        ASSERT_EQ(killed.size(), 3u);
        expect_squares(pool, 10);
        EXPECT_EQ(pool.stats().start_failures, 3u);
        for (pid_t pid : killed)
            EXPECT_NE(pool.worker_pids()[0], pid);
    }
    ASSERT_EQ(log.count(shmpool::ExitReason::start_failed), 3u);
    std::lock_guard lock(log.mutex);
    for (std::size_t k = 0; k < 3; ++k) {
        EXPECT_EQ(log.events[k].status.signal, signal);
        EXPECT_EQ(log.events[k].pid, killed[k]);
    }
}

INSTANTIATE_TEST_SUITE_P(BySignal, KilledFromOutside, ::testing::Values(SIGKILL, SIGTERM, SIGINT));

TEST(PoolStartUp, PoolsCreatedOverAndOverWithAWorkerKilledAsItStartsAllComeUp) {
    for (int round = 0; round < 10; ++round) {
        Gate gate = Gate::create(start_gate_name());
        gate.state().hold = 1;
        std::thread killer([&] {
            if (gate.wait_arrivals(1)) ::kill(gate.arrival(0), SIGKILL);
            gate.release();
        });
        Pool pool({.workers = 2});
        killer.join();
        expect_squares(pool, 8);
        EXPECT_EQ(pool.stats().start_failures, 1u) << "round " << round;
    }
}

TEST(PoolStartUp, AWorkerThatCanNeverStartFailsCreationNamingEachAttempt) {
    Gate gate = Gate::create(start_gate_name());
    gate.state().deaths_left = 1'000'000;
    gate.state().death_signal = SIGKILL;
    try {
        Pool pool({.workers = 2, .max_start_failures = 3});
        ADD_FAILURE() << "the pool started";
    } catch (const WorkerStartFailed& e) {
        ASSERT_EQ(e.attempts().size(), 3u);
        for (const auto& a : e.attempts()) {
            EXPECT_EQ(a.status.signal, SIGKILL);
            EXPECT_FALSE(a.reached_init);
        }
        const std::string what = e.what();
        EXPECT_NE(what.find("failed to start 3 times in a row"), std::string::npos) << what;
        EXPECT_NE(what.find("killed by SIGKILL"), std::string::npos) << what;
        // A signal may come from outside: no guess about the program.
        EXPECT_EQ(what.find("does the program's main()"), std::string::npos) << what;
    }
}

TEST(PoolStartUp, AProgramThatExitsBeforeInitFailsAfterFiveAttemptsWithTheHint) {
    try {
        Pool pool({.workers = 1, .worker_executable = "/bin/true"});
        ADD_FAILURE() << "the pool started";
    } catch (const WorkerStartFailed& e) {
        ASSERT_EQ(e.attempts().size(), 5u);  // the default max_start_failures
        for (const auto& a : e.attempts())
            EXPECT_EQ(a.status, (shmpool::ExitStatus{.exit_code = 0})) << to_string(a.status);
        EXPECT_EQ(e.worker(), 0u);
        EXPECT_EQ(e.executable(), "/bin/true");
        const std::string what = e.what();
        EXPECT_NE(what.find("exited with status 0 before it reached shmpool::init"),
                  std::string::npos)
            << what;
        EXPECT_NE(what.find("call shmpool::init(argc, argv) first?"), std::string::npos) << what;
    }
}

TEST(PoolStartUp, ZeroStartFailuresAllowedIsRefused) {
    EXPECT_THROW(Pool({.max_start_failures = 0}), std::invalid_argument);
}

TEST(PoolStartUp, ARunningPoolReplacesAWorkerThatDiesAsItRestarts) {
    EventLog log;
    Pool pool({.workers = 1, .on_worker_exit = log.callback()});
    expect_squares(pool, 4);
    Gate gate = Gate::create(start_gate_name());
    gate.state().deaths_left = 2;
    gate.state().death_signal = SIGTERM;
    const pid_t first = pool.worker_pids()[0];
    ::kill(first, SIGKILL);
    ASSERT_TRUE(shmpool::test::wait_for_exit(first, std::chrono::seconds(30)));
    expect_squares(pool, 4);  // the third replacement starts
    const shmpool::PoolStats stats = pool.stats();
    EXPECT_EQ(stats.start_failures, 2u);
    EXPECT_EQ(stats.respawns, 3u);
    EXPECT_EQ(log.count(shmpool::ExitReason::start_failed), 2u);
    EXPECT_EQ(log.count(shmpool::ExitReason::crashed), 1u);
}

TEST(PoolStartUp, ARunningPoolGivesUpOnAWorkerThatCannotRestartAndFailsItsWorkClearly) {
    Pool pool({.workers = 1, .max_start_failures = 3});
    expect_squares(pool, 4);
    Gate gate = Gate::create(start_gate_name());
    gate.state().deaths_left = 1'000'000;
    gate.state().death_signal = SIGKILL;
    auto queued = pool.submit(startup_square_task, 7);  // may be running when the worker dies
    ::kill(pool.worker_pids()[0], SIGKILL);
    try {
        // Queued before the pool gave up, or submitted after: the same error either way.
        (void)queued.get();
        (void)pool.submit(startup_square_task, 8).get();
        ADD_FAILURE() << "work ran without a worker";
    } catch (const WorkerStartFailed& e) {
        EXPECT_EQ(e.attempts().size(), 3u);
    }
    EXPECT_EQ(pool.stats().start_failures, 3u);
}

// Stage pools start inside run(): their workers may die on the way too.
TEST(PipelineStartUp, StageWorkersKilledAsTheyStartAreReplacedAndEveryItemArrives) {
    Gate gate = Gate::create(start_gate_name());
    gate.state().deaths_left = 3;
    gate.state().death_signal = SIGKILL;
    shmpool::Pipeline p;
    int next = 0;
    long sum = 0;
    std::size_t count = 0;
    p.source([&]() -> std::optional<int> {
         if (next == 500) return std::nullopt;
         return next++;
     })
        .stage(startup_square_task, shmpool::StageMode::parallel, 2)
        .stage(startup_plus_one_task, shmpool::StageMode::serial_in_order)
        .sink([&](long v) {
            sum += v;
            ++count;
        });
    const shmpool::PipelineStats stats = p.run();
    EXPECT_EQ(stats.failed, 0u);
    EXPECT_EQ(count, 500u);
    long expected = 0;
    for (long i = 0; i < 500; ++i)
        expected += i * i + 1;
    EXPECT_EQ(sum, expected);
    EXPECT_LE(gate.state().deaths_left.load(), 0);  // all three deaths happened
}

}  // namespace
