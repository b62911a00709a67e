// The pool's API, what it promises when nothing fails: results in order, every kind of job,
// statistics, progress, callbacks (run outside the pool's locks), options, stderr relay.
#include <gtest/gtest.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <ranges>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "shmpool/shm/shared_heap.hpp"
#include "tasks.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using namespace shmpool::test::tasks;
using shmpool::Pool;
using shmpool::SharedArray;
using shmpool::test::Gate;

namespace {

// Work of a known minimum length: spins until the shared clock moved by `us` microseconds.
int spin_for(int us) {
    const std::uint64_t until =
        shmpool::detail::monotonic_ns() + static_cast<std::uint64_t>(us) * 1000;
    while (shmpool::detail::monotonic_ns() < until) {
    }
    return us;
}
SHMPOOL_TASK(spin_for_task, spin_for);

// A void packed task: counts its calls in a block shared with the pool.
void tally(int x) {
    auto& b = shmpool::shared_block(std::getenv("TALLY_BLOCK"));  // NOLINT(concurrency-mt-unsafe)
    __atomic_add_fetch(reinterpret_cast<std::int64_t*>(b.data()) + x, 1, __ATOMIC_SEQ_CST);
}
SHMPOOL_TASK(tally_task, tally);

int tbb_threads(int) {
    return tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
}
SHMPOOL_TASK(tbb_threads_task, tbb_threads);

// Reads the first double of a block shared with the pool (attached by the worker at start-up).
double first_of(std::string name) {
    return *reinterpret_cast<const double*>(shmpool::shared_block(name).data());
}
SHMPOOL_TASK(first_of_task, first_of);

// One argument, for imap: arrives at the gate, or (wait_for > 0) waits for that many arrivals.
struct Meeting {
    char gate[64];
    int x;
    int wait_for;
};
int meet(Meeting m) {
    return m.wait_for ? after_arrivals(m.gate, m.wait_for, m.x) : arrive(m.gate, m.x);
}
SHMPOOL_TASK(meet_task, meet);

int initialized = 0;
void setup() {
    initialized = 42;
}
SHMPOOL_TASK(setup_task, setup);
int read_initialized(int) {
    return initialized;
}
SHMPOOL_TASK(read_initialized_task, read_initialized);

TEST(Pool, TheLastFutureOfAResultMovesItOutAndCopiesStillShareIt) {
    Pool pool({.workers = 1});
    EXPECT_EQ(pool.submit(shout_task, std::string("a"), 3).get(), "a!a!a!");  // a temporary's
    auto f = pool.submit(shout_task, std::string("b"), 2);
    auto copy = f;
    EXPECT_EQ(std::move(f).get(), "b!b!");  // a copy is alive: copied, not moved out
    EXPECT_EQ(copy.get(), "b!b!");
    EXPECT_EQ(copy.get(), "b!b!");  // an lvalue's get() may be called again
}

}  // namespace

TEST(Pool, AFrozenHeapInSharedBlocksIsReadInPlaceThroughAReadOnlyMapping) {
    // The parent builds a map in a heap and freezes it; every worker attaches the heap once,
    // read-only, and looks keys up in place. A heap still open for allocation is mapped
    // read-write (its locks are written).
    auto frozen = shmpool::SharedHeap::create(shmpool::test::unique_name(), 1 << 20);
    auto open = shmpool::SharedHeap::create(shmpool::test::unique_name(), 1 << 20);
    shmpool::test::Unlinker u{frozen.name(), open.name()};
    for (auto* heap : {&frozen, &open}) {
        auto& table = heap->construct<shmpool::SharedMap<shmpool::SharedString, std::int64_t>>(
            "table", heap->allocator());
        for (std::int64_t i = 0; i < 100; ++i)
            table.emplace(heap->string("key" + std::to_string(i)), i * i);
    }
    frozen.freeze();
    Pool pool({.workers = 2, .shared_blocks = {frozen.name(), open.name()}});
    // Attached at start-up, before any task: each worker maps the frozen heap once, read-only
    // ("r--s"), and the open one once, read-write ("rw-s").
    for (pid_t pid : pool.worker_pids()) {
        std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
        int frozen_maps = 0;
        int open_maps = 0;
        for (std::string line; std::getline(maps, line);) {
            if (line.ends_with("/dev/shm/" + frozen.name()))
                frozen_maps += line.find(" r--s ") != std::string::npos ? 1 : 100;
            if (line.ends_with("/dev/shm/" + open.name()))
                open_maps += line.find(" rw-s ") != std::string::npos ? 1 : 100;
        }
        EXPECT_EQ(frozen_maps, 1) << "worker " << pid;
        EXPECT_EQ(open_maps, 1) << "worker " << pid;
    }
    std::vector<std::tuple<std::string, std::string>> args;
    for (int i = 0; i < 100; i += 7)
        args.emplace_back(frozen.name(), "key" + std::to_string(i));
    args.emplace_back(frozen.name(), "missing");
    const auto out = pool.starmap(heap_lookup_task, args, 1);
    for (std::size_t k = 0; k + 1 < out.size(); ++k) {
        const std::int64_t i = static_cast<std::int64_t>(k) * 7;
        EXPECT_EQ(out[k], std::make_tuple(i * i, true)) << "key" << i;
    }
    EXPECT_EQ(out.back(), std::make_tuple(std::int64_t{-1}, true));
    EXPECT_EQ(pool.submit(heap_lookup_task, open.name(), "key3").get(),
              std::make_tuple(std::int64_t{9}, false));
}

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

