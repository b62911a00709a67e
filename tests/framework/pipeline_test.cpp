// Pipelines across processes: order, back-pressure, crashes in each kind of stage, cancellation,
// big items, the status board. Real worker processes and real signals throughout.
#include "shmpool/framework/pipeline.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "test_support.hpp"

using shmpool::Pipeline;
using shmpool::SharedArray;
using shmpool::StageMode;

namespace {

// Counters shared with the stage workers: attempts per item, by value. The name travels in the
// environment, which the workers inherit.
std::int64_t& attempts(int x) {
    const char* name = std::getenv("PIPE_COUNTERS");  // NOLINT(concurrency-mt-unsafe)
    return SharedArray<std::int64_t>::cached(name)[static_cast<std::size_t>(x)];
}

// Uneven work, so that a parallel stage finishes items out of order.
long square(int x) {
    volatile long spin = 0;
    for (int i = 0; i < (x % 7 == 0 ? 20000 : 10); ++i)
        spin = spin + i;
    return static_cast<long>(x) * x;
}
SHMPOOL_TASK(pipe_square_task, square);

// A serial_in_order stage that fails an item it sees out of order.
long check_order(long x) {
    static long last = -1;
    if (x <= last) throw std::logic_error("out of order");
    last = x;
    return x;
}
SHMPOOL_TASK(pipe_check_order_task, check_order);

long plus_one(long x) {
    return x + 1;
}
SHMPOOL_TASK(pipe_plus_one_task, plus_one);

int identity(int x) {
    return x;
}
SHMPOOL_TASK(pipe_identity_task, identity);

// Segfaults on an item's first attempt when x % 100 == 37: the retry succeeds.
int crash_first_time(int x) {
    if (__atomic_add_fetch(&attempts(x), 1, __ATOMIC_SEQ_CST) == 1 && x % 100 == 37) {
        volatile int* p = nullptr;
        *p = 1;  // NOLINT: the point is to crash
    }
    return x;
}
SHMPOOL_TASK(pipe_crash_first_time_task, crash_first_time);

// Kills its worker every time it sees 42: the item fails after its retries.
int crash_on_42(int x) {
    if (x == 42) ::kill(::getpid(), SIGKILL);
    return x;
}
SHMPOOL_TASK(pipe_crash_on_42_task, crash_on_42);

int throw_on_13(int x) {
    if (x == 13) throw std::runtime_error("thirteen");
    return x;
}
SHMPOOL_TASK(pipe_throw_on_13_task, throw_on_13);

int throw_on_sevens(int x) {
    if (x % 7 == 0) throw std::runtime_error("a multiple of seven");
    return x;
}
SHMPOOL_TASK(pipe_throw_on_sevens_task, throw_on_sevens);

int hang_on_7(int x) {
    if (x == 7) ::pause();  // until the timeout kills this worker
    return x;
}
SHMPOOL_TASK(pipe_hang_on_7_task, hang_on_7);

// A worker source: 0 .. 999, crashing once at sequence 500.
std::optional<int> numbers(std::uint64_t sequence) {
    if (sequence >= 1000) return std::nullopt;
    const int x = static_cast<int>(sequence);
    if (x == 500 && __atomic_add_fetch(&attempts(x), 1, __ATOMIC_SEQ_CST) == 1) std::abort();
    return x;
}
SHMPOOL_TASK(pipe_numbers_task, numbers);

std::string grow(std::string s) {
    return s + std::string(200000, static_cast<char>('a' + s.size() % 26));
}
SHMPOOL_TASK(pipe_grow_task, grow);

std::size_t length_of(std::string s) {
    return s.size();
}
SHMPOOL_TASK(pipe_length_task, length_of);

auto counting_source(int n) {
    return [i = 0, n]() mutable -> std::optional<int> {
        if (i >= n) return std::nullopt;
        return i++;
    };
}

class PipelineTest : public ::testing::Test {
  protected:
    void SetUp() override {
        counters_.emplace(SharedArray<std::int64_t>::create(2000));
        ::setenv("PIPE_COUNTERS", counters_->name().c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
    }
    void TearDown() override { counters_->unlink(); }
    std::optional<SharedArray<std::int64_t>> counters_;
};

TEST_F(PipelineTest, SerialInOrderSeesItemsInSourceOrderAfterAParallelStage) {
    std::vector<long> got;
    Pipeline p({.max_tokens = 32});
    p.source(counting_source(5000))
        .stage(pipe_square_task, StageMode::parallel, 2)
        .stage(pipe_check_order_task, StageMode::serial_in_order)
        .sink([&](long x) { got.push_back(x); });
    auto stats = p.run();
    ASSERT_EQ(got.size(), 5000u);
    for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], static_cast<long>(i * i)) << i;
    EXPECT_EQ(stats.produced, 5000u);
    EXPECT_EQ(stats.completed, 5000u);
    EXPECT_EQ(stats.failed, 0u);
    ASSERT_EQ(stats.stages.size(), 2u);
    EXPECT_EQ(stats.stages[0].workers, 2u);
    EXPECT_EQ(stats.stages[0].items_out, 5000u);
    EXPECT_EQ(stats.stages[1].items_in, 5000u);
    EXPECT_GT(stats.stages[0].busy_seconds, 0.0);
}

