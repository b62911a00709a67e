// PoolHost: the thread that owns a C++ Pool for Python (pool_host.hpp).
#include "pool_host.hpp"

#include <utility>

namespace shmpool::python {

PoolHost::PoolHost(PoolOptions options)
    : thread_([this, o = std::move(options)]() mutable { run(std::move(o)); }) {
}

PoolHost::~PoolHost() {
    stop(Stop::terminate);
    thread_.join();
}

bool PoolHost::wait_started(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return started_; });
}

bool PoolHost::wait_finished(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return finished_; });
}

std::exception_ptr PoolHost::start_error() {
    std::lock_guard lock(mutex_);
    return start_error_;
}

void PoolHost::stop(Stop how) {
    {
        std::lock_guard lock(mutex_);
        if (stop_ == Stop::none || how == Stop::terminate) stop_ = how;
    }
    cv_.notify_all();
}

PoolStats PoolHost::stats() {
    std::shared_lock alive(alive_);
    return pool_ ? pool_->stats() : final_stats_;
}

void PoolHost::run(PoolOptions options) {
    // pool_ is written on this thread only (under alive_), so it reads it here without the lock.
    {
        std::unique_lock alive(alive_);
        try {
            pool_.emplace(std::move(options));
        } catch (...) {
            std::lock_guard lock(mutex_);
            start_error_ = std::current_exception();
        }
    }
    {
        std::unique_lock lock(mutex_);
        started_ = true;
        cv_.notify_all();
        if (pool_) cv_.wait(lock, [&] { return stop_ != Stop::none; });
    }
    if (pool_) {
        // Thread-safe calls, under no lock of ours: a caller may terminate meanwhile (which
        // ends a join in progress).
        Stop how = Stop::none;
        {
            std::lock_guard lock(mutex_);
            how = stop_;
        }
        if (how == Stop::join) {
            pool_->close();
            pool_->join();
        } else {
            pool_->terminate();
        }
        std::unique_lock alive(alive_);
        final_stats_ = pool_->stats();
        pool_.reset();
    }
    std::lock_guard lock(mutex_);
    finished_ = true;
    cv_.notify_all();
}

}  // namespace shmpool::python
