// The pool's life: closing, joining, terminating, recycling workers, and the parent's death
// taking its workers and its block with it. Start-up has its own file (startup_test.cpp).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pool.hpp"
#include "tasks.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using namespace shmpool::test::tasks;
using shmpool::Pool;
using shmpool::test::Gate;

namespace {

// Grows the worker's resident set by `mb` MiB (kept), returns its pid.
int hog(int mb) {
    static std::vector<std::vector<char>> kept;
    kept.emplace_back(static_cast<std::size_t>(mb) << 20, 'x');
    return ::getpid();
}
SHMPOOL_TASK(hog_task, hog);

}  // namespace

TEST(Pool, AClosedPoolRefusesWork) {
    Pool pool({.workers = 1});
    pool.close();
    EXPECT_THROW(pool.submit(square_task, 1), shmpool::PoolClosed);
}

TEST(Pool, TerminateFailsQueuedWorkWithPoolClosed) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 1});
    auto running = pool.submit(gated_task, gate.name(), 1);
    ASSERT_TRUE(gate.wait_arrivals(1));  // running, and never released: terminate() kills it
    auto queued = pool.submit(square_task, 2);
    pool.terminate();
    EXPECT_THROW(queued.get(), shmpool::PoolClosed);
    EXPECT_THROW(running.get(), shmpool::PoolClosed);
    EXPECT_THROW(pool.submit(square_task, 3), shmpool::PoolClosed);
}

TEST(Pool, TerminateFromAnotherThreadEndsAJoinThatWaitsForWork) {
    // join() waits for the queued work; a terminate() from another thread meanwhile stops the
    // pool once (the two used to stop it side by side).
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 1});
    auto running = pool.submit(gated_task, gate.name(), 1);
    ASSERT_TRUE(gate.wait_arrivals(1));  // never released: only terminate() ends it
    auto queued = pool.submit(square_task, 2);
    pool.close();
    std::thread joiner([&] { pool.join(); });
    pool.terminate();
    joiner.join();
    EXPECT_THROW(queued.get(), shmpool::PoolClosed);
    EXPECT_THROW(running.get(), shmpool::PoolClosed);
}

class ParentDeath : public ::testing::TestWithParam<int> {};

TEST_P(ParentDeath, TakesItsWorkersAndBlocksWithIt) {
    shmpool::test::Child parent({shmpool::test::pool_child_path()}, {"SHMPOOL_TRACKER="});
    auto line = parent.read_line();
    ASSERT_TRUE(line && line->rfind("ready ", 0) == 0) << parent.read_stderr(1s);
    std::istringstream words(line->substr(6));
    std::string block;
    pid_t w1 = 0, w2 = 0;
    words >> block >> w1 >> w2;
    shmpool::test::Unlinker u{block};
    ASSERT_TRUE(shmpool::test::block_exists(block));
    parent.kill(GetParam());
    ASSERT_TRUE(parent.wait());
    EXPECT_TRUE(shmpool::test::wait_for_exit(w1, 5s)) << "orphan worker " << w1;
    EXPECT_TRUE(shmpool::test::wait_for_exit(w2, 5s)) << "orphan worker " << w2;
    EXPECT_TRUE(shmpool::test::wait_for_removal(block, 5s)) << "the control block leaked";
}

INSTANTIATE_TEST_SUITE_P(BySignal, ParentDeath, ::testing::Values(SIGKILL, SIGINT, SIGTERM));

TEST(Pool, WorkersAreRecycledAfterMaxTasks) {
    std::mutex mutex;
    std::vector<shmpool::WorkerEvent> events;
    Pool pool({.workers = 1,
               .on_worker_exit =
                   [&](const shmpool::WorkerEvent& e) {
                       std::lock_guard lock(mutex);
                       events.push_back(e);
                   },
               .max_tasks_per_worker = 5});
    std::set<int> pids;
    for (int i = 0; i < 20; ++i)
        pids.insert(pool.submit(pid_task, i).get());
    EXPECT_EQ(pids.size(), 4u);
    EXPECT_GE(pool.stats().recycled_tasks, 3u);
    EXPECT_EQ(pool.stats().crashes, 0u);
    pool.close();
    pool.join();  // every event delivered
    ASSERT_GE(events.size(), 3u);
    for (const auto& e : events) {
        EXPECT_EQ(e.reason, shmpool::ExitReason::recycled_tasks);
        EXPECT_EQ(e.status, (shmpool::ExitStatus{.exit_code = 0}));
    }
}

TEST(Pool, WorkersAreRecycledPastMaxMemory) {
    Pool pool({.workers = 1, .max_memory_per_worker = std::size_t{64} << 20});
    int first = pool.submit(hog_task, 100).get();
    int second = pool.submit(hog_task, 1).get();
    EXPECT_NE(first, second);
    EXPECT_EQ(pool.stats().recycled_memory, 1u);
}
