// ResultRouter alone: what a worker left in a response area, delivered to a map's results, with
// errors, truncations, packed errors, statistics, and the final progress report.
#include "parent/result_router.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "protocol/records.hpp"
#include "shmpool/framework/detail/map_state.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "test_support.hpp"

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

// A block as a worker leaves a result in it (worker/chunk_runner.cpp names them so).
shmpool::SharedMemory result_block(const std::string& name, const std::string& bytes) {
    shmpool::SharedMemory block = shmpool::SharedMemory::create(name, bytes.size());
    std::memcpy(block.data(), bytes.data(), bytes.size());
    return block;
}

TEST_F(Routing, AResultInABlockIsDeliveredThenTheBlockRemoved) {
    const std::string name = fmt::format("shmpool_r_{}_unit", ::getpid());
    const auto block = result_block(name, encoded(77));
    shmpool::test::Unlinker u{name};  // if the router does not remove it
    auto state = std::make_shared<MapState<int>>(2);
    const Chunk chunk{job(2, state), 0, 2};
    std::vector<std::byte> area(256);
    RecordWriter out(area.data(), 256);
    out.put(RecordKind::value, encoded(1));
    out.put(RecordKind::value_in_block, block_ref(name, block.size()));
    {
        SlotGuard guard(lock_);
        router_.deliver(guard.proof(), chunk, {area.data(), out.used(), 256, true}, 0, 2);
    }
    EXPECT_EQ(state->collect(), (std::vector<int>{1, 77}));
    EXPECT_THROW(shmpool::SharedMemory::attach(name), std::system_error);  // removed
}

TEST_F(Routing, ANodesRecordNamingABlockFailsItsItemAndTouchesNoBlock) {
    // Only a local worker's records may name blocks: a remote node's response never opens or
    // removes one of this machine's.
    const std::string name = fmt::format("shmpool_r_{}_remote", ::getpid());
    auto block = result_block(name, encoded(5));
    shmpool::test::Unlinker u{name};
    auto state = std::make_shared<MapState<int>>(1);
    const Chunk chunk{job(1, state), 0, 1};
    std::vector<std::byte> area(256);
    RecordWriter out(area.data(), 256);
    out.put(RecordKind::value_in_block, block_ref(name, block.size()));
    {
        SlotGuard guard(lock_);
        router_.deliver(guard.proof(), chunk, {area.data(), out.used(), 256, false}, 0, 1);
    }
    EXPECT_THROW((void)state->collect(), shmpool::TaskError);
    EXPECT_NO_THROW(shmpool::SharedMemory::attach(name));  // still there
}

TEST_F(Routing, ADeadWorkersBlocksPastItsFinishedItemsAreRemovedAndNoOthers) {
    const std::string finished = fmt::format("shmpool_r_{}_done", ::getpid());
    const std::string unfinished = fmt::format("shmpool_r_{}_cut", ::getpid());
    const std::string foreign = fmt::format("other_{}_block", ::getpid());
    auto a = result_block(finished, encoded(1));
    auto b = result_block(unfinished, encoded(2));
    auto c = result_block(foreign, encoded(3));
    shmpool::test::Unlinker u{finished, unfinished, foreign};
    std::vector<std::byte> area(512);
    RecordWriter out(area.data(), 512);
    out.put(RecordKind::value_in_block, block_ref(finished, a.size()));
    out.put(RecordKind::value_in_block, block_ref(unfinished, b.size()));
    out.put(RecordKind::value_in_block, block_ref(foreign, c.size()));
    // The worker finished one item: the blocks of the records after it are never read.
    ResultRouter::discard_blocks({area.data(), out.used(), 512, true}, 1);
    EXPECT_NO_THROW(shmpool::SharedMemory::attach(finished));
    EXPECT_THROW(shmpool::SharedMemory::attach(unfinished), std::system_error);
    EXPECT_NO_THROW(shmpool::SharedMemory::attach(foreign));  // not a name a worker gives
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
