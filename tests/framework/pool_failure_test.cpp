// How the pool fails, and recovers: tasks that throw, workers that die in every way (retried,
// attributed to their item), timeouts, cancels, arguments that do not fit, start-up errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "tasks.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using namespace shmpool::test::tasks;
using shmpool::Pool;
using shmpool::SharedArray;
using shmpool::test::Gate;

namespace {

int die_on_five(int x) {
    if (x == 5) ::kill(::getpid(), SIGKILL);
    return x;
}
SHMPOOL_TASK(die_on_five_task, die_on_five);

// Throws for odd x with a long message, so that a chunk's error records can fill the slot.
int long_throw_on_odd(int x) {
    if (x % 2) throw std::invalid_argument(std::string(300, 'e') + std::to_string(x));
    return x;
}
SHMPOOL_TASK(long_throw_on_odd_task, long_throw_on_odd);

// The same as counted(), as one trivially copyable argument: map() over these runs packed chunks
// (no per-item encoding), which must attribute a crash to its item just as well.
struct Probe {
    char counters[64];
    int x;
    int victim;
    char how[8];
};
int probed(Probe p) {
    return counted(p.counters, p.x, p.victim, p.how);
}
SHMPOOL_TASK(probed_task, probed);
static_assert(shmpool::detail::packable_v<&probed>);

// Crashes on the first attempt only: the retry succeeds.
int crash_once(std::string counters, int x) {
    auto c = SharedArray<std::int64_t>::attach(counters);
    if (__atomic_add_fetch(&c[static_cast<std::size_t>(x)], 1, __ATOMIC_SEQ_CST) == 1) die("segv");
    return x + 1000;
}
SHMPOOL_TASK(crash_once_task, crash_once);

void failing_setup() {
    throw std::runtime_error("no database");
}
SHMPOOL_TASK(failing_setup_task, failing_setup);

}  // namespace

TEST(Pool, ATaskThatThrowsFailsWithTaskErrorAndTheWorkerLivesOn) {
    Pool pool({.workers = 1});
    int before = pool.submit(pid_task, 0).get();
    try {
        pool.submit(throw_on_odd_task, 3).get();
        ADD_FAILURE() << "no TaskError";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.type(), "std::invalid_argument");
        EXPECT_EQ(e.message(), "odd: 3");
        EXPECT_EQ(e.task(), "throw_on_odd_task");
    }
    EXPECT_EQ(pool.submit(pid_task, 0).get(), before);  // same worker
    EXPECT_EQ(pool.stats().crashes, 0u);
    EXPECT_THROW(pool.map(throw_on_odd_task, iota(10)), shmpool::TaskError);
}

class WorkerDeath : public ::testing::TestWithParam<const char*> {};

TEST_P(WorkerDeath, IsRetriedThenReportedWithItsCauseAndThePoolCarriesOn) {
    auto counters = SharedArray<std::int64_t>::create(100);
    shmpool::test::Unlinker u{counters.name()};
    std::vector<shmpool::WorkerEvent> events;
    std::mutex m;
    Pool pool({.workers = 2,
               .max_retries = 1,
               .task_timeout = std::string(GetParam()) == "hang" ? 300ms : 0ms,
               .on_worker_exit = [&](const shmpool::WorkerEvent& e) {
                   std::lock_guard lock(m);
                   events.push_back(e);
               }});
    std::vector<std::tuple<std::string, int, int, std::string>> args;
    for (int i = 0; i < 100; ++i)
        args.emplace_back(counters.name(), i, 37, GetParam());
    try {
        pool.starmap(counted_task, args, 10);
        ADD_FAILURE() << "the crashing item did not fail";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_EQ(e.item(), 37u);
        EXPECT_EQ(e.attempts(), 2);
        std::string how = GetParam();
        if (how == "segv") {
#ifdef SHMPOOL_TEST_SANITIZED
            EXPECT_TRUE(e.signal() == SIGSEGV || e.exit_code() != 0);  // UBSan reports, then exits
#else
            EXPECT_EQ(e.signal(), SIGSEGV);
#endif
        } else if (how == "abort") {
            EXPECT_EQ(e.signal(), SIGABRT);
        } else if (how == "kill") {
            EXPECT_EQ(e.signal(), SIGKILL);
        } else if (how == "exit") {
            EXPECT_EQ(e.exit_code(), 3);
        }
    } catch (const shmpool::TaskTimeout& e) {
        EXPECT_EQ(std::string(GetParam()), "hang");
    }
    // Only the crashing item ran more than once: the rest of its chunk was requeued, not redone.
    for (int i = 0; i < 100; ++i) {
        if (i == 37) {
            EXPECT_EQ(counters[37], std::string(GetParam()) == "hang" ? 1 : 2);
        } else {
            EXPECT_EQ(counters[static_cast<std::size_t>(i)], 1) << "item " << i;
        }
    }
    auto s = pool.stats();
    EXPECT_EQ(s.tasks_done, 99u);
    EXPECT_EQ(s.tasks_failed, 1u);
    EXPECT_EQ(pool.map(square_task, iota(50)).back(), 49 * 49);  // still usable
    std::lock_guard lock(m);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.front().item, 37u);
    EXPECT_EQ(events.front().task, "counted_task");
    EXPECT_GT(events.front().status.peak_rss_kb, 0);
}

