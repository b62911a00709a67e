// ResultRouter alone: what a worker left in a response area, delivered to a map's results, with
// errors, truncations, packed errors, statistics, and the final progress report.
#include "parent/result_router.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "protocol/records.hpp"
#include "shmpool/framework/detail/map_state.hpp"
#include "shmpool/framework/errors.hpp"

namespace {

using namespace shmpool::detail;

std::string encoded(int v) {
    std::string out;
    shmpool::encode(out, v);
    return out;
}

class Routing : public ::testing::Test {
  protected:
    std::shared_ptr<Job> job(std::size_t items, std::shared_ptr<ResultSink> sink) {
        auto j = std::make_shared<Job>();
        j->task = "t";
        j->items.offsets.assign(items + 1, 0);  // record items: only their count matters here
        j->sink = std::move(sink);
        return j;
    }
    PoolCounters counters_;
    shmpool::PoolOptions options_;
    CallbackQueue callbacks_{options_};
    ResultRouter router_{counters_, callbacks_};
    SlotLock lock_;
};

TEST_F(Routing, RecordsBecomeValuesAndErrorsAtTheirItems) {
    auto state = std::make_shared<MapState<int>>(3);
    const Chunk chunk{job(3, state), 0, 3};
    std::vector<std::byte> area(256);
    RecordWriter out(area.data(), 256);
    out.put(RecordKind::value, encoded(10));
    out.put(RecordKind::error, error_payload("std::invalid_argument", "odd"));
    out.put(RecordKind::value, encoded(30));
    {
        SlotGuard guard(lock_);
        router_.deliver(guard.proof(), chunk, {area.data(), out.used(), 256}, 0, 3);
    }
    EXPECT_EQ(counters_.results.load(), 2u);
    EXPECT_EQ(counters_.failures.load(), 1u);
    try {
        (void)state->collect();
        ADD_FAILURE() << "no error";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.task(), "t");
        EXPECT_EQ(e.type(), "std::invalid_argument");
    }
}

TEST_F(Routing, ATruncatedRecordFailsItsItemsInsteadOfReadingPastTheArea) {
    auto state = std::make_shared<MapState<int>>(2);
    const Chunk chunk{job(2, state), 0, 2};
    std::vector<std::byte> area(64);
    RecordWriter out(area.data(), 64);
    out.put(RecordKind::value, encoded(1));
    {
        SlotGuard guard(lock_);
        // The worker claims two items done but wrote one record.
        router_.deliver(guard.proof(), chunk, {area.data(), out.used(), 64}, 0, 2);
    }
    EXPECT_EQ(counters_.failures.load(), 1u);
    EXPECT_THROW((void)state->collect(), shmpool::TaskError);
}

TEST_F(Routing, APackedChunksErrorsSitAmongItsResults) {
    auto state = std::make_shared<MapState<int>>(4);
    auto j = job(4, state);
    j->items.in_stride = 4;
    j->items.out_stride = 4;
    j->items.count = 4;
    const Chunk chunk{j, 0, 4};
    std::vector<std::byte> area(128);
    for (int i = 0; i < 4; ++i) {
        const int v = i * 100;
        std::memcpy(area.data() + 4 * i, &v, 4);
    }
    PackedErrors errors(area.data(), 128, 4, 4, 0);
    const std::uint32_t end = errors.put(1, error_payload("std::runtime_error", "one"));
    {
        SlotGuard guard(lock_);
        router_.deliver(guard.proof(), chunk, {area.data(), end, 128}, 0, 4);
    }
    EXPECT_EQ(counters_.results.load(), 3u);
    EXPECT_EQ(counters_.failures.load(), 1u);
    try {
        (void)state->collect();
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.message(), "one");
    }
}

TEST(RoutingProgress, TheJobsCallerGetsItsResultsOnlyAfterTheFinalReport) {
    std::atomic<bool> reported{false};
    shmpool::PoolOptions options;
    options.on_progress = [&](const shmpool::Progress& p) {
        if (p.done == p.total) reported = true;
    };
    PoolCounters counters;
    CallbackQueue callbacks(options);
    ResultRouter router(counters, callbacks);
    auto state = std::make_shared<MapState<int>>(2);
    auto j = std::make_shared<Job>();
    j->task = "t";
    j->items.offsets.assign(3, 0);
    j->sink = state;
    j->reports_progress = true;
    state->expect_final_progress();
    std::vector<std::byte> area(64);
    RecordWriter out(area.data(), 64);
    out.put(RecordKind::value, encoded(1));
    out.put(RecordKind::value, encoded(2));
    SlotLock lock;
    {
        SlotGuard guard(lock);
        router.deliver(guard.proof(), Chunk{j, 0, 2}, {area.data(), out.used(), 64}, 0, 2);
    }
    EXPECT_EQ(state->collect(), (std::vector<int>{1, 2}));
    EXPECT_TRUE(reported.load());  // collect() waited for it
}

}  // namespace