// Many tokens and many failures: the in-order stage and sink wait across wide gaps of sequence
// numbers, some of which never come.
TEST_F(PipelineTest, InOrderDeliveryHoldsWithAThousandTokensAndManySkippedItems) {
    std::vector<int> got;
    Pipeline p({.max_tokens = 1024});
    p.source(counting_source(20000))
        .stage(pipe_throw_on_sevens_task, StageMode::parallel, 2)
        .stage(pipe_identity_task, StageMode::serial_in_order)
        .sink([&](int x) { got.push_back(x); });
    auto stats = p.run();
    std::vector<int> want;
    for (int i = 0; i < 20000; ++i) {
        if (i % 7 != 0) want.push_back(i);
    }
    EXPECT_EQ(got, want);
    EXPECT_EQ(stats.failed, 2858u);  // 0, 7, ..., 19999
    ASSERT_EQ(stats.failures.size(), 2858u);
    for (std::size_t k = 0; k < stats.failures.size(); ++k)
        ASSERT_EQ(stats.failures[k].sequence, 7 * k);
}

TEST_F(PipelineTest, TheSourceWaitsWhenEverySlotIsInFlight) {
    std::size_t produced = 0, consumed = 0, worst = 0;
    Pipeline p({.max_tokens = 8});
    p.source([&]() -> std::optional<int> {
         worst = std::max(worst, produced - consumed + 1);  // live items once this one exists
         if (produced == 3000) return std::nullopt;
         return static_cast<int>(produced++);
     })
        .stage(pipe_square_task, StageMode::parallel, 2)
        .sink([&](long) { ++consumed; }, StageMode::serial_out_of_order);
    auto stats = p.run();
    EXPECT_EQ(consumed, 3000u);
    EXPECT_LE(worst, 8u);
    EXPECT_LE(stats.max_live_tokens, 8u);
    EXPECT_EQ(stats.max_live_tokens, 8u);  // and the bound is actually reached
}

class StageCrash : public PipelineTest, public ::testing::WithParamInterface<StageMode> {};

TEST_P(StageCrash, IsRetriedAndTheResultIsUnchanged) {
    std::vector<int> got;
    Pipeline p({.max_tokens = 16, .max_retries = 1});
    p.source(counting_source(1000))
        .stage(pipe_crash_first_time_task, GetParam(), 2)
        .sink([&](int x) { got.push_back(x); });
    auto stats = p.run();
    ASSERT_EQ(got.size(), 1000u);
    for (int i = 0; i < 1000; ++i)
        ASSERT_EQ(got[static_cast<std::size_t>(i)], i);  // the sink is serial_in_order
    EXPECT_EQ(stats.failed, 0u);
    EXPECT_EQ(stats.stages[0].crashes, 10u);  // items 37, 137, ... 937
    EXPECT_EQ(stats.stages[0].retries, 10u);
    for (int i = 0; i < 1000; ++i)  // only the crashed items ran twice
        ASSERT_EQ(attempts(i), i % 100 == 37 ? 2 : 1) << i;
}

