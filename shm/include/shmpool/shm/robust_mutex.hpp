// RobustMutex, RobustLock and RobustCondition: a mutex and a condition variable that live in
// shared memory and survive the death of a process holding the lock.
//
// When a holder dies, the next locker gets the lock *and* is told (LockResult::owner_died): the
// data the mutex guards may be half-written. The application decides: repair it and call
// make_consistent(), after which the mutex works as before; or unlock without doing so, and the
// mutex becomes unusable for good (every later lock throws std::system_error ENOTRECOVERABLE).
// Never a deadlock, never a silent continue on torn data. (Boost.Interprocess throws on
// EOWNERDEAD without letting the application repair; iceoryx classic aborts.)
//
// These types are pinned (no copy, no move): construct them in place in a shared block, once, by
// the block's creator; other processes use them through the mapping. They need no destruction.
// A process must not unmap a block while it holds a lock in it.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

namespace shmpool {

enum class LockResult {
    acquired,    ///< locked normally
    owner_died,  ///< locked, but the previous holder died holding it: repair, then
                 ///< make_consistent()
};

class RobustMutex {
  public:
    /// Initialises a process-shared, robust, error-checking mutex in place.
    /// Throws std::system_error if pthread refuses.
    RobustMutex();
    ~RobustMutex() = default;  // nothing to release: the memory is the block's
    RobustMutex(const RobustMutex&) = delete;
    RobustMutex& operator=(const RobustMutex&) = delete;

    /// Waits for the mutex. Throws std::system_error: ENOTRECOVERABLE if a holder died and its
    /// successor gave up, EDEADLK if this thread already holds it.
    [[nodiscard]] LockResult lock();
    /// Locks if free; nothing if another holder has it. Errors as lock().
    [[nodiscard]] std::optional<LockResult> try_lock();
    /// Waits at most `timeout`; nothing if it expired. Errors as lock().
    [[nodiscard]] std::optional<LockResult> try_lock_for(std::chrono::nanoseconds timeout);
    /// Releases the mutex. After owner_died without make_consistent(), this makes it unusable.
    void unlock();
    /// Marks the state repaired after LockResult::owner_died (the caller holds the lock).
    void make_consistent();

    /// What the mutex looks like from outside, read without locking it (for inspection tools).
    struct State {
        bool locked = false;        ///< a live (or not yet noticed dead) thread holds it
        pid_t holder_tid = 0;       ///< that thread's id (its pid, for a single-threaded process)
        bool owner_died = false;    ///< the last holder died; nobody has locked it since
        bool inconsistent = false;  ///< held after an owner death, not yet repaired
        bool not_recoverable = false;  ///< unusable: a successor gave up
    };
    State state() const noexcept;

    pthread_mutex_t* native_handle() noexcept { return &mutex_; }

  private:
    LockResult result_of(int rc, const char* call);
    pthread_mutex_t mutex_;
};

/// Holds a RobustMutex for a scope. If the previous holder died, owner_died() says so; call
/// make_consistent() once the data is repaired. Leaving the scope without doing so gives up: the
/// mutex becomes unusable (see RobustMutex).
class RobustLock {
  public:
    explicit RobustLock(RobustMutex& mutex)
        : mutex_(&mutex), owner_died_(mutex.lock() == LockResult::owner_died) {}
    RobustLock(const RobustLock&) = delete;
    RobustLock& operator=(const RobustLock&) = delete;
    RobustLock(RobustLock&& other) noexcept
        : mutex_(std::exchange(other.mutex_, nullptr)), owner_died_(other.owner_died_) {}
    ~RobustLock() {
        if (mutex_ != nullptr) {
            try {
                mutex_->unlock();
            } catch (...) {  // unlocking a mutex we hold does not fail
            }
        }
    }

    bool owner_died() const noexcept { return owner_died_; }
    void make_consistent() {
        mutex_->make_consistent();
        owner_died_ = false;
    }
    void unlock() {
        RobustMutex* m = std::exchange(mutex_, nullptr);
        if (m) m->unlock();
    }
    bool owns_lock() const noexcept { return mutex_ != nullptr; }
    RobustMutex* mutex() const noexcept { return mutex_; }

  private:
    friend class RobustCondition;
    RobustMutex* mutex_;
    bool owner_died_;
};

/// A condition variable for RobustMutex, robust itself: it keeps no record of its waiters (a
/// futex on a sequence number), so a waiter that dies cannot wedge it. Spurious wake-ups happen;
/// wait with a predicate.
class RobustCondition {
  public:
    RobustCondition() noexcept = default;
    RobustCondition(const RobustCondition&) = delete;
    RobustCondition& operator=(const RobustCondition&) = delete;

    /// Unlocks, waits for a notification, relocks. If a holder died meanwhile, lock.owner_died()
    /// is true afterwards. Throws std::logic_error if the lock is not held or still inconsistent.
    void wait(RobustLock& lock);
    /// As wait(), for at most `timeout`; false if it timed out.
    bool wait_for(RobustLock& lock, std::chrono::nanoseconds timeout);
    /// Waits until pred() holds or `timeout` passes; returns pred().
    template <class Predicate>
    bool wait_for(RobustLock& lock, std::chrono::nanoseconds timeout, Predicate pred) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!pred()) {
            auto left = deadline - std::chrono::steady_clock::now();
            if (left <= std::chrono::nanoseconds::zero()) return pred();
            wait_for(lock, std::chrono::duration_cast<std::chrono::nanoseconds>(left));
        }
        return true;
    }

    void notify_one() noexcept;
    void notify_all() noexcept;

  private:
    bool wait_impl(RobustLock& lock, const std::chrono::nanoseconds* timeout);
    std::atomic<std::uint32_t> sequence_{0};
    static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "futex words must be lock-free");
};

}  // namespace shmpool
