// AffinityMemory alone: an index job finds the placement of the last identical one.
#include "parent/placement.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using shmpool::detail::AffinityMemory;
using shmpool::detail::Placement;

TEST(AffinityMemory, TheSameTaskAndArgumentsFindTheSamePlacement) {
    AffinityMemory memory;
    auto first = memory.placement_for("sweep", "array-a,0,8", 4);
    EXPECT_FALSE(first->recorded());
    EXPECT_EQ(first->record(2, 1), Placement::none);
    auto again = memory.placement_for("sweep", "array-a,0,8", 4);
    EXPECT_EQ(again, first);
    EXPECT_TRUE(again->recorded());
    EXPECT_EQ(again->slot(2), 1u);
    EXPECT_EQ(again->record(2, 0), 1u);  // where it went before
}

TEST(AffinityMemory, AnotherArrayTaskOrRangeCountIsAnotherPlacement) {
    AffinityMemory memory;
    auto a = memory.placement_for("sweep", "array-a", 4);
    EXPECT_NE(memory.placement_for("sweep", "array-b", 4), a);
    EXPECT_NE(memory.placement_for("scale", "array-a", 4), a);
    EXPECT_NE(memory.placement_for("sweep", "array-a", 5), a);
}

TEST(AffinityMemory, OnlyTheMostRecentlyUsedAreRemembered) {
    AffinityMemory memory;
    auto zero = memory.placement_for("sweep", "0", 1);
    auto one = memory.placement_for("sweep", "1", 1);
    for (std::size_t i = 2; i < AffinityMemory::remembered; ++i)
        memory.placement_for("sweep", std::to_string(i), 1);
    EXPECT_EQ(memory.placement_for("sweep", "0", 1), zero);  // full, and "0" used again
    memory.placement_for("sweep", "new", 1);                 // "1" is the least recently used
    EXPECT_EQ(memory.placement_for("sweep", "0", 1), zero);
    EXPECT_NE(memory.placement_for("sweep", "1", 1), one);
}

}  // namespace
