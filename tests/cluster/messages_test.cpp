// Cluster mode's messages in one process: every kind survives its encoding, and every way an item
// can fail on a node comes back as the same exception on rank 0.
#include "messages.hpp"

#include <gtest/gtest.h>

#include "node_chunk.hpp"
#include "shmpool/framework/errors.hpp"

namespace {

using namespace shmpool::cluster;

TEST(ClusterMessages, AnOpenCarriesThePoolsOptionsButItsCallbacks) {
    OpenPool open;
    open.pool = 7;
    open.shm_identity = "boot:1:2";
    open.options.workers = 3;
    open.options.max_retries = 4;
    open.options.task_timeout = std::chrono::milliseconds(1500);
    open.options.idle_spin = std::chrono::microseconds(7);
    open.options.slot_bytes = std::size_t{1} << 20;
    open.options.shared_blocks = {"psm_a", "psm_b"};
    open.options.environment = {"A=1"};
    open.options.initializer.name = "setup";
    open.options.cluster.writable_blocks = {{"psm_a", 24}};
    open.blocks = {{"psm_a", 4096, true}};
    const OpenPool back = decode<OpenPool>(encode(open));
    EXPECT_EQ(back.pool, 7u);
    EXPECT_EQ(back.shm_identity, "boot:1:2");
    EXPECT_EQ(back.options.workers, 3u);
    EXPECT_EQ(back.options.max_retries, 4);
    EXPECT_EQ(back.options.task_timeout.count(), 1500);
    EXPECT_EQ(back.options.idle_spin.count(), 7);
    EXPECT_EQ(back.options.slot_bytes, std::size_t{1} << 20);
    EXPECT_EQ(back.options.shared_blocks, open.options.shared_blocks);
    EXPECT_EQ(back.options.environment, open.options.environment);
    EXPECT_EQ(back.options.initializer.name, "setup");
    ASSERT_EQ(back.options.cluster.writable_blocks.size(), 1u);
    EXPECT_EQ(back.options.cluster.writable_blocks[0].element_bytes, 24u);
    ASSERT_EQ(back.blocks.size(), 1u);
    EXPECT_TRUE(back.blocks[0].replicate);
}

TEST(ClusterMessages, AResultCarriesRecordsSpecialsWritesAndStatistics) {
    ChunkResult r;
    r.pool = 1;
    r.chunk = 99;
    r.count = 2;
    r.response = std::string("\0\1\0\0\0x", 6);
    r.specials = {{1, {RemoteError::Kind::crashed, "", "", "", 42, 9, -1, 2, 0}}};
    r.writes = {{"psm_a", 16, "bytes"}};
    r.stats.crashes = 3;
    const ChunkResult back = decode<ChunkResult>(encode(r));
    EXPECT_EQ(back.chunk, 99u);
    EXPECT_EQ(back.response, r.response);
    ASSERT_EQ(back.specials.size(), 1u);
    EXPECT_EQ(back.specials[0].error.pid, 42);
    EXPECT_EQ(back.specials[0].error.signal, 9);
    ASSERT_EQ(back.writes.size(), 1u);
    EXPECT_EQ(back.writes[0].offset, 16u);
    EXPECT_EQ(back.stats.crashes, 3u);
    EXPECT_THROW(decode<ChunkResult>(encode(r).substr(0, 10)), std::length_error);
}

TEST(ClusterMessages, AWorkerEventKeepsItsStatusReasonAndItem) {
    RemoteEvent e{5, {}};
    e.event.worker = 1;
    e.event.pid = 1234;
    e.event.status.signal = 11;
    e.event.reason = shmpool::ExitReason::timeout;
    e.event.task = "t";
    e.event.item = 17;
    const RemoteEvent back = decode<RemoteEvent>(encode(e));
    EXPECT_EQ(back.event.status.signal, 11);
    EXPECT_EQ(back.event.reason, shmpool::ExitReason::timeout);
    EXPECT_EQ(back.event.item, 17u);
    e.event.item.reset();
    EXPECT_FALSE(decode<RemoteEvent>(encode(e)).event.item.has_value());
}

TEST(ClusterMessages, EveryFailureIsClassifiedForTheWayBack) {
    using K = RemoteError::Kind;
    auto kind = [](auto e) { return classify(std::make_exception_ptr(e)).kind; };
    EXPECT_EQ(kind(shmpool::TaskError("t", "std::domain_error", "x")), K::task_error);
    EXPECT_EQ(kind(shmpool::WorkerCrashed("t", 1, 2, 9, -1, 2)), K::crashed);
    EXPECT_EQ(kind(shmpool::TaskTimeout("t", 1, 0.5)), K::timeout);
    EXPECT_EQ(kind(shmpool::TaskCancelled("t")), K::cancelled);
    EXPECT_EQ(kind(shmpool::PoolClosed{}), K::closed);
    EXPECT_EQ(kind(std::length_error("too big")), K::length_error);
    EXPECT_EQ(kind(std::runtime_error("else")), K::other);
    const RemoteError e = classify(std::make_exception_ptr(shmpool::TaskError("t", "T", "m")));
    EXPECT_EQ(e.task, "t");
    EXPECT_EQ(e.type, "T");
    EXPECT_EQ(e.message, "m");
}

}  // namespace
