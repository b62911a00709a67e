// PoolHost: a C++ Pool on a thread of its own, which creates it, lives as long as it and
// destroys it. Workers get SIGKILL when the thread that launched them exits (PR_SET_PDEATHSIG):
// a pool made from a short-lived Python thread must keep them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>

#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"

namespace shmpool::python {

class PoolHost {
  public:
    enum class Stop { none, join, terminate };

    /// Starts the thread, which creates the pool (wait_started() says when).
    explicit PoolHost(PoolOptions options);
    /// Terminates the pool if it runs, and joins the thread.
    ~PoolHost();
    PoolHost(const PoolHost&) = delete;
    PoolHost& operator=(const PoolHost&) = delete;

    /// Whether the pool was created, or failed to be (start_error()), waiting up to `timeout`.
    bool wait_started(std::chrono::milliseconds timeout);
    /// Whether the pool is stopped and destroyed, waiting up to `timeout`.
    bool wait_finished(std::chrono::milliseconds timeout);
    /// Why the pool could not be created, or null.
    std::exception_ptr start_error();
    /// Asks the host to close and join the pool, or to terminate it; a terminate overrides a
    /// join that has not begun.
    void stop(Stop how);
    /// Calls `f(pool)` while the pool exists; PoolClosed once it is gone.
    template <class F>
    auto with_pool(F f) {
        std::shared_lock alive(alive_);
        if (!pool_) throw PoolClosed();
        return f(*pool_);
    }
    /// The statistics, kept when the pool is gone.
    PoolStats stats();

  private:
    void run(PoolOptions options);

    // Lock order: alive_, then mutex_ (run() records a start error under both).
    std::shared_mutex alive_;  // pool_: shared to use it, exclusive to make or destroy it
    std::optional<Pool> pool_;
    PoolStats final_stats_;
    std::mutex mutex_;  // started_, finished_, stop_, start_error_
    std::condition_variable cv_;
    bool started_ = false;
    bool finished_ = false;
    Stop stop_ = Stop::none;
    std::exception_ptr start_error_;
    std::thread thread_;  // last: it starts with everything above constructed
};

}  // namespace shmpool::python
