// Double-buffered slots with real processes: a worker holds the chunk it runs and the next; its
// death settles both exactly once, and an idle worker takes over a chunk queued behind a busy one.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdint>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "tasks.hpp"
#include "test_support.hpp"

namespace {

using shmpool::Pool;
using shmpool::SharedArray;
using shmpool::test::Gate;
using namespace shmpool::test::tasks;

TEST(PoolDoubleBuffer, AWorkerKilledWithAChunkQueuedBehindItsRunningOneSettlesBothOnce) {
    // One worker: chunk [0, 5) runs, held at item 0 by the gate, and chunk [5, 10) waits in the
    // worker's second buffer. The worker is killed there: item 0 is retried, the rest of its chunk
    // and the whole queued chunk run once each on the replacement.
    auto counters = SharedArray<std::int64_t>::create(20);
    Gate gate = Gate::create(shmpool::test::unique_name());
    shmpool::test::Unlinker u{counters.name()};
    Pool pool({.workers = 1, .max_retries = 1});
    std::vector<std::tuple<std::string, std::string, int>> args;
    for (int i = 0; i < 20; ++i)
        args.emplace_back(counters.name(), gate.name(), i);
    std::thread killer([&] {
        if (gate.wait_arrivals(1)) ::kill(pool.worker_pids().at(0), SIGKILL);
        gate.release();
    });
    const auto out = pool.starmap(counted_gated_task, args, 5);
    killer.join();
    for (int i = 0; i < 20; ++i) {
        EXPECT_EQ(out[static_cast<std::size_t>(i)], i * 10);
        EXPECT_EQ(counters[static_cast<std::size_t>(i)], i == 0 ? 2 : 1) << "item " << i;
    }
    EXPECT_EQ(pool.stats().crashes, 1u);
    EXPECT_EQ(pool.stats().retries, 1u);
    EXPECT_EQ(pool.stats().tasks_done, 20u);
}

TEST(PoolDoubleBuffer, AnIdleWorkerTakesOverAChunkQueuedBehindABusyOne) {
    // Two workers, chunks of one item: worker A runs item 0 (held by the gate) with item 2 queued
    // behind it; worker B runs items 1 and 3, then is idle with nothing left in the queue. Item 2
    // must not wait for item 0: B takes it back from A's second buffer while A is still held.
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 2});
    std::vector<std::tuple<std::string, int, int>> args;
    for (int i = 0; i < 4; ++i)
        args.emplace_back(gate.name(), i, 0);
    std::vector<int> out;
    std::thread job([&] { out = pool.starmap(gated_at_task, args, 1); });
    ASSERT_TRUE(gate.wait_arrivals(1));
    // Items 1, 2 and 3 finish while item 0 is still held: only a takeover lets item 2 run.
    const bool others_done =
        shmpool::test::eventually([&] { return pool.stats().tasks_done == 3; });
    const auto reclaimed = pool.stats().reclaimed;
    gate.release();
    job.join();
    EXPECT_TRUE(others_done);
    EXPECT_EQ(reclaimed, 1u);
    EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3}));
}

TEST(PoolDoubleBuffer, AKillMeantForOneItemIsNotChargedToTheNextOne) {
    // One worker, chunks of one item: item 0 runs past task_timeout, survives the SIGTERM and
    // returns; the worker moves on to item 1 (queued behind it), which waits at the gate, and
    // the SIGKILL that follows kill_grace lands there. Item 1 did nothing wrong: it runs again
    // on the replacement, with no attempt counted, even with max_retries = 0.
    using namespace std::chrono_literals;
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 1, .max_retries = 0, .task_timeout = 200ms, .kill_grace = 100ms});
    std::vector<std::tuple<std::string, int>> args{{gate.name(), 0}, {gate.name(), 1}};
    std::thread releaser([&] {
        // Released once the worker held at the gate is gone, so that the kill lands on item 1.
        if (gate.wait_arrivals(1))
            shmpool::test::eventually([&] { return pool.stats().respawns >= 1; });
        gate.release();
    });
    std::vector<int> out;
    try {
        out = pool.starmap(outlive_sigterm_task, args, 1);
    } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
    }
    releaser.join();
    EXPECT_EQ(out, (std::vector<int>{0, 1}));
    EXPECT_EQ(pool.stats().respawns, 1u);
    EXPECT_EQ(pool.stats().crashes, 0u);
    EXPECT_EQ(pool.stats().tasks_failed, 0u);
}

}  // namespace
