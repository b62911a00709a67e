// The big cases, under the `stress` label (make test runs them too): a gibibyte for_each_index,
// a million items through a pipeline, pools created over and over under random worker kills.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "shmpool/framework/pipeline.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "tasks.hpp"
#include "test_support.hpp"

using namespace shmpool::test::tasks;
using shmpool::Pool;
using shmpool::SharedArray;

namespace {

long stress_square(int x) {
    return static_cast<long>(x) * x;
}
SHMPOOL_TASK(stress_square_task, stress_square);
long stress_plus_one(long x) {
    return x + 1;
}
SHMPOOL_TASK(stress_plus_one_task, stress_plus_one);

// Children of this process (every thread's) that are this program re-executed: the pools'
// workers, not the tracker.
std::vector<pid_t> my_workers() {
    std::vector<pid_t> out;
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    const std::string tasks = "/proc/" + std::to_string(::getpid()) + "/task";
    DIR* dir = ::opendir(tasks.c_str());
    if (dir == nullptr) return out;
    while (dirent* e = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): one thread reads it
        if (e->d_name[0] == '.') continue;
        std::ifstream in(tasks + "/" + e->d_name + "/children");
        for (pid_t pid = 0; in >> pid;) {
            if (std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec) == self)
                out.push_back(pid);
        }
    }
    ::closedir(dir);
    return out;
}

}  // namespace

TEST(Stress, ForEachIndexOverAGibibyteArray) {
    auto array = SharedArray<double>::create((std::size_t{1} << 30) / sizeof(double));
    shmpool::test::Unlinker u{array.name()};
    Pool pool({.workers = 2});
    pool.for_each_index(fill_task, array.size(), array.size() / 16, array.name());
    for (std::size_t i = 0; i < array.size(); i += 4099)
        ASSERT_EQ(array[i], static_cast<double>(i) * 0.5) << i;
    EXPECT_EQ(array[array.size() - 1], static_cast<double>(array.size() - 1) * 0.5);
}

TEST(Stress, AMillionItemsThroughAPipeline) {
    long sum = 0;
    std::uint64_t expected = 0;
    shmpool::Pipeline p;  // the default options
    p.source([i = 0]() mutable -> std::optional<int> {
         if (i == 1'000'000) return std::nullopt;
         return i++;
     })
        .stage(stress_square_task, shmpool::StageMode::parallel, 2)
        .stage(stress_plus_one_task, shmpool::StageMode::serial_in_order)
        .sink([&](long x) { sum += x; });
    auto stats = p.run();
    for (std::uint64_t i = 0; i < 1'000'000; ++i)
        expected += i * i + 1;
    EXPECT_EQ(static_cast<std::uint64_t>(sum), expected);
    EXPECT_EQ(stats.completed, 1'000'000u);
}

// The reporter's scenario of issue 11: pools created over and over while a thread kills a random
// worker every few milliseconds (the pace of the chaos, not a synchronisation). Every pool comes
// up and every result is exact.
TEST(Stress, UnderRandomKillsEveryPoolComesUpAndEveryResultIsExact) {
    std::atomic<bool> stop{false};
    std::atomic<int> kills{0};
    std::thread chaos([&] {
        std::mt19937 rng(12345);
#ifdef SHMPOOL_TEST_SANITIZED
        std::uniform_int_distribution<int> pause_ms(50, 300);  // workers start ten times slower
#else
        std::uniform_int_distribution<int> pause_ms(5, 30);
#endif
        while (!stop.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(rng)));
            std::vector<pid_t> workers = my_workers();
            if (workers.empty()) continue;
            ::kill(workers[rng() % workers.size()], SIGKILL);
            ++kills;
        }
    });
    std::size_t start_failures = 0;
    // Until the chaos has killed forty workers (about two in three during start-up here).
    for (int round = 0; round < 100'000 && kills.load() < 40; ++round) {
        // Enough attempts that random kills never exhaust them; the limit has its own tests.
        Pool pool({.workers = 2, .max_retries = 1000, .max_start_failures = 1000});
        const std::vector<int> got = pool.map(square_task, iota(50), 1);
        for (int i = 0; i < 50; ++i)
            ASSERT_EQ(got[static_cast<std::size_t>(i)], i * i);
        start_failures += pool.stats().start_failures;
    }
    stop = true;
    chaos.join();
    RecordProperty("start_failures", static_cast<int>(start_failures));
    EXPECT_GT(kills.load(), 0);
}
