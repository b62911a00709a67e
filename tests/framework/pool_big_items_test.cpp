// Arguments and results bigger than a slot: they travel in blocks of their own, both ways, in
// order with the small ones, bounded by max_result_bytes, and no block outlives a crash.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <tuple>
#include <vector>

#include "tasks.hpp"
#include "test_support.hpp"

namespace {

using shmpool::Pool;
using namespace shmpool::test::tasks;

constexpr std::size_t never = SIZE_MAX;  // bytes_or_die_task's die_at: no item dies

// The blocks that carry this process's pools' big items (slot_table.cpp and chunk_runner.cpp
// name them after the pool's process), not those of tests running beside it.
std::vector<std::string> item_blocks() {
    const std::string arguments = "shmpool_a_" + std::to_string(::getpid()) + "_";
    const std::string results = "shmpool_r_" + std::to_string(::getpid()) + "_";
    std::vector<std::string> out;
    for (const auto& name : shmpool::test::list_shm_names()) {
        if (name.starts_with(arguments) || name.starts_with(results)) out.push_back(name);
    }
    return out;
}

// Whether this kernel pre-faults on request (MADV_POPULATE_WRITE, Linux 5.14): prefault() is
// a hint, and a no-op where it is not.
bool kernel_prefaults() {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
#ifdef MADV_POPULATE_WRITE
    const bool ok = ::madvise(p, 4096, MADV_POPULATE_WRITE) == 0;
#else
    const bool ok = false;
#endif
    ::munmap(p, 4096);
    return ok;
}

TEST(PoolBigItems, ArgumentsBiggerThanTheSlotArriveWhole) {
    Pool pool({.workers = 2, .slot_bytes = 4096});
    EXPECT_EQ(pool.submit(length_of_task, std::string(10000, 'x')).get(), 10000u);
    const std::string eight_mib(std::size_t{8} << 20, 'y');
    EXPECT_EQ(pool.submit(length_of_task, eight_mib).get(), eight_mib.size());
    // Small and big items mixed in one map: each big one opens a chunk of its own.
    std::vector<std::string> input;
    for (std::size_t i = 0; i < 40; ++i)
        input.emplace_back(i % 3 == 0 ? 5000 + i : i, 'z');
    const auto lengths = pool.map(length_of_task, input, 8);
    ASSERT_EQ(lengths.size(), input.size());
    for (std::size_t i = 0; i < input.size(); ++i)
        EXPECT_EQ(lengths[i], input[i].size()) << i;
    EXPECT_TRUE(item_blocks().empty());
}

TEST(PoolBigItems, ResultsBiggerThanTheSlotComeBackWholeAndInOrder) {
    Pool pool({.workers = 2, .slot_bytes = 4096});
    EXPECT_EQ(pool.submit(shout_task, std::string(1000, 'x'), 5).get(),
              shout(std::string(1000, 'x'), 5));
    const std::string big = pool.submit(bytes_or_die_task, std::size_t{64} << 20, 'q', never).get();
    EXPECT_EQ(big.size(), std::size_t{64} << 20);
    EXPECT_EQ(big.find_first_not_of('q'), std::string::npos);
    std::vector<std::tuple<std::size_t, char, std::size_t>> input;
    for (std::size_t i = 0; i < 30; ++i)
        input.emplace_back(i % 4 == 1 ? 3000 + 100 * i : i, static_cast<char>('a' + i), never);
    const auto out = pool.starmap(bytes_or_die_task, input, 10);
    ASSERT_EQ(out.size(), input.size());
    for (std::size_t i = 0; i < input.size(); ++i)
        EXPECT_EQ(out[i], std::string(std::get<0>(input[i]), std::get<1>(input[i]))) << i;
    EXPECT_TRUE(item_blocks().empty());
}

TEST(PoolBigItems, ABigTriviallyCopyableItemIsNotPackedAndNotLimited) {
    Pool pool({.workers = 2, .slot_bytes = 4096});
    std::vector<BigRecord> input(5);
    for (std::size_t i = 0; i < input.size(); ++i)
        input[i].values.fill(static_cast<std::int32_t>(i));
    const auto out = pool.map(bumped_task, input);
    ASSERT_EQ(out.size(), input.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
        EXPECT_EQ(out[i].values.front(), static_cast<std::int32_t>(i) + 1);
        EXPECT_EQ(out[i].values.back(), static_cast<std::int32_t>(i) + 1);
    }
}

TEST(PoolBigItems, AResultAboveMaxResultBytesFailsOnlyItsItem) {
    // The limit is on the result as encoded: a string of n bytes takes n + 8.
    Pool pool({.workers = 1, .slot_bytes = 4096, .max_result_bytes = 100008});
    try {
        pool.submit(bytes_or_die_task, std::size_t{100001}, 'x', never).get();
        ADD_FAILURE() << "no error";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.type(), "std::length_error");
        EXPECT_NE(e.message().find("max_result_bytes (100008)"), std::string::npos) << e.message();
        EXPECT_NE(std::string(e.what()).find("bytes_or_die_task"), std::string::npos) << e.what();
    }
    EXPECT_EQ(pool.submit(bytes_or_die_task, std::size_t{100000}, 'x', never).get().size(),
              100000u);
    EXPECT_THROW(Pool({.workers = 1, .max_result_bytes = 0}), std::invalid_argument);
    EXPECT_TRUE(item_blocks().empty());
}

