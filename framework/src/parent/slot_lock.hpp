// The slot lock: a spinlock over everything a round of harvesting and dispatching touches (the
// parent's side of the slot states, the chunks in flight, the jobs' retry counts and progress).
// Functions that need it take a `const SlotsLocked&`, the proof that the caller holds it.
//
// Lock order (a thread holding one may take those after it, never before):
//   SlotLock -> WorkerSet's mutex -> JobQueue's mutex -> CallbackQueue's mutex -> a sink's own
// The watcher's, the stderr relay's and the fork server's (ForkServer, taken under WorkerSet's
// to reap a forked worker) mutexes are leaves. Under the SlotLock, the blocks of big arguments
// and results are created, read and removed, which takes the shm library's registry lock and
// talks to the tracker (leaves too): a big item's copy holds the SlotLock for its duration. No
// user callback runs under any of them (callback_queue.hpp).
#pragma once

#include <atomic>
#include <thread>

#include "posix/sys.hpp"

namespace shmpool::detail {

class SlotLock {
  public:
    bool try_lock() noexcept { return !busy_.test_and_set(std::memory_order_acquire); }
    // The holder may have been preempted (more busy threads than cores): after a short spin,
    // give the core away rather than burn the time slice it needs to finish.
    void lock() noexcept {
        for (unsigned i = 1; busy_.test_and_set(std::memory_order_acquire); ++i) {
            if (i % 64 == 0) {
                std::this_thread::yield();
            } else {
                sys::cpu_relax();
            }
        }
    }
    void unlock() noexcept { busy_.clear(std::memory_order_release); }

  private:
    std::atomic_flag busy_ = ATOMIC_FLAG_INIT;
};

/// Held only by a SlotGuard: passing one proves the slot lock is held.
class SlotsLocked {
    friend class SlotGuard;
    SlotsLocked() = default;
};

/// Holds the slot lock for its scope (lock()), or not at all (try_lock() failed: owns() false).
class SlotGuard {
  public:
    enum Mode { wait, try_only };
    explicit SlotGuard(SlotLock& lock, Mode mode = wait) noexcept : lock_(&lock) {
        if (mode == wait) {
            lock.lock();
            owns_ = true;
        } else {
            owns_ = lock.try_lock();
        }
    }
    ~SlotGuard() { release(); }
    SlotGuard(const SlotGuard&) = delete;
    SlotGuard& operator=(const SlotGuard&) = delete;
    bool owns() const noexcept { return owns_; }
    const SlotsLocked& proof() const noexcept { return proof_; }
    void release() noexcept {
        if (owns_) lock_->unlock();
        owns_ = false;
    }

  private:
    SlotLock* lock_;
    bool owns_ = false;
    SlotsLocked proof_;
};

}  // namespace shmpool::detail
