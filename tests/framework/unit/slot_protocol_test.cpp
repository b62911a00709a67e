// The slot protocol in one process: a thread plays the worker against the parent's side, through
// the same futex hand-over as between processes, including the reclaim-versus-claim race that
// double-buffered slots rely on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "protocol/bell.hpp"
#include "protocol/control_block.hpp"
#include "protocol/records.hpp"
#include "protocol/slot.hpp"

namespace {

using namespace shmpool::detail;

// A control block of one slot in this process's memory.
class OneSlot : public ::testing::Test {
  protected:
    OneSlot() : block_(control_size(1, 4096)) {
        format_control_block(block_.data(), {.workers = 1, .slot_bytes = 4096, .initializer = ""});
        view_ = ControlView(block_.data());
    }
    ParentSlot parent() { return ParentSlot(view_, 0); }
    WorkerSlot worker() { return WorkerSlot(view_, 0); }
    std::vector<std::byte> block_;
    ControlView view_;
};

TEST_F(OneSlot, AChunkGoesFromPostThroughClaimAndPublishBackToFree) {
    ParentSlot p = parent();
    p.reset_for_launch();
    std::thread w([&] {
        WorkerSlot slot = worker();
        ASSERT_EQ(slot.wait_for_work(0), SlotState::queued);  // asleep until posted
        ASSERT_TRUE(slot.claim());
        RecordWriter out(slot.response_area(), slot.capacity());
        ASSERT_TRUE(out.put(RecordKind::value, "42"));
        slot.note_response(out.used(), 1);
        slot.publish(123);
        Bell(view_.header()).ring_from_worker();
    });
    Bell bell(view_.header());
    const std::uint32_t seen = bell.seen();
    p.post(10, 1);
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
            if (slot.claim()) {
                ++claimed;
                slot.publish(0);
            }
        }
    });
    int reclaimed = 0;
    for (int i = 0; i < rounds; ++i) {
        p.post(10, 1);
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
    p.post(10, 1);
    ASSERT_TRUE(p.try_reclaim());
    WorkerSlot w = worker();
    EXPECT_FALSE(w.claim());  // what the worker finds when it wakes late
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
        EXPECT_EQ(worker().wait_for_work(0), SlotState::shutdown);
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
    p.post(10, 1);
    EXPECT_FALSE(p.progress().claimed);  // died before claiming: nothing ran
    WorkerSlot w = worker();
    ASSERT_TRUE(w.claim());
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
