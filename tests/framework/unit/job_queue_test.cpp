// JobQueue alone: chunks, requeues, placed index jobs, admission, the idle wait, terminate and
// abandon.
#include "parent/job_queue.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "shmpool/framework/errors.hpp"

namespace {

using namespace shmpool::detail;

std::shared_ptr<Job> job_of(std::size_t items) {
    auto job = std::make_shared<Job>();
    job->task = "t";
    job->items.in_stride = 4;  // packed: `count` items, no per-item offsets
    job->items.count = items;
    return job;
}

TEST(JobQueue, AJobIsQueuedInChunksTakenInOrder) {
    JobQueue q;
    EXPECT_EQ(q.push(job_of(10), 4), nullptr);
    auto a = q.take();
    auto b = q.take();
    auto c = q.take();
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(a->begin, 0u);
    EXPECT_EQ(b->begin, 4u);
    EXPECT_EQ(c->end, 10u);
    EXPECT_FALSE(q.take());
}

TEST(JobQueue, ARequeuedChunkComesFirst) {
    JobQueue q;
    auto job = job_of(8);
    q.push(job, 4);
    auto first = q.take();
    ASSERT_TRUE(q.requeue_front(Chunk{job, 2, 4}));
    auto again = q.take();
    EXPECT_EQ(again->begin, 2u);
    EXPECT_EQ(q.take()->begin, 4u);
}

TEST(JobQueue, TheLastChunkIsSharedOutAmongThePlacesThatAreFree) {
    JobQueue q;
    q.push(job_of(20), 8);  // chunks [0, 8), [8, 16) and [16, 20)
    bool shared = true;
    EXPECT_EQ(q.take_sharing_the_last(3, shared)->end, 8u);  // not the last: whole
    EXPECT_FALSE(shared);
    EXPECT_EQ(q.take_sharing_the_last(3, shared)->end, 16u);
    auto a = q.take_sharing_the_last(3, shared);  // the last: a third of 4, rounded up
    EXPECT_TRUE(shared);
    EXPECT_EQ(a->begin, 16u);
    EXPECT_EQ(a->end, 18u);
    auto b = q.take_sharing_the_last(3, shared);  // a third of 2
    EXPECT_EQ(b->begin, 18u);
    EXPECT_EQ(b->end, 19u);
    auto c = q.take_sharing_the_last(3, shared);  // one item: whole
    EXPECT_FALSE(shared);
    EXPECT_EQ(c->begin, 19u);
    EXPECT_EQ(c->end, 20u);
    EXPECT_FALSE(q.take_sharing_the_last(3, shared));
}

// A job of `ranges` one-item chunks placed as `slots` says (Placement::none: never run).
std::shared_ptr<Job> placed_job(const std::vector<std::uint32_t>& slots) {
    auto job = job_of(slots.size());
    job->placement = std::make_shared<Placement>(slots.size());
    for (std::size_t i = 0; i < slots.size(); ++i)
        if (slots[i] != Placement::none) job->placement->record(i, slots[i]);
    return job;
}

TEST(JobQueue, EachSlotTakesTheRangesItRanLastTimeInOrder) {
    JobQueue q;
    q.push(placed_job({0, 1, 0, 1, 1, 0}), 1);
    EXPECT_EQ(q.take(1)->begin, 1u);
    EXPECT_EQ(q.take(0)->begin, 0u);
    EXPECT_EQ(q.take(0)->begin, 2u);
    EXPECT_EQ(q.take_to_queue_behind(1)->begin, 3u);
    EXPECT_EQ(q.take(1)->begin, 4u);
    EXPECT_EQ(q.take(0)->begin, 5u);
    EXPECT_TRUE(q.empty());
}

TEST(JobQueue, ASlotWithNoneOfItsOwnLeftStealsFromTheBackOfTheLongestList) {
    JobQueue q;
    q.push(placed_job({0, 0, 0, 1, Placement::none}), 1);
    EXPECT_EQ(q.take(1)->begin, 3u);
    EXPECT_EQ(q.take(1)->begin, 4u);  // then a range nobody ran
    // Slot 1 has none of its own: queued behind a running chunk it would take nothing, idle it
    // steals slot 0's last range, which slot 0 would have reached last.
    EXPECT_FALSE(q.take_to_queue_behind(1));
    EXPECT_EQ(q.take(1)->begin, 2u);
    EXPECT_EQ(q.take(JobQueue::any_slot)->begin, 1u);  // a cluster node steals too
    EXPECT_EQ(q.take(0)->begin, 0u);
    EXPECT_FALSE(q.take(0));
}

TEST(JobQueue, APlacedJobWaitsItsTurnBehindEarlierChunks) {
    JobQueue q;
    auto first = job_of(2);
    q.push(first, 1);
    q.push(placed_job({1, 1}), 1);
    q.push(job_of(1), 1);
    EXPECT_EQ(q.take(1)->job, first);
    EXPECT_EQ(q.take(0)->job, first);
    EXPECT_EQ(q.front_size(), 1u);
    EXPECT_EQ(q.take(0)->begin, 1u);  // slot 0 has none: it steals slot 1's last
    EXPECT_EQ(q.take(1)->begin, 0u);
    EXPECT_EQ(q.take(1)->job->placement, nullptr);  // then the job queued after
}

TEST(JobQueue, TerminateReturnsEveryPlacedChunkStillQueued) {
    JobQueue q;
    q.push(placed_job({0, 1, Placement::none, 1}), 1);
    EXPECT_EQ(q.take(0)->begin, 0u);
    const auto left = q.terminate();
    std::vector<std::size_t> begins;
    for (const Chunk& c : left)
        begins.push_back(c.begin);
    std::sort(begins.begin(), begins.end());
    EXPECT_EQ(begins, (std::vector<std::size_t>{1, 2, 3}));
    EXPECT_FALSE(q.take(1));
}

TEST(JobQueue, AFirstRunIsQueuedAsPlainChunks) {
    JobQueue q;
    q.push(placed_job({Placement::none, Placement::none}), 1);
    EXPECT_EQ(q.take(1)->begin, 0u);
    EXPECT_EQ(q.take(0)->begin, 1u);
}

TEST(JobQueue, StoppingWaitsUntilEveryItemIsSettled) {
    JobQueue q;
    q.push(job_of(5), 5);
    ASSERT_TRUE(q.take());
    std::thread settler([&] { q.finish(5); });
    q.wait_idle_then_stop();  // returns once the five are settled
    settler.join();
    EXPECT_TRUE(q.stopping_and_idle());
    EXPECT_FALSE(q.wants_workers());
    EXPECT_THROW(q.push(job_of(1), 1), shmpool::PoolClosed);
}

TEST(JobQueue, TerminateHandsBackWhatWasQueuedAndRefusesRequeues) {
    JobQueue q;
    auto job = job_of(6);
    q.push(job, 2);
    ASSERT_TRUE(q.take());
    EXPECT_EQ(q.terminate().size(), 2u);
    EXPECT_TRUE(q.terminating());
    EXPECT_FALSE(q.requeue_front(Chunk{job, 0, 2}));  // the caller fails its items
    EXPECT_FALSE(q.take());
    EXPECT_FALSE(q.wants_workers());
}

TEST(JobQueue, AnAbandonedQueueRefusesNewWorkWithItsReason) {
    JobQueue q;
    q.push(job_of(3), 1);
    const auto why = std::make_exception_ptr(std::runtime_error("no worker left"));
    EXPECT_EQ(q.abandon(why).size(), 3u);
    EXPECT_EQ(q.push(job_of(1), 1), why);
    EXPECT_TRUE(q.empty());
}

}  // namespace
