// RobustMutex and RobustCondition across real processes killed by real signals.
#include "shmpool/shm/robust_mutex.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "posix/sys.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "test_support.hpp"

using shmpool::LockResult;
using shmpool::RobustLock;
using shmpool::RobustMutex;
using shmpool::SharedMemory;
using shmpool::test::Child;
using shmpool::test::unique_name;
using namespace std::chrono_literals;

namespace {

struct Guarded {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 256, {.guarded = true});
    ~Guarded() {
        try {
            SharedMemory::remove(name);
        } catch (...) {
        }
    }
};

// Forks a child that takes the lock and dies of SIGKILL while holding it; returns when it is dead.
void die_holding(RobustMutex& m) {
    pid_t pid = ::fork();
    if (pid == 0) {
        (void)m.lock();
        ::kill(::getpid(), SIGKILL);
        ::_exit(1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

}  // namespace

TEST(RobustMutex, GuardedBlockKeepsItsDataSizeAndCarriesALock) {
    Guarded g;
    EXPECT_TRUE(g.shm.guarded());
    EXPECT_EQ(g.shm.size(), 256u);
    EXPECT_EQ(g.shm.mapped_size(), 256u + 64u);
    SharedMemory again = SharedMemory::attach(g.name);
    EXPECT_TRUE(again.guarded());
    EXPECT_EQ(again.size(), 256u);
    EXPECT_EQ(&again.mutex(), &again.mutex());
    SharedMemory plain = SharedMemory::create(unique_name(), 64, {.track = false});
    EXPECT_FALSE(plain.guarded());
    EXPECT_THROW(plain.mutex(), std::logic_error);
    plain.unlink();
}

TEST(RobustMutex, LocksUnlocksAndRefusesToDeadlockItsOwnThread) {
    Guarded g;
    RobustMutex& m = g.shm.mutex();
    EXPECT_EQ(m.lock(), LockResult::acquired);
    EXPECT_TRUE(m.state().locked);
    EXPECT_EQ(m.state().holder_tid, ::gettid());
    try {
        (void)m.lock();
        ADD_FAILURE() << "relocking succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
    }
    m.unlock();
    EXPECT_FALSE(m.state().locked);
    auto r = m.try_lock();
    ASSERT_TRUE(r);
    m.unlock();
}

TEST(RobustMutex, TryLockForTimesOutWhileAnotherProcessHoldsIt) {
    Guarded g;
    Child holder({shmpool::test::helper_path(), "lock", g.name, "wait"});
    ASSERT_EQ(holder.read_line(), "locked clean");
    EXPECT_EQ(g.shm.mutex().state().holder_tid, holder.pid());
    EXPECT_FALSE(g.shm.mutex().try_lock());
    EXPECT_FALSE(g.shm.mutex().try_lock_for(20ms));
    holder.close_stdin();
    ASSERT_TRUE(holder.wait());
}

TEST(RobustMutex, TheNextLockerLearnsThatTheHolderWasKilledAndRepairs) {
    Guarded g;
    Child holder({shmpool::test::helper_path(), "lock", g.name, "wait"});
    ASSERT_EQ(holder.read_line(), "locked clean");
    holder.kill(SIGKILL);
    ASSERT_TRUE(holder.wait());
    EXPECT_TRUE(g.shm.mutex().state().owner_died);
    {
        RobustLock lock(g.shm.mutex());
        ASSERT_TRUE(lock.owner_died());
        EXPECT_TRUE(g.shm.mutex().state().inconsistent);
        EXPECT_EQ(g.shm.data()[0], std::byte{0xab});  // what the dead holder left half-done
        std::memset(g.shm.data(), 0, g.shm.size());   // the repair
        lock.make_consistent();
    }
    RobustLock again(g.shm.mutex());
    EXPECT_FALSE(again.owner_died());
}

TEST(RobustMutex, GivingUpMakesTheMutexUnusableWithAClearError) {
    Guarded g;
    die_holding(g.shm.mutex());
    { RobustLock lock(g.shm.mutex()); }  // owner died, not repaired: gives up
    EXPECT_TRUE(g.shm.mutex().state().not_recoverable);
    try {
        RobustLock lock(g.shm.mutex());
        ADD_FAILURE() << "a given-up mutex was locked";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::state_not_recoverable);
        EXPECT_NE(std::string(e.what()).find("not recoverable"), std::string::npos);
    }
}

TEST(RobustMutex, AThousandLockAndKillCyclesNeverDeadlock) {
    Guarded g;
    RobustMutex& m = g.shm.mutex();
    for (int i = 0; i < 1000; ++i) {
        die_holding(m);
        auto r = m.try_lock_for(5s);  // bounded: a deadlock fails the test instead of hanging it
        ASSERT_TRUE(r) << "cycle " << i;
        ASSERT_EQ(*r, LockResult::owner_died) << "cycle " << i;
        m.make_consistent();
        m.unlock();
    }
    EXPECT_EQ(m.lock(), LockResult::acquired);
    m.unlock();
}

TEST(RobustCondition, WakesAWaiterInAnotherProcess) {
    Guarded g;
    Child waiter({shmpool::test::helper_path(), "wait-condition", g.name});
    ASSERT_EQ(waiter.read_line(), "waiting");
    {
        RobustLock lock(g.shm.mutex());
        g.shm.data()[0] = std::byte{1};
    }
    g.shm.condition().notify_all();
    EXPECT_EQ(waiter.read_line(), "woken");
    auto status = waiter.wait();
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

TEST(RobustCondition, AKilledWaiterDoesNotWedgeIt) {
    Guarded g;
    {
        Child doomed({shmpool::test::helper_path(), "wait-condition", g.name});
        ASSERT_EQ(doomed.read_line(), "waiting");
        // Holding the lock proves the waiter released it: it is inside the wait when killed.
        RobustLock held(g.shm.mutex());
        ASSERT_FALSE(held.owner_died());
        doomed.kill(SIGKILL);
        ASSERT_TRUE(doomed.wait());
    }
    Child waiter({shmpool::test::helper_path(), "wait-condition", g.name});
    ASSERT_EQ(waiter.read_line(), "waiting");
    {
        RobustLock lock(g.shm.mutex());
        EXPECT_FALSE(lock.owner_died());  // the doomed waiter did not hold the lock while waiting
        g.shm.data()[0] = std::byte{1};
    }
    g.shm.condition().notify_one();
    EXPECT_EQ(waiter.read_line(), "woken");
}

TEST(RobustCondition, WaitForTimesOutAndRelocks) {
    Guarded g;
    RobustLock lock(g.shm.mutex());
    EXPECT_FALSE(g.shm.condition().wait_for(lock, 10ms, [] { return false; }));
    EXPECT_TRUE(lock.owns_lock());
    EXPECT_EQ(g.shm.mutex().state().holder_tid, ::gettid());
}

TEST(RobustCondition, AnInterruptedWaitReturnsAsASpuriousWakeUpWithTheLockHeld) {
    Guarded g;
    RobustLock lock(g.shm.mutex());
    shmpool::sys::inject_failure(shmpool::sys::Call::futex_wait, EINTR);
    // EINTR is not retried (a retry would stretch the deadline): the wait ends, not timed out.
    bool woken = g.shm.condition().wait_for(lock, shmpool::test::hang_guard);
    shmpool::sys::clear_injected_failures();
    EXPECT_TRUE(woken) << "the interrupted wait was retried until it timed out";
    EXPECT_TRUE(lock.owns_lock());
    EXPECT_EQ(g.shm.mutex().state().holder_tid, ::gettid());
}

TEST(RobustCondition, AWaitWithAPredicateGoesOnAfterInterruptions) {
    Guarded g;
    RobustLock lock(g.shm.mutex());
    shmpool::sys::inject_failure(shmpool::sys::Call::futex_wait, EINTR, 3);
    std::thread notifier([&] {
        RobustLock l(g.shm.mutex());  // taken once the waiter is inside its wait
        g.shm.data()[0] = std::byte{1};
        g.shm.condition().notify_all();
    });
    bool met = g.shm.condition().wait_for(lock, shmpool::test::hang_guard,
                                          [&] { return g.shm.data()[0] == std::byte{1}; });
    lock.unlock();
    notifier.join();
    shmpool::sys::clear_injected_failures();
    EXPECT_TRUE(met);
}

TEST(GuardedList, CarriesALockThatCPythonLayoutIgnores) {
    std::string name = unique_name();
    auto list = shmpool::ShareableList::create(name, {1, "two"}, {.guarded = true});
    EXPECT_TRUE(list.guarded());
    auto plain = shmpool::ShareableList::create(unique_name(), {1, "two"}, {.track = false});
    // The layout part is byte-for-byte the unguarded one.
    ASSERT_EQ(list.shm().size(), plain.shm().size());
    EXPECT_EQ(std::memcmp(list.shm().data(), plain.shm().data(), plain.shm().size()), 0);
    plain.unlink();
    auto again = shmpool::ShareableList::attach(name);
    EXPECT_TRUE(again.guarded());
    {
        auto lock = again.lock();
        again.set(0, 5);
    }
    EXPECT_EQ(list.get(0), shmpool::Value(5));
    EXPECT_TRUE(list.layout_intact());
    list.unlink();
}
