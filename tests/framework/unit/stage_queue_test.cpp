// A pipeline stage's queue alone: strict sequence order for serial_in_order, skips, growth.
#include "pipeline/stage_queue.hpp"

#include <gtest/gtest.h>

namespace {

using shmpool::detail::StageQueue;

TEST(StageQueue, InOrderReleasesOnlyTheRunOfSequencesDueNext) {
    StageQueue q(true);
    q.put(30, 2);  // token 30 carries sequence 2
    q.put(10, 0);
    EXPECT_EQ(q.take(10), (std::vector<std::uint32_t>{10}));  // 1 has not arrived
    q.put(20, 1);
    EXPECT_EQ(q.take(10), (std::vector<std::uint32_t>{20, 30}));
    EXPECT_EQ(q.depth(), 0u);
}

TEST(StageQueue, ASkippedSequenceIsNeverWaitedFor) {
    StageQueue q(true);
    q.put(7, 1);
    q.skip(0);
    EXPECT_EQ(q.take(10), (std::vector<std::uint32_t>{7}));
}

TEST(StageQueue, TheRingGrowsPastItsFirstSizeAndKeepsTheOrder) {
    StageQueue q(true);
    for (std::uint32_t s = 1000; s-- > 0;)
        q.put(s, s);
    EXPECT_EQ(q.depth(), 1000u);
    const auto out = q.take(2000);
    ASSERT_EQ(out.size(), 1000u);
    for (std::uint32_t s = 0; s < 1000; ++s)
        EXPECT_EQ(out[s], s);
}

TEST(StageQueue, ASequenceAlreadyPassedIsALogicError) {
    StageQueue q(true);
    q.put(0, 0);
    (void)q.take(1);
    EXPECT_THROW(q.put(5, 0), std::logic_error);
}

TEST(StageQueue, OutOfOrderIsFirstComeFirstServedUpToTheLimit) {
    StageQueue q(false);
    q.put(3, 9);
    q.put(1, 2);
    q.put(2, 5);
    EXPECT_EQ(q.take(2), (std::vector<std::uint32_t>{3, 1}));
    EXPECT_EQ(q.take(2), (std::vector<std::uint32_t>{2}));
}

}  // namespace