TEST(Pool, ForEachIndexFillsASharedArray) {
    auto array = SharedArray<double>::create(100000);
    shmpool::test::Unlinker u{array.name()};
    Pool pool({.workers = 2});
    pool.for_each_index(fill_task, array.size(), 0, array.name());  // grain 0: automatic
    for (std::size_t i = 0; i < array.size(); ++i)
        ASSERT_EQ(array[i], static_cast<double>(i) * 0.5);
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
    // Item 0 waits until items 1 to 5 have run on the other worker: it never holds them back.
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 2});
    std::vector<Meeting> items(6);
    for (int i = 0; i < 6; ++i) {
        std::snprintf(items[static_cast<std::size_t>(i)].gate, sizeof items[0].gate, "%s",
                      gate.name().c_str());
        items[static_cast<std::size_t>(i)].x = i;
        items[static_cast<std::size_t>(i)].wait_for = i == 0 ? 5 : 0;
    }
    std::vector<int> got;
    for (int v : pool.imap_unordered(meet_task, items))
        got.push_back(v);
    EXPECT_NE(got.front(), 0);  // the slow one did not hold the others back
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, iota(6));
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

TEST(Pool, BlocksSharedWithThePoolAreAttachedByEveryWorkerAtStartUp) {
    auto array = SharedArray<double>::create(8);
    shmpool::test::Unlinker u{array.name()};
    array[0] = 2.5;
    Pool pool({.workers = 2, .shared_blocks = {array.name()}});
    for (double v : pool.map(first_of_task, std::vector<std::string>(10, array.name()), 1))
        EXPECT_EQ(v, 2.5);
}

TEST(Pool, TheInitializerRunsInEveryWorkerBeforeItsTasks) {
    Pool pool({.workers = 2, .initializer = setup_task});
    for (int v : pool.map(read_initialized_task, iota(20), 1))
        EXPECT_EQ(v, 42);
}

TEST(PoolCallbacks, AProgressCallbackMaySubmitWorkAndWaitForIt) {
    // The callback runs outside the pool's locks: its own submit is dispatched and harvested
    // while the job whose progress it reports is still under way.
    std::atomic<Pool*> pool_ptr{nullptr};
    std::atomic<int> nested{0};
    std::atomic<bool> nested_result_ok{true};
    Pool pool({.workers = 2, .on_progress = [&](const shmpool::Progress& /*p*/) {
                   if (Pool* p = pool_ptr.load(); p && nested.fetch_add(1) < 3)
                       nested_result_ok = nested_result_ok && p->submit(square_task, 9).get() == 81;
               }});
    pool_ptr = &pool;
    const std::vector<int> out = pool.map(square_task, iota(2000), 10);
    EXPECT_EQ(out.back(), 1999 * 1999);
    EXPECT_GE(nested.load(), 1);
    EXPECT_TRUE(nested_result_ok.load());
}

TEST(PoolCallbacks, AWorkerExitCallbackThatBlocksDoesNotStallThePool) {
    // The callback waits at a gate that the test opens only after a whole map has run: under a
    // lock of the pool, the map could not be harvested and the callback would time out first.
    Gate gate = Gate::create(shmpool::test::unique_name());
    std::atomic<bool> map_done{false};
    std::atomic<bool> map_done_before_release{false};
    Pool pool({.workers = 2, .on_worker_exit = [&](const shmpool::WorkerEvent& /*e*/) {
                   gate.pass(30s);
                   map_done_before_release = map_done.load();
               }});
    ::kill(pool.worker_pids()[0], SIGKILL);
    ASSERT_TRUE(gate.wait_arrivals(1));  // the callback is blocked now
    EXPECT_EQ(pool.map(square_task, iota(500), 5).back(), 499 * 499);
    map_done = true;
    gate.release();
    pool.close();
    pool.join();  // the callback has returned
    EXPECT_TRUE(map_done_before_release.load());
}

TEST(PoolCallbacks, EventsComeOneAtATimeInTheirOrder) {
    // Two threads harvest (the supervisor and a get()), yet callbacks never overlap.
    std::atomic<int> inside{0};
    std::atomic<bool> overlapped{false};
    std::vector<std::size_t> done;
    Pool pool({.workers = 2, .on_progress = [&](const shmpool::Progress& p) {
                   if (inside.fetch_add(1) != 0) overlapped = true;
                   if (p.task == "twice_task") done.push_back(p.done);
                   inside.fetch_sub(1);
               }});
    std::thread submitter([&] {
        for (int i = 0; i < 300; ++i)
            (void)pool.submit(square_task, i).get();
    });
    std::vector<long> input(5000, 1);
    pool.map(twice_task, input, 1);
    submitter.join();
    EXPECT_FALSE(overlapped.load());
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(done.back(), 5000u);
    EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
}

TEST(PoolEvents, ExitStatusesAndReasonsPrintAsWords) {
    EXPECT_EQ(fmt::format("{}", shmpool::ExitStatus{.signal = SIGKILL}), "killed by SIGKILL");
    EXPECT_EQ(fmt::format("{}", shmpool::ExitStatus{.signal = SIGSEGV, .core_dumped = true}),
              "killed by SIGSEGV (core dumped)");
    EXPECT_EQ(fmt::format("{}", shmpool::ExitStatus{.exit_code = 3}), "exited with status 3");
    EXPECT_EQ(shmpool::signal_name(200), "signal 200");
    EXPECT_EQ(fmt::format("{}", shmpool::ExitReason::recycled_memory), "recycled_memory");
    EXPECT_EQ(shmpool::to_string(shmpool::ExitReason::start_failed), "start_failed");
}
