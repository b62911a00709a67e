// The slot protocol in one process: a thread plays the worker against the parent's side, through
// the same futex hand-over as between processes: both buffers, the older queued chunk first, and
// the reclaim-versus-claim race that lets an idle worker take a chunk queued behind a busy one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "protocol/bell.hpp"
#include "protocol/control_block.hpp"
#include "protocol/records.hpp"
#include "protocol/slot.hpp"

namespace {

using namespace shmpool::detail;

// Spins until `done()`: the other side is a thread that only spins or sleeps on the doorbell.
// False after 10 s, so that a broken protocol fails the test instead of hanging it.
template <class Done>
bool spin_until(Done done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
    }
    return true;
}

// A control block of one slot in this process's memory.
class OneSlot : public ::testing::Test {
  protected:
    OneSlot() : block_(control_size(1, 4096)) {
        format_control_block(block_.data(), {.workers = 1, .slot_bytes = 4096, .initializer = ""});
        view_ = ControlView(block_.data());
    }
    ParentSlot parent(unsigned b = 0) { return ParentSlot(view_, 0, b); }
    WorkerSlot worker() { return WorkerSlot(view_, 0); }
    std::vector<std::byte> block_;
    ControlView view_;
};

TEST_F(OneSlot, AChunkGoesFromPostThroughClaimAndPublishBackToFree) {
    ParentSlot p = parent();
    p.reset_for_launch();
    std::thread w([&] {
        WorkerSlot slot = worker();
        const Work work = slot.wait_for_work(0);  // asleep until posted
        ASSERT_EQ(work.state, SlotState::queued);
        ASSERT_EQ(work.buffer, 0u);
        ASSERT_TRUE(slot.claim(work.buffer));
        RecordWriter out(slot.response_area(), slot.capacity());
        ASSERT_TRUE(out.put(RecordKind::value, "42"));
        slot.note_response(out.used(), 1);
        slot.publish(123);
        Bell(view_.header()).ring_from_worker();
    });
    Bell bell(view_.header());
    const std::uint32_t seen = bell.seen();
    p.post(10, 1, 1);
    while (!p.finished()) {  // sleeps on the bell the worker rings: no timing
        const timespec backstop{1, 0};
        bell.sleep(seen, &backstop);
    }
    w.join();
    const ChunkProgress progress = p.progress();
    EXPECT_TRUE(progress.claimed);
    EXPECT_EQ(progress.completed, 1u);
    EXPECT_EQ(progress.busy_ns, 123u);
    RecordReader in(p.response_area(), progress.response_bytes);
    RecordReader::Record r;
    ASSERT_TRUE(in.next(r));
    EXPECT_EQ(r.bytes, "42");
    p.release(false);
    EXPECT_EQ(p.state(), SlotState::free);
}

TEST_F(OneSlot, ReclaimAndClaimRacingForAQueuedChunkExactlyOneWins) {
    ParentSlot p = parent();
    p.reset_for_launch();
    constexpr int rounds = 20000;
    std::atomic<int> round{-1};
    std::atomic<int> claimed{0};
    std::thread w([&] {
        WorkerSlot slot = worker();
        for (int i = 0; i < rounds; ++i) {
            while (round.load(std::memory_order_acquire) < i) {
            }
            if (slot.claim(0)) {
                ++claimed;
                slot.publish(0);
            }
        }
    });
    int reclaimed = 0;
    for (int i = 0; i < rounds; ++i) {
        p.post(10, static_cast<std::uint32_t>(i + 1), 1);
        round.store(i, std::memory_order_release);  // both race now
        if (p.try_reclaim()) {
            ++reclaimed;
            EXPECT_EQ(p.state(), SlotState::free);
        } else {
            while (!p.finished()) {  // the worker won: it runs the chunk, as posted
            }
            EXPECT_TRUE(p.progress().claimed);
            p.release(false);
        }
    }
    w.join();
    EXPECT_EQ(reclaimed + claimed.load(), rounds);  // never both, never neither
    RecordProperty("reclaimed", reclaimed);
}

TEST_F(OneSlot, AChunkReclaimedBeforeItWasClaimedIsNeverRunAndTheWorkerWaitsForTheNext) {
    ParentSlot p = parent();
    p.reset_for_launch();
    p.post(10, 1, 1);
    ASSERT_TRUE(p.try_reclaim());
    WorkerSlot w = worker();
    EXPECT_FALSE(w.claim(0));  // what the worker finds when it wakes late
    EXPECT_EQ(p.state(), SlotState::free);
    EXPECT_FALSE(p.progress().claimed);
    EXPECT_FALSE(p.try_reclaim());  // nothing queued any more
}

TEST_F(OneSlot, AnIdleWorkerAsleepIsWokenToShutDown) {
    ParentSlot p = parent();
    p.reset_for_launch();
    std::atomic<bool> asleep{false};
    std::thread w([&] {
        asleep = true;
        EXPECT_EQ(worker().wait_for_work(0).state, SlotState::shutdown);
    });
    while (!asleep.load()) {
    }
    EXPECT_TRUE(p.order_shutdown());  // whether it sleeps already or not, it sees shutdown
    w.join();
    EXPECT_FALSE(p.order_shutdown());  // not free any more
}

