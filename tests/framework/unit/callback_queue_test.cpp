// CallbackQueue alone: callbacks on their own thread, one at a time, in order, with none of the
// pool's locks held, and surviving a callback that throws.
#include "parent/callback_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace {

using namespace shmpool::detail;

shmpool::WorkerEvent event(unsigned worker) {
    shmpool::WorkerEvent e;
    e.worker = worker;
    return e;
}

TEST(CallbackQueue, EventsAreDeliveredInOrderOneAtATimeOffTheCallersThread) {
    std::vector<unsigned> seen;
    std::atomic<int> inside{0};
    std::atomic<bool> overlapped{false};
    std::atomic<bool> on_own_thread{true};
    const auto caller = std::this_thread::get_id();
    shmpool::PoolOptions options;
    options.on_worker_exit = [&](const shmpool::WorkerEvent& e) {
        if (inside.fetch_add(1) != 0) overlapped = true;
        if (std::this_thread::get_id() == caller || !in_pool_callback()) on_own_thread = false;
        seen.push_back(e.worker);
        inside.fetch_sub(1);
    };
    {
        CallbackQueue q(options);
        std::thread other([&] {
            for (unsigned i = 100; i < 200; ++i)
                q.push(event(i));
        });
        for (unsigned i = 0; i < 100; ++i)
            q.push(event(i));
        other.join();
        q.stop();  // delivers everything queued, then ends
    }
    EXPECT_FALSE(overlapped.load());
    EXPECT_TRUE(on_own_thread.load());
    ASSERT_EQ(seen.size(), 200u);
    // Each producer's events keep their order.
    std::vector<unsigned> mine, theirs;
    for (unsigned w : seen)
        (w < 100 ? mine : theirs).push_back(w);
    EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end()));
    EXPECT_TRUE(std::is_sorted(theirs.begin(), theirs.end()));
    EXPECT_FALSE(in_pool_callback());
}

TEST(CallbackQueue, ABlockedCallbackNeverBlocksWhoQueuesEvents) {
    std::atomic<bool> release{false};
    std::atomic<int> delivered{0};
    shmpool::PoolOptions options;
    options.on_worker_exit = [&](const shmpool::WorkerEvent&) {
        while (!release.load())
            std::this_thread::yield();  // blocked until the test is done
        ++delivered;
    };
    CallbackQueue q(options);
    for (unsigned i = 0; i < 1000; ++i)
        q.push(event(i));  // returns while the first callback is still blocked
    EXPECT_LE(delivered.load(), 0);
    release = true;
    q.stop();
    EXPECT_EQ(delivered.load(), 1000);
}

TEST(CallbackQueue, ACallbackThatThrowsLosesOnlyItsEvent) {
    int delivered = 0;
    shmpool::PoolOptions options;
    options.on_worker_exit = [&](const shmpool::WorkerEvent& e) {
        if (e.worker == 1) throw std::runtime_error("boom");
        ++delivered;
    };
    CallbackQueue q(options);
    q.push(event(0));
    q.push(event(1));
    q.push(event(2));
    q.stop();
    EXPECT_EQ(delivered, 2);
}

TEST(CallbackQueue, WithoutCallbacksNothingIsQueuedAndNoThreadRuns) {
    shmpool::PoolOptions options;
    CallbackQueue q(options);
    EXPECT_FALSE(q.wants_progress());
    q.push(event(0));  // dropped: nobody asked
    q.stop();
}

}  // namespace