TEST_P(WorkerDeath, InAPackedMapIsAttributedToItsItemAlone) {
    auto counters = SharedArray<std::int64_t>::create(100);
    shmpool::test::Unlinker u{counters.name()};
    const bool hang = std::string(GetParam()) == "hang";
    Pool pool({.workers = 2, .max_retries = 1, .task_timeout = hang ? 300ms : 0ms});
    std::vector<Probe> probes(100);
    for (int i = 0; i < 100; ++i) {
        Probe& p = probes[static_cast<std::size_t>(i)];
        std::snprintf(p.counters, sizeof p.counters, "%s", counters.name().c_str());
        std::snprintf(p.how, sizeof p.how, "%s", GetParam());
        p.x = i;
        p.victim = 37;
    }
    try {
        pool.map(probed_task, probes, 10);
        ADD_FAILURE() << "the crashing item did not fail";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_FALSE(hang);
        EXPECT_EQ(e.item(), 37u);
        EXPECT_EQ(e.attempts(), 2);
    } catch (const shmpool::TaskTimeout& e) {
        EXPECT_TRUE(hang);
        EXPECT_EQ(e.item(), 37u);
    }
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(counters[static_cast<std::size_t>(i)], i == 37 ? (hang ? 1 : 2) : 1) << i;
    EXPECT_EQ(pool.stats().tasks_done, 99u);
    EXPECT_EQ(pool.stats().tasks_failed, 1u);
}

INSTANTIATE_TEST_SUITE_P(EveryKind, WorkerDeath,
                         ::testing::Values("segv", "abort", "kill", "exit", "hang"));

TEST(Pool, AnItemThatCrashesOnceSucceedsOnRetry) {
    auto counters = SharedArray<std::int64_t>::create(10);
    shmpool::test::Unlinker u{counters.name()};
    Pool pool({.workers = 2, .max_retries = 1});
    EXPECT_EQ(pool.submit(crash_once_task, counters.name(), 4).get(), 1004);
    // The retry may run on the other worker before the supervisor replaced the dead one.
    EXPECT_TRUE(shmpool::test::eventually([&] { return pool.stats().respawns >= 1; }));
    auto s = pool.stats();
    EXPECT_EQ(s.crashes, 1u);
    EXPECT_EQ(s.retries, 1u);
    EXPECT_EQ(s.respawns, 1u);
}

TEST(Pool, AWorkerKilledFromOutsideMidMapChangesNothingInTheResult) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 2});
    std::vector<std::tuple<std::string, int, int>> items;
    for (int i = 0; i < 40; ++i)
        items.emplace_back(gate.name(), i, 20);
    std::thread killer([&] {
        // Item 20 waits at the gate: the map is certainly running when a worker is killed.
        if (gate.wait_arrivals(1)) ::kill(pool.worker_pids()[0], SIGKILL);
        gate.release();
    });
    auto out = pool.starmap(gated_at_task, items, 1);
    killer.join();
    for (int i = 0; i < 40; ++i)
        EXPECT_EQ(out[static_cast<std::size_t>(i)], i);
    // The map may end before the supervisor handles a death of a worker that was idle.
    EXPECT_TRUE(shmpool::test::eventually([&] { return pool.stats().respawns >= 1; }));
    EXPECT_EQ(pool.stats().respawns, 1u);
}

TEST(Pool, APackedMapWhoseErrorsFillTheSlotRequeuesTheRest) {
    // Every odd item throws a 300-byte message; a 4 KiB slot holds the records of a few only,
    // so workers end their chunks early and the parent requeues what they did not reach.
    Pool pool({.workers = 2, .slot_bytes = 4096});
    auto input = iota(2000);
    try {
        pool.map(long_throw_on_odd_task, input, 1000);
        ADD_FAILURE() << "no TaskError";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.type(), "std::invalid_argument");
        EXPECT_EQ(e.message(), std::string(300, 'e') + "1");  // the lowest failed item's
    }
    EXPECT_EQ(pool.stats().tasks_done, 1000u);
    EXPECT_EQ(pool.stats().tasks_failed, 1000u);
    auto evens = pool.map(long_throw_on_odd_task, std::vector<int>{0, 2, 4}, 0);
    EXPECT_EQ(evens, (std::vector<int>{0, 2, 4}));
}

