// RobustMutex over a POSIX robust process-shared mutex; RobustCondition over a futex.
#include "shmpool/shm/robust_mutex.hpp"

#include <linux/futex.h>

#include <cerrno>
#include <climits>
#include <stdexcept>
#include <system_error>

#include "posix/sys.hpp"

namespace shmpool {
namespace {

// glibc's markers in __data.__owner (nptl/pthreadP.h) and the kernel's robust-futex bits.
constexpr int owner_inconsistent = INT_MAX;
constexpr int owner_not_recoverable = INT_MAX - 1;

[[noreturn]] void throw_pthread(int rc, const char* what) {
    if (rc == ENOTRECOVERABLE) {
        throw std::system_error(
            rc, std::generic_category(),
            "robust mutex is not recoverable: a holder died and its successor gave up "
            "without make_consistent()");
    }
    throw std::system_error(rc, std::generic_category(), what);
}

timespec deadline_after(std::chrono::nanoseconds timeout) {
    timespec now = sys::realtime_now();  // pthread_mutex_timedlock measures CLOCK_REALTIME
    auto total = std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) + timeout;
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(total);
    return {static_cast<time_t>(secs.count()), static_cast<long>((total - secs).count())};
}

}  // namespace

RobustMutex::RobustMutex() {
    pthread_mutexattr_t attr;
    ::pthread_mutexattr_init(&attr);
    ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    int rc = ::pthread_mutex_init(&mutex_, &attr);
    ::pthread_mutexattr_destroy(&attr);
    if (rc != 0) throw_pthread(rc, "pthread_mutex_init failed");
}

LockResult RobustMutex::result_of(int rc, const char* call) {
    if (rc == 0) return LockResult::acquired;
    if (rc == EOWNERDEAD) return LockResult::owner_died;
    throw_pthread(rc, call);
}

LockResult RobustMutex::lock() {
    int rc = ::pthread_mutex_lock(&mutex_);
    // A robust mutex of the default kind would deadlock on relock; say so instead.
    if (rc == EDEADLK) throw_pthread(rc, "robust mutex is already held by this thread");
    return result_of(rc, "pthread_mutex_lock failed");
}

std::optional<LockResult> RobustMutex::try_lock() {
    int rc = ::pthread_mutex_trylock(&mutex_);
    if (rc == EBUSY) return std::nullopt;
    return result_of(rc, "pthread_mutex_trylock failed");
}

std::optional<LockResult> RobustMutex::try_lock_for(std::chrono::nanoseconds timeout) {
    timespec deadline = deadline_after(timeout);
    int rc = ::pthread_mutex_timedlock(&mutex_, &deadline);
    if (rc == ETIMEDOUT) return std::nullopt;
    return result_of(rc, "pthread_mutex_timedlock failed");
}

void RobustMutex::unlock() {
    int rc = ::pthread_mutex_unlock(&mutex_);
    if (rc != 0) throw_pthread(rc, "pthread_mutex_unlock failed");
}

void RobustMutex::make_consistent() {
    int rc = ::pthread_mutex_consistent(&mutex_);
    if (rc != 0)
        throw_pthread(rc, "pthread_mutex_consistent failed (call it only after owner_died)");
}

RobustMutex::State RobustMutex::state() const noexcept {
    // Racy by nature (the answer may be stale at once), and glibc-specific: for inspection only.
    auto word = static_cast<unsigned>(
        std::atomic_ref<const int>(mutex_.__data.__lock).load(std::memory_order_relaxed));
    int owner = std::atomic_ref<const int>(mutex_.__data.__owner).load(std::memory_order_relaxed);
    State s;
    s.holder_tid = static_cast<pid_t>(word & FUTEX_TID_MASK);
    s.locked = s.holder_tid != 0;
    s.owner_died = (word & FUTEX_OWNER_DIED) != 0 && !s.locked;
    s.inconsistent = s.locked && owner == owner_inconsistent;
    s.not_recoverable = owner == owner_not_recoverable;
    return s;
}

bool RobustCondition::wait_impl(RobustLock& lock, const std::chrono::nanoseconds* timeout) {
    if (!lock.owns_lock()) throw std::logic_error("RobustCondition::wait needs a held RobustLock");
    if (lock.owner_died()) {
        throw std::logic_error(
            "RobustCondition::wait: repair the data and make_consistent() first");
    }
    // Read the sequence while holding the mutex: a notify after our unlock changes it, so the
    // futex wait below cannot miss it.
    std::uint32_t seen = sequence_.load(std::memory_order_acquire);
    lock.mutex_->unlock();
    timespec ts{};
    if (timeout) {
        auto secs = std::chrono::duration_cast<std::chrono::seconds>(*timeout);
        ts = {static_cast<time_t>(secs.count()), static_cast<long>((*timeout - secs).count())};
    }
    // EINTR and EAGAIN (a notify came first) end the wait early: a spurious wake-up, which the
    // caller's predicate absorbs.
    int rc = sys::futex_wait(&sequence_, seen, timeout ? &ts : nullptr);
    bool timed_out = rc != 0 && errno == ETIMEDOUT;
    lock.owner_died_ = lock.mutex_->lock() == LockResult::owner_died;
    return !timed_out;
}

void RobustCondition::wait(RobustLock& lock) {
    wait_impl(lock, nullptr);
}

bool RobustCondition::wait_for(RobustLock& lock, std::chrono::nanoseconds timeout) {
    return wait_impl(lock, &timeout);
}

void RobustCondition::notify_one() noexcept {
    sequence_.fetch_add(1, std::memory_order_acq_rel);
    sys::futex_wake(&sequence_, 1);
}

void RobustCondition::notify_all() noexcept {
    sequence_.fetch_add(1, std::memory_order_acq_rel);
    sys::futex_wake(&sequence_, INT_MAX);
}

}  // namespace shmpool