TEST_P(StageCrash, AnItemThatAlwaysCrashesFailsWithItsSequenceAndTheRestGoThroughInOrder) {
    std::vector<int> got;
    Pipeline p({.max_tokens = 16, .max_retries = 2});
    p.source(counting_source(200))
        .stage(pipe_crash_on_42_task, GetParam(), 2)
        .stage(pipe_identity_task, StageMode::serial_in_order)
        .sink([&](int x) { got.push_back(x); });
    auto stats = p.run();
    ASSERT_EQ(stats.failures.size(), 1u);
    EXPECT_EQ(stats.failures[0].sequence, 42u);
    EXPECT_EQ(stats.failures[0].stage, "pipe_crash_on_42_task");
    try {
        std::rethrow_exception(stats.failures[0].error);
    } catch (const shmpool::WorkerCrashed& e) {  // named as the user knows it, not the step
        EXPECT_EQ(e.task(), "pipe_crash_on_42_task");
        EXPECT_EQ(e.item(), 42u);
        EXPECT_EQ(e.signal(), SIGKILL);
        EXPECT_EQ(stats.failures[0].message, e.what());
    } catch (...) {
        ADD_FAILURE() << "not WorkerCrashed: " << stats.failures[0].message;
    }
    EXPECT_EQ(stats.stages[0].crashes, 3u);  // the first attempt and two retries
    ASSERT_EQ(got.size(), 199u);
    for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], static_cast<int>(i < 42 ? i : i + 1));
}

INSTANTIATE_TEST_SUITE_P(EveryMode, StageCrash,
                         ::testing::Values(StageMode::parallel, StageMode::serial_in_order,
                                           StageMode::serial_out_of_order));