TEST(Pool, ImapReportsACrashAtTheItemsPositionInTheInput) {
    Pool pool({.workers = 2, .max_retries = 0});
    std::vector<int> input{1, 2, 3, 4, 5, 6, 7};
    std::size_t seen = 0;
    try {
        for (int v : pool.imap(die_on_five_task, input)) {
            EXPECT_EQ(v, input[seen]);
            ++seen;
        }
        ADD_FAILURE() << "no error";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_EQ(e.item(), 4u);  // the fifth input, though each chunk of imap is a job of its own
        EXPECT_EQ(e.signal(), SIGKILL);
    }
    EXPECT_EQ(seen, 4u);
}

TEST(Pool, AHardCancelKillsOnlyTheWorkerRunningTheTask) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 2});
    auto victim = pool.submit(gated_task, gate.name(), 1);
    ASSERT_TRUE(gate.wait_arrivals(1));  // it runs, and stays until released
    auto other = pool.submit(square_task, 7);
    EXPECT_FALSE(victim.cancel());  // running: only a hard cancel stops it
    EXPECT_TRUE(victim.cancel(true));
    EXPECT_THROW(victim.get(), shmpool::TaskCancelled);
    EXPECT_EQ(other.get(), 49);
    auto s = pool.stats();
    EXPECT_EQ(s.cancelled, 1u);
    EXPECT_EQ(s.crashes, 0u);
    EXPECT_EQ(pool.submit(square_task, 5).get(), 25);
}

TEST(Pool, ACancelledFutureNeverRuns) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 1});
    auto running = pool.submit(gated_task, gate.name(), 200);
    ASSERT_TRUE(gate.wait_arrivals(1));  // the only worker is busy: the next task waits
    auto later = pool.submit(gated_task, gate.name(), 1);
    EXPECT_TRUE(later.cancel());
    EXPECT_THROW(later.get(), shmpool::TaskCancelled);
    gate.release();
    EXPECT_EQ(running.get(), 200);
    EXPECT_FALSE(running.cancel());
    EXPECT_EQ(gate.state().arrivals.load(), 1);  // the cancelled one never ran
}

TEST(Pool, ACancelFromAnotherThreadEndsTheWaitInGet) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 1});
    auto running = pool.submit(gated_task, gate.name(), 300);
    ASSERT_TRUE(gate.wait_arrivals(1));
    auto queued = pool.submit(square_task, 3);
    std::thread canceller([&] { EXPECT_TRUE(queued.cancel()); });  // before or during the get()
    EXPECT_THROW(queued.get(), shmpool::TaskCancelled);
    canceller.join();
    gate.release();
    EXPECT_EQ(running.get(), 300);
}

TEST(Pool, AFailingInitializerFailsPoolCreationWithItsErrorOnce) {
    try {
        Pool pool({.workers = 2, .initializer = failing_setup_task});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.message(), "no database");
        EXPECT_EQ(e.task(), "failing_setup_task");
    }
}

TEST(Pool, AMissingSharedBlockFailsPoolCreationNamingIt) {
    std::string missing = shmpool::test::unique_name();
    try {
        Pool pool({.workers = 1, .shared_blocks = {missing}});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.task(), "PoolOptions::shared_blocks");
        EXPECT_NE(e.message().find(missing), std::string::npos) << e.what();
    }
    EXPECT_THROW(Pool({.workers = 1, .shared_blocks = {"bad/name"}}), std::invalid_argument);
}

TEST(Pool, AWorkerExecutableThatCannotRunIsAClearError) {
    try {
        Pool pool({.workers = 1, .worker_executable = "/nonexistent/worker"});
        ADD_FAILURE() << "the pool started";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/worker"), std::string::npos) << e.what();
    }
}

TEST(Pool, AWorkerProgramOfAnotherLayoutIsRefusedAtOnceNamingBothVersions) {
    // The same worker program built against another version of the pool's protocol.
    try {
        Pool pool({.workers = 2, .worker_executable = shmpool::test::other_layout_worker_path()});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::IncompatibleWorker& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("protocol version 99"), std::string::npos) << what;
        EXPECT_NE(what.find("this program version 3"), std::string::npos) << what;
    }
}