TEST_F(OneSlot, ADeadWorkersSlotTellsWhatItFinished) {
    ParentSlot p = parent();
    p.reset_for_launch();
    p.post(10, 1, 1);
    EXPECT_FALSE(p.progress().claimed);  // died before claiming: nothing ran
    WorkerSlot w = worker();
    ASSERT_TRUE(w.claim(0));
    w.note_response(17, 3);  // three items done, then the worker "dies" on the fourth
    const ChunkProgress progress = p.progress();
    EXPECT_TRUE(progress.claimed);
    EXPECT_EQ(progress.completed, 3u);
    EXPECT_EQ(progress.response_bytes, 17u);
}

TEST_F(OneSlot, AStartFailureLeavesItsReasonAndErrorForTheParent) {
    ParentSlot p = parent();
    p.reset_for_launch();
    WorkerSlot w = worker();
    w.announce_attached(1234);
    w.report_start_failure(StartFailure::initializer, error_payload("std::runtime_error", "no"));
    EXPECT_EQ(p.attached_pid(), 1234);
    EXPECT_EQ(p.ready_pid(), 0);
    EXPECT_EQ(p.start_failure(), StartFailure::initializer);
    RecordReader in(p.response_area(), p.capacity());
    RecordReader::Record r;
    ASSERT_TRUE(in.next(r));
    EXPECT_EQ(read_error_payload(r.bytes).message, "no");
}

TEST_F(OneSlot, TheWorkerRunsTheOlderOfTwoQueuedChunksFirstWhicheverBufferItIsIn) {
    ParentSlot p0 = parent(0);
    ParentSlot p1 = parent(1);
    p0.reset_for_launch();
    WorkerSlot w = worker();
    p1.post(10, 7, 1);  // posted first, into buffer 1
    p0.post(10, 8, 0);
    Work work = w.wait_for_work(0);
    EXPECT_EQ(work.state, SlotState::queued);
    EXPECT_EQ(work.buffer, 1u);
    ASSERT_TRUE(w.claim(1));
    w.publish(0);
    work = w.wait_for_work(0);  // the other is still queued: no sleep
    EXPECT_EQ(work.buffer, 0u);
    // Post counts wrap around: the difference decides, not the value.
    p1.release(false);
    p1.post(10, 0, 0);  // posted after 0xffffffff in buffer 0
    ASSERT_TRUE(p0.try_reclaim());
    p0.post(10, 0xffffffffu, 0);
    EXPECT_EQ(w.wait_for_work(0).buffer, 0u);
}

TEST_F(OneSlot, AChunkQueuedBehindARunningOneIsTakenBackOrRunExactlyOnce) {
    // The worker runs buffer 0's chunk, then goes for buffer 1's while the parent tries to take
    // it back for an idle worker: every round, exactly one of them gets it.
    ParentSlot p0 = parent(0);
    ParentSlot p1 = parent(1);
    p0.reset_for_launch();
    constexpr int rounds = 5000;
    std::atomic<int> ran_second{0};
    std::atomic<int> done_rounds{0};
    std::thread w([&] {
        WorkerSlot slot = worker();
        for (;;) {
            const Work work = slot.wait_for_work(100000);
            if (work.state == SlotState::shutdown) return;
            if (!slot.claim(work.buffer)) continue;
            if (work.buffer == 1) ++ran_second;
            slot.publish(0);
        }
    });
    int reclaimed = 0;
    std::uint32_t posted = 0;
    bool stuck = false;
    for (int i = 0; i < rounds && !stuck; ++i) {
        p0.post(10, ++posted, 1);
        p1.post(10, ++posted, 0);
        stuck = !spin_until([&] { return p0.finished(); });  // the worker runs the older first
        if (p1.try_reclaim()) {
            ++reclaimed;
        } else {
            stuck |= !spin_until([&] { return p1.finished(); });
            p1.release(false);
        }
        p0.release(false);
        ++done_rounds;
    }
    EXPECT_FALSE(stuck) << "the worker stopped taking chunks";
    EXPECT_TRUE(spin_until([&] { return p0.order_shutdown(); }));
    w.join();
    EXPECT_EQ(reclaimed + ran_second.load(), done_rounds.load());  // never both, never neither
    RecordProperty("reclaimed", reclaimed);
}

TEST_F(OneSlot, TheBellWakesASleeperAndNeverLosesARing) {
    Bell bell(view_.header());
    for (int i = 0; i < 200; ++i) {
        const std::uint32_t seen = bell.seen();
        std::thread ringer([&] { bell.ring_from_worker(); });
        bell.sleep(seen, nullptr);  // returns: the ring came before or during the sleep
        ringer.join();
        EXPECT_NE(bell.seen(), seen);
    }
}

}  // namespace