TEST_F(PipelineTest, AWorkerSourceThatCrashesIsRetriedInOrder) {
    std::vector<int> got;
    Pipeline p({.max_tokens = 16});
    p.source(pipe_numbers_task).stage(pipe_identity_task, StageMode::parallel, 2).sink([&](int x) {
        got.push_back(x);
    });
    auto stats = p.run();
    ASSERT_EQ(got.size(), 1000u);
    for (int i = 0; i < 1000; ++i)
        ASSERT_EQ(got[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(stats.produced, 1000u);
    EXPECT_EQ(stats.stages[0].crashes, 1u);
}

TEST_F(PipelineTest, AStageThatThrowsFailsThatItemOnly) {
    std::vector<int> got;
    Pipeline p;
    p.source(counting_source(50))
        .stage(pipe_throw_on_13_task, StageMode::parallel, 2)
        .sink([&](int x) { got.push_back(x); });
    auto stats = p.run();
    ASSERT_EQ(stats.failures.size(), 1u);
    EXPECT_EQ(stats.failures[0].sequence, 13u);
    EXPECT_EQ(stats.failures[0].message,
              "task 'pipe_throw_on_13_task' threw std::runtime_error: thirteen");
    EXPECT_THROW(std::rethrow_exception(stats.failures[0].error), shmpool::TaskError);
    EXPECT_EQ(stats.stages[0].crashes, 0u);
    EXPECT_EQ(got.size(), 49u);
}

TEST_F(PipelineTest, AnItemPastTheTimeoutFailsWithTaskTimeoutNamingItsStageAndSequence) {
    std::vector<int> got;
    Pipeline p({.max_retries = 0, .task_timeout = std::chrono::milliseconds(200)});
    p.source(counting_source(20))
        .stage(pipe_hang_on_7_task, StageMode::parallel, 2)
        .sink([&](int x) { got.push_back(x); });
    auto stats = p.run();
    ASSERT_EQ(stats.failures.size(), 1u);
    EXPECT_EQ(stats.failures[0].sequence, 7u);
    try {
        std::rethrow_exception(stats.failures[0].error);
    } catch (const shmpool::TaskTimeout& e) {
        EXPECT_EQ(e.task(), "pipe_hang_on_7_task");
        EXPECT_EQ(e.item(), 7u);
        EXPECT_DOUBLE_EQ(e.seconds(), 0.2);
    } catch (...) {
        ADD_FAILURE() << "not TaskTimeout: " << stats.failures[0].message;
    }
    EXPECT_EQ(got.size(), 19u);
}

TEST_F(PipelineTest, CancelFromTheSinkStopsEverything) {
    std::size_t seen = 0;
    Pipeline p({.max_tokens = 16});
    p.source([]() -> std::optional<int> { return 1; })  // endless
        .stage(pipe_identity_task, StageMode::parallel, 2)
        .sink([&](int) {
            if (++seen == 500) p.cancel();
        });
    auto stats = p.run();
    EXPECT_TRUE(stats.cancelled);
    EXPECT_GE(seen, 500u);
    EXPECT_LE(seen, 500u + 16u);  // at most the items already in flight
}

TEST_F(PipelineTest, SigintCancelsWhenAskedTo) {
    std::size_t seen = 0;
    Pipeline p({.max_tokens = 16, .cancel_on_sigint = true});
    p.source([]() -> std::optional<int> { return 1; })
        .stage(pipe_identity_task, StageMode::serial_out_of_order)
        .sink([&](int) {
            if (++seen == 100) ::raise(SIGINT);  // a real signal, to this process
        });
    auto stats = p.run();
    EXPECT_TRUE(stats.cancelled);
    struct sigaction now {};
    ::sigaction(SIGINT, nullptr, &now);
    EXPECT_EQ(now.sa_handler, SIG_DFL);  // the previous handler is back
}

TEST_F(PipelineTest, BigItemsTravelInBlocksOfTheirOwnAndNoneIsLeft) {
    std::vector<std::size_t> got;
    Pipeline p({.max_tokens = 8, .token_bytes = 1024});
    p.source([i = 0]() mutable -> std::optional<std::string> {
         if (i == 40) return std::nullopt;
         return std::string(static_cast<std::size_t>(i++) * 100, 'x');  // some too big already
     })
        .stage(pipe_grow_task, StageMode::parallel, 2)  // every result too big
        .stage(pipe_length_task, StageMode::serial_in_order)
        .sink([&](std::size_t n) { got.push_back(n); });
    auto stats = p.run();
    ASSERT_EQ(got.size(), 40u);
    for (std::size_t i = 0; i < 40; ++i)
        EXPECT_EQ(got[i], i * 100 + 200000);
    EXPECT_EQ(stats.failed, 0u);
    // No block is left: the suite's leak fixture checks /dev/shm after every test as well.
}

TEST_F(PipelineTest, TheStatusBoardIsAShareableListAnyoneCanRead) {
    std::string board;
    std::vector<shmpool::Value> seen;
    Pipeline p({.status_board = true});
    p.source(counting_source(3000))
        .stage(pipe_identity_task, StageMode::parallel, 2)
        .sink([&](int x) {
            if (x == 2500) {
                board = p.status_board();
                auto list = shmpool::ShareableList::attach(board);
                auto lock = list.lock();
                for (std::size_t i = 0; i < list.size(); ++i)
                    seen.push_back(list.get(static_cast<std::ptrdiff_t>(i)));
            }
        });
    p.run();
    ASSERT_EQ(seen.size(), 9u);
    EXPECT_EQ(seen[0], shmpool::Value("running"));
    EXPECT_EQ(seen[4], shmpool::Value("pipe_identity_task"));
    ASSERT_NE(seen[1].get_if<std::int64_t>(), nullptr);
    EXPECT_GT(*seen[1].get_if<std::int64_t>(), 0);
    // After run() the board says how it ended.
    auto list = shmpool::ShareableList::attach(board);
    EXPECT_EQ(list.get(0), shmpool::Value("done"));
    EXPECT_EQ(list.get(2), shmpool::Value(std::int64_t{3000}));
}

TEST(Pipeline, StagesMustFitTogether) {
    Pipeline p;
    EXPECT_THROW(p.stage(pipe_identity_task, StageMode::parallel), std::logic_error);  // no source
    p.source(counting_source(1));
    EXPECT_THROW(p.stage(pipe_plus_one_task, StageMode::parallel),
                 std::logic_error);  // int != long
    p.stage(pipe_identity_task, StageMode::parallel, 2);
    EXPECT_THROW(p.sink([](const std::string&) {}), std::logic_error);
    EXPECT_THROW(p.stage(pipe_identity_task, StageMode::parallel, 0), std::invalid_argument);
    Pipeline empty;
    EXPECT_THROW(empty.run(), std::logic_error);
}

}  // namespace