TEST(PoolBigItems, AWorkerKilledOnABigArgumentLeavesNoBlockAndIsRetried) {
    Pool pool({.workers = 2, .max_retries = 1, .slot_bytes = 4096});
    // Every attempt dies: the item fails after its retry, each attempt with a block of its own.
    try {
        pool.submit(length_or_die_task, std::string(50000, 'k'), std::size_t{40000}).get();
        ADD_FAILURE() << "no error";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_EQ(e.signal(), SIGKILL);
        EXPECT_EQ(e.attempts(), 2);
    }
    EXPECT_TRUE(item_blocks().empty());
    // Big arguments around a crash in the same map come back whole.
    std::vector<std::tuple<std::string, std::size_t>> input;
    for (std::size_t i = 0; i < 12; ++i)
        input.emplace_back(std::string(i == 7 ? 90000 : 6000 + i, 'm'), std::size_t{80000});
    Pool once({.workers = 2, .max_retries = 0, .slot_bytes = 4096});
    try {
        once.starmap(length_or_die_task, input, 3);
        ADD_FAILURE() << "no error";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_EQ(e.item(), 7u);
    }
    EXPECT_TRUE(item_blocks().empty());
}

TEST(PoolBigItems, AWorkerKilledAfterABigResultDeliversItAndLeavesNoBlock) {
    // One chunk: item 0's result goes into a block, item 1 kills the worker. Item 0 is delivered
    // from its block, item 1 fails, item 2 runs again on the replacement, no block is left.
    Pool pool({.workers = 1, .max_retries = 0, .slot_bytes = 4096});
    std::vector<int> input{0, 1, 2};
    std::size_t seen = 0;
    try {
        for (const std::string& r : pool.imap(big_then_die_task, input, 3)) {
            EXPECT_EQ(r, std::string(20000, 'a'));
            ++seen;
        }
        ADD_FAILURE() << "no error";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_EQ(e.item(), 1u);
    }
    EXPECT_EQ(seen, 1u);
    EXPECT_EQ(pool.submit(big_then_die_task, 2).get(), "aa");
    EXPECT_TRUE(item_blocks().empty());
}

TEST(PoolPrefault, WorkersMapEveryPageOfTheSharedBlocksOnlyWhenAskedTo) {
    if (!kernel_prefaults()) GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE";
    // Sparse blocks: a page exists only once someone touches it, so residency tells whether the
    // worker pre-faulted its mapping.
    const std::size_t size = std::size_t{4} << 20;
    auto sparse = shmpool::SharedMemory::create(size, {.reserve = false});
    auto other = shmpool::SharedMemory::create(size, {.reserve = false});
    shmpool::test::Unlinker u{sparse.name(), other.name()};
    const std::size_t pages = size / static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    {
        Pool pool({.workers = 1, .shared_blocks = {sparse.name()}, .prefault_shared_blocks = true});
        EXPECT_EQ(pool.submit(resident_pages_task, sparse.name()).get(), pages);
    }
    Pool pool({.workers = 1, .shared_blocks = {other.name()}});
    // Untouched but for a page or two (a size probe reads the last one).
    EXPECT_LT(pool.submit(resident_pages_task, other.name()).get(), pages / 2);
}

}  // namespace
