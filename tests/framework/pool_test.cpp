// The worker pool: results, errors, every kind of worker death, retries, attribution inside a
// chunk, timeouts, shared arrays, and no orphans or leaks when the parent is killed.
#include "shmpool/framework/pool.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <ranges>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "shmpool/framework/shared_array.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using shmpool::Pool;
using shmpool::SharedArray;

namespace {

int square(int x) {
    return x * x;
}
SHMPOOL_TASK(square_task, square);

// Work of a known minimum length: spins until the shared clock moved by `us` microseconds.
int spin_for(int us) {
    const std::uint64_t until =
        shmpool::detail::monotonic_ns() + static_cast<std::uint64_t>(us) * 1000;
    while (shmpool::detail::monotonic_ns() < until) {
    }
    return us;
}
SHMPOOL_TASK(spin_for_task, spin_for);

int die_on_five(int x) {
    if (x == 5) ::kill(::getpid(), SIGKILL);
    return x;
}
SHMPOOL_TASK(die_on_five_task, die_on_five);

std::string shout(const std::string& s, int times) {
    std::string out;
    for (int i = 0; i < times; ++i)
        out += s + "!";
    return out;
}
SHMPOOL_TASK(shout_task, shout);

int throw_on_odd(int x) {
    if (x % 2) throw std::invalid_argument("odd: " + std::to_string(x));
    return x;
}
SHMPOOL_TASK(throw_on_odd_task, throw_on_odd);

long twice(long x) {
    return 2 * x;
}
SHMPOOL_TASK(twice_task, twice);

int my_pid(int) {
    return ::getpid();
}
SHMPOOL_TASK(pid_task, my_pid);

// Dies in the way `how` says when x == victim; counts every call in counters[x].
void die(const std::string& how) {
    if (how == "segv") {
        volatile int* p = nullptr;
        *p = 1;  // NOLINT: the point is to crash
    }
    if (how == "abort") std::abort();
    if (how == "kill") ::kill(::getpid(), SIGKILL);
    if (how == "exit") std::exit(3);
    if (how == "hang") std::this_thread::sleep_for(std::chrono::hours(1));
}

int counted(std::string counters, int x, int victim, std::string how) {
    auto c = SharedArray<std::int64_t>::attach(counters);
    __atomic_add_fetch(&c[static_cast<std::size_t>(x)], 1, __ATOMIC_SEQ_CST);
    if (x == victim) die(how);
    return x * 10;
}
SHMPOOL_TASK(counted_task, counted);

// The same as one trivially copyable argument: map() over these runs packed chunks (no per-item
// encoding), which must attribute a crash to its item just as well.
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

// Throws for odd x with a long message, so that a chunk's error records can fill the slot.
int long_throw_on_odd(int x) {
    if (x % 2) throw std::invalid_argument(std::string(300, 'e') + std::to_string(x));
    return x;
}
SHMPOOL_TASK(long_throw_on_odd_task, long_throw_on_odd);

// A void packed task: counts its calls in a block shared with the pool.
void tally(int x) {
    auto& b = shmpool::shared_block(std::getenv("TALLY_BLOCK"));  // NOLINT(concurrency-mt-unsafe)
    __atomic_add_fetch(reinterpret_cast<std::int64_t*>(b.data()) + x, 1, __ATOMIC_SEQ_CST);
}
SHMPOOL_TASK(tally_task, tally);

// Crashes on the first attempt only: the retry succeeds.
int crash_once(std::string counters, int x) {
    auto c = SharedArray<std::int64_t>::attach(counters);
    if (__atomic_add_fetch(&c[static_cast<std::size_t>(x)], 1, __ATOMIC_SEQ_CST) == 1) die("segv");
    return x + 1000;
}
SHMPOOL_TASK(crash_once_task, crash_once);

void fill(std::string array, std::size_t begin, std::size_t end) {
    auto& a = SharedArray<double>::cached(array);
    for (std::size_t i = begin; i < end; ++i)
        a[i] = static_cast<double>(i) * 0.5;
}
SHMPOOL_TASK(fill_task, fill);

int sleepy(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
SHMPOOL_TASK(sleepy_task, sleepy);

// Raises flag[0], then sleeps: a running task to cancel.
int wait_forever(std::string flag) {
    SharedArray<std::int64_t>::cached(flag)[0] = 1;
    std::this_thread::sleep_for(std::chrono::hours(1));
    return 0;
}
SHMPOOL_TASK(wait_forever_task, wait_forever);

int initialized = 0;
void setup() {
    initialized = 42;
}
SHMPOOL_TASK(setup_task, setup);
int read_initialized(int) {
    return initialized;
}
SHMPOOL_TASK(read_initialized_task, read_initialized);
void failing_setup() {
    throw std::runtime_error("no database");
}
SHMPOOL_TASK(failing_setup_task, failing_setup);

// Grows the worker's resident set by `mb` MiB (kept), returns its pid.
int hog(int mb) {
    static std::vector<std::vector<char>> kept;
    kept.emplace_back(static_cast<std::size_t>(mb) << 20, 'x');
    return ::getpid();
}
SHMPOOL_TASK(hog_task, hog);

int tbb_threads(int) {
    return tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
}
SHMPOOL_TASK(tbb_threads_task, tbb_threads);

// Reads the first double of a block shared with the pool (attached by the worker at start-up).
double first_of(std::string name) {
    return *reinterpret_cast<const double*>(shmpool::shared_block(name).data());
}
SHMPOOL_TASK(first_of_task, first_of);

// Item 20 raises flag[0] and sleeps, so that a test can act while it runs.
int flagged(std::string flag, int x) {
    if (x == 20) {
        __atomic_store_n(&SharedArray<std::int64_t>::cached(flag)[0], 1, __ATOMIC_RELEASE);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return x;
}
SHMPOOL_TASK(flagged_task, flagged);

std::vector<int> iota(int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    return v;
}

}  // namespace

TEST(Pool, SubmitRunsTheTaskInAWorkerAndReturnsItsResult) {
    Pool pool({.workers = 2});
    auto f = pool.submit(square_task, 7);
    EXPECT_EQ(f.get(), 49);
    EXPECT_EQ(pool.submit(shout_task, std::string("hey"), 2).get(), "hey!hey!");
    int worker = pool.submit(pid_task, 0).get();
    auto pids = pool.worker_pids();
    EXPECT_NE(worker, ::getpid());
    EXPECT_NE(std::find(pids.begin(), pids.end(), worker), pids.end());
}

TEST(Pool, ManyFuturesAllResolve) {
    Pool pool({.workers = 2});
    std::vector<shmpool::Future<int>> futures;
    for (int i = 0; i < 500; ++i)
        futures.push_back(pool.submit(square_task, i));
    for (int i = 0; i < 500; ++i)
        ASSERT_EQ(futures[static_cast<std::size_t>(i)].get(), i * i);
    EXPECT_EQ(pool.stats().tasks_done, 500u);
}

TEST(Pool, BusySecondsCountTheWorkersTimeOnTasks) {
    Pool unmeasured({.workers = 1});
    unmeasured.submit(spin_for_task, 1000).get();
    EXPECT_EQ(unmeasured.stats().busy_seconds, 0.0);  // measure_busy is off by default

    Pool pool({.workers = 2, .measure_busy = true});
    EXPECT_EQ(pool.stats().busy_seconds, 0.0);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int> work(40, 1000);  // 40 ms of work in all
    pool.map(spin_for_task, work, 1);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double busy = pool.stats().busy_seconds;
    EXPECT_GE(busy, 0.040);     // every task spun at least its millisecond
    EXPECT_LE(busy, 2 * wall);  // two workers cannot be busy longer than the job took, each
}

TEST(Pool, MapKeepsInputOrderForEveryChunkSize) {
    Pool pool({.workers = 2});
    auto input = iota(1000);
    for (std::size_t chunk : {0u, 1u, 7u, 1000u}) {
        auto out = pool.map(square_task, input, chunk);
        ASSERT_EQ(out.size(), input.size());
        for (std::size_t i = 0; i < out.size(); ++i)
            ASSERT_EQ(out[i], input[i] * input[i]) << "chunksize " << chunk;
    }
    EXPECT_TRUE(pool.map(square_task, std::vector<int>{}).empty());
}

TEST(Pool, AHundredThousandItemMap) {
    Pool pool({.workers = 2});
    std::vector<long> input(100000);
    std::iota(input.begin(), input.end(), 0L);
    auto out = pool.map(twice_task, input);
    ASSERT_EQ(out.size(), 100000u);
    for (std::size_t i = 0; i < out.size(); ++i)
        ASSERT_EQ(out[i], 2 * input[i]);
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

TEST(Pool, APackedMapOfAVoidTaskRunsEveryItemOnce) {
    shmpool::SharedMemory block = shmpool::SharedMemory::create(1000 * sizeof(std::int64_t));
    shmpool::test::Unlinker u{block.name()};
    ::setenv("TALLY_BLOCK", block.name().c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
    Pool pool({.workers = 2, .shared_blocks = {block.name()}});
    pool.map(tally_task, iota(1000));
    auto* counts = reinterpret_cast<const std::int64_t*>(block.data());
    for (std::size_t i = 0; i < 1000; ++i)
        ASSERT_EQ(counts[i], 1) << i;
}

TEST(Pool, ASlotSizeThatIsNotAMultipleOf64Works) {
    Pool pool({.workers = 2, .slot_bytes = 5001});  // slots stay aligned (UBSan checks it)
    auto out = pool.map(square_task, iota(3000), 7);
    EXPECT_EQ(out.back(), 2999 * 2999);
}

TEST(Pool, StarmapUnpacksArgumentTuples) {
    Pool pool({.workers = 2});
    std::vector<std::tuple<std::string, int>> args{{"a", 1}, {"b", 3}};
    EXPECT_EQ(pool.starmap(shout_task, args), (std::vector<std::string>{"a!", "b!b!b!"}));
}

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
    EXPECT_GT(events.front().peak_rss_kb, 0);
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
    auto s = pool.stats();
    EXPECT_EQ(s.crashes, 1u);
    EXPECT_EQ(s.retries, 1u);
    EXPECT_EQ(s.respawns, 1u);
}

TEST(Pool, AWorkerKilledFromOutsideMidMapChangesNothingInTheResult) {
    auto flag = SharedArray<std::int64_t>::create(1);
    shmpool::test::Unlinker u{flag.name()};
    Pool pool({.workers = 2});
    std::vector<std::tuple<std::string, int>> items;
    for (int i = 0; i < 40; ++i)
        items.emplace_back(flag.name(), i);
    std::thread killer([&] {
        // Item 20 raises the flag and then sleeps: the map is certainly running when the
        // worker is killed (a bounded wait on the task's own signal, not a guess).
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (__atomic_load_n(&flag[0], __ATOMIC_ACQUIRE) == 0 &&
               std::chrono::steady_clock::now() < deadline) {
            std::this_thread::yield();
        }
        ::kill(pool.worker_pids()[0], SIGKILL);
    });
    auto out = pool.starmap(flagged_task, items, 1);
    killer.join();
    ASSERT_EQ(flag[0], 1);
    for (int i = 0; i < 40; ++i)
        EXPECT_EQ(out[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(pool.stats().respawns, 1u);
}

TEST(Pool, ForEachIndexFillsASharedArray) {
    auto array = SharedArray<double>::create(100000);
    shmpool::test::Unlinker u{array.name()};
    Pool pool({.workers = 2});
    pool.for_each_index(fill_task, array.size(), 0, array.name());  // grain 0: automatic
    for (std::size_t i = 0; i < array.size(); ++i)
        ASSERT_EQ(array[i], static_cast<double>(i) * 0.5);
}

TEST(Pool, ACancelledFutureNeverRuns) {
    Pool pool({.workers = 1});
    auto slow = pool.submit(sleepy_task, 200);
    auto later = pool.submit(sleepy_task, 1);
    EXPECT_TRUE(later.cancel());
    EXPECT_THROW(later.get(), shmpool::TaskCancelled);
    EXPECT_EQ(slow.get(), 200);
    EXPECT_FALSE(slow.cancel());
}

TEST(Pool, AClosedPoolRefusesWork) {
    Pool pool({.workers = 1});
    pool.close();
    EXPECT_THROW(pool.submit(square_task, 1), shmpool::PoolClosed);
}

TEST(Pool, TerminateFailsQueuedWorkWithPoolClosed) {
    Pool pool({.workers = 1});
    auto running = pool.submit(sleepy_task, 5000);
    auto queued = pool.submit(square_task, 2);
    pool.terminate();
    EXPECT_THROW(queued.get(), shmpool::PoolClosed);
    EXPECT_THROW(running.get(), shmpool::PoolClosed);
}

TEST(Pool, AWorkerProgramThatDoesNotCallInitFailsPoolCreationClearly) {
    try {
        Pool pool({.workers = 1, .worker_executable = "/bin/true"});
        ADD_FAILURE() << "the pool started";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("shmpool::init"), std::string::npos) << e.what();
    }
}

TEST(Pool, ArgumentsTooLargeForTheSlotFailOnlyThatItem) {
    Pool pool({.workers = 1, .slot_bytes = 4096});
    EXPECT_THROW(pool.submit(shout_task, std::string(10000, 'x'), 1).get(), std::length_error);
    EXPECT_THROW(pool.submit(shout_task, std::string(1000, 'x'), 5).get(),
                 shmpool::TaskError);  // result too big
    EXPECT_EQ(pool.submit(square_task, 3).get(), 9);
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

TEST(Pool, ForEachIndexOverAGibibyteArray) {
    auto array = SharedArray<double>::create((std::size_t{1} << 30) / sizeof(double));
    shmpool::test::Unlinker u{array.name()};
    Pool pool({.workers = 2});
    pool.for_each_index(fill_task, array.size(), array.size() / 16, array.name());
    for (std::size_t i = 0; i < array.size(); i += 4099)
        ASSERT_EQ(array[i], static_cast<double>(i) * 0.5) << i;
    EXPECT_EQ(array[array.size() - 1], static_cast<double>(array.size() - 1) * 0.5);
}

TEST(Pool, AHardCancelKillsOnlyTheWorkerRunningTheTask) {
    auto flag = SharedArray<std::int64_t>::create(1);
    shmpool::test::Unlinker u{flag.name()};
    Pool pool({.workers = 2});
    auto victim = pool.submit(wait_forever_task, flag.name());
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (__atomic_load_n(&flag[0], __ATOMIC_ACQUIRE) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();  // waits for the task's own signal that it runs, with a bound
    }
    ASSERT_EQ(flag[0], 1);
    auto other = pool.submit(sleepy_task, 50);
    EXPECT_FALSE(victim.cancel());  // running: only a hard cancel stops it
    EXPECT_TRUE(victim.cancel(true));
    EXPECT_THROW(victim.get(), shmpool::TaskCancelled);
    EXPECT_EQ(other.get(), 50);
    auto s = pool.stats();
    EXPECT_EQ(s.cancelled, 1u);
    EXPECT_EQ(s.crashes, 0u);
    EXPECT_EQ(pool.submit(square_task, 5).get(), 25);
}

TEST(Pool, WorkersAreRecycledAfterMaxTasks) {
    Pool pool({.workers = 1, .max_tasks_per_worker = 5});
    std::set<int> pids;
    for (int i = 0; i < 20; ++i)
        pids.insert(pool.submit(pid_task, i).get());
    EXPECT_EQ(pids.size(), 4u);
    EXPECT_GE(pool.stats().recycled_tasks, 3u);
    EXPECT_EQ(pool.stats().crashes, 0u);
}

TEST(Pool, WorkersAreRecycledPastMaxMemory) {
    Pool pool({.workers = 1, .max_memory_per_worker = std::size_t{64} << 20});
    int first = pool.submit(hog_task, 100).get();
    int second = pool.submit(hog_task, 1).get();
    EXPECT_NE(first, second);
    EXPECT_EQ(pool.stats().recycled_memory, 1u);
}

TEST(Pool, TheInitializerRunsInEveryWorkerBeforeItsTasks) {
    Pool pool({.workers = 2, .initializer = setup_task});
    for (int v : pool.map(read_initialized_task, iota(20), 1))
        EXPECT_EQ(v, 42);
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

TEST(Pool, ImapYieldsInInputOrderLazily) {
    Pool pool({.workers = 2});
    std::vector<int> got;
    for (int v : pool.imap(square_task, iota(100), 3))
        got.push_back(v);
    ASSERT_EQ(got.size(), 100u);
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
}

TEST(Pool, ImapUnorderedYieldsEveryResultOnce) {
    Pool pool({.workers = 2});
    std::vector<int> ms{60, 1, 1, 1, 1, 1};
    std::vector<int> got;
    for (int v : pool.imap_unordered(sleepy_task, ms))
        got.push_back(v);
    EXPECT_NE(got.front(), 60);  // the slow one does not hold the others back
    std::sort(got.begin(), got.end());
    std::sort(ms.begin(), ms.end());
    EXPECT_EQ(got, ms);
}

TEST(Pool, ImapOverAnEndlessInputKeepsABoundedWindow) {
    Pool pool({.workers = 2});
    std::size_t taken = 0;
    auto stream = pool.imap(twice_task, std::views::iota(0L), 4, 2);
    for (long v : stream) {
        EXPECT_EQ(v, 2 * static_cast<long>(taken));
        if (++taken == 1000) break;
    }
    // At most the window (2 chunks of 4) was submitted beyond what was consumed.
    EXPECT_LE(pool.stats().tasks_done, 1000u + 8u);
}

TEST(Pool, ImapRethrowsAFailedItemAtItsPosition) {
    Pool pool({.workers = 2});
    std::vector<int> got;
    try {
        for (int v : pool.imap(throw_on_odd_task, std::vector<int>{0, 2, 3, 4}))
            got.push_back(v);
        ADD_FAILURE() << "no error";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.message(), "odd: 3");
    }
    EXPECT_EQ(got, (std::vector<int>{0, 2}));
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

TEST(Pool, EachWorkerGetsItsShareOfTbbThreads) {
    Pool one({.workers = 2, .threads_per_worker = 1});
    EXPECT_EQ(one.submit(tbb_threads_task, 0).get(), 1);
    Pool three({.workers = 1, .threads_per_worker = 3});
    EXPECT_EQ(three.submit(tbb_threads_task, 0).get(), 3);
}

TEST(Pool, ProgressIsReportedUpToTheEndOfAJob) {
    std::vector<shmpool::Progress> seen;
    Pool pool(
        {.workers = 2, .on_progress = [&](const shmpool::Progress& p) { seen.push_back(p); }});
    pool.map(square_task, iota(1000), 10);
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.back().done, 1000u);
    EXPECT_EQ(seen.back().total, 1000u);
    EXPECT_EQ(seen.back().task, "square_task");
    for (std::size_t i = 1; i < seen.size(); ++i)
        EXPECT_GE(seen[i].done, seen[i - 1].done);
}

TEST(Pool, WorkerStderrLinesArePrefixedWithTheWorkersId) {
    auto r = shmpool::test::run_process({shmpool::test::pool_child_path(), "say", "hello there"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::regex line(
        R"(\[worker 0 pid \d+\] hello there\n\[worker 0 pid \d+\] and a last line without newline\n)");
    EXPECT_TRUE(std::regex_search(r.err, line)) << r.err;
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

TEST(Pool, ManyThreadsSubmittingAndWaitingAtOnceGetTheirOwnResults) {
    Pool pool({.workers = 2});
    std::vector<std::thread> threads;
    std::atomic<int> wrong{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 300; ++i) {
                int x = t * 1000 + i;
                if (pool.submit(twice_task, static_cast<long>(x)).get() != 2L * x) ++wrong;
            }
        });
    }
    for (auto& th : threads)
        th.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(pool.stats().tasks_done, 1200u);
}

TEST(Pool, ACancelFromAnotherThreadEndsTheWaitInGet) {
    Pool pool({.workers = 1});
    auto slow = pool.submit(sleepy_task, 300);
    auto queued = pool.submit(square_task, 3);
    std::thread canceller([&] { EXPECT_TRUE(queued.cancel()); });  // before or during the get()
    EXPECT_THROW(queued.get(), shmpool::TaskCancelled);
    canceller.join();
    EXPECT_EQ(slow.get(), 300);
}

TEST(Pool, BlocksSharedWithThePoolAreAttachedByEveryWorkerAtStartUp) {
    auto array = SharedArray<double>::create(8);
    shmpool::test::Unlinker u{array.name()};
    array[0] = 2.5;
    Pool pool({.workers = 2, .shared_blocks = {array.name()}});
    for (double v : pool.map(first_of_task, std::vector<std::string>(10, array.name()), 1))
        EXPECT_EQ(v, 2.5);
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
