// FutureState<T>: the shared state behind a Future, filled by the pool (not for users).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/detail/result_sink.hpp"
#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {

template <class T>
class FutureState : public ResultSink {
  public:
    explicit FutureState(std::string task) : task_(std::move(task)) {}

    void set_value(Reader& r, std::size_t /*index*/) override {
        if constexpr (std::is_void_v<T>) {
            finish([&] {});
        } else {
            T v = Codec<T>::decode(r);
            finish([&] { value_.emplace(std::move(v)); });
        }
    }
    void set_error(std::exception_ptr e, std::size_t /*index*/) override {
        finish([&] { error_ = e; });
    }
    bool cancelled(std::size_t /*index*/) const noexcept override {
        return stage_.load() == cancelled_stage;
    }
    bool start(std::size_t /*index*/) noexcept override {
        int expected = pending_stage;
        return stage_.compare_exchange_strong(expected, started_stage) || expected == started_stage;
    }
    bool kill_requested() const noexcept override { return kill_.load(std::memory_order_acquire); }
    bool cancellable() const noexcept override { return true; }
    void bind(const std::shared_ptr<const PoolLink>& link) override { link_ = link; }

    bool cancel(bool hard) {
        int expected = pending_stage;
        if (stage_.compare_exchange_strong(expected, cancelled_stage)) {
            set_error(std::make_exception_ptr(TaskCancelled(task_)), 0);
            return true;
        }
        if (!hard || ready()) return false;
        kill_.store(true, std::memory_order_release);
        if (link_) wake(*link_);  // the supervisor kills the worker and fails the task
        return true;
    }
    bool ready() const noexcept { return ready_.load(std::memory_order_acquire); }
    void wait() {
        if (ready()) return;
        if (link_) {  // harvest it ourselves until it is ready
            assist(
                *link_,
                [](const void* self) { return static_cast<const FutureState*>(self)->ready(); },
                this);
        }
        if (ready()) return;
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return ready(); });
    }
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) {
        if (ready()) return true;
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, d, [&] { return ready(); });
    }
    T get() {
        wait();
        if (error_) std::rethrow_exception(error_);
        if constexpr (!std::is_void_v<T>) return *value_;
    }
    /// As get(), moving the value out: for the only owner of this state.
    T take() {
        wait();
        if (error_) std::rethrow_exception(error_);
        if constexpr (!std::is_void_v<T>) return std::move(*value_);
    }

  private:
    static constexpr int pending_stage = 0, started_stage = 1, cancelled_stage = 2;
    template <class F>
    void finish(F f) {
        {
            std::lock_guard lock(mutex_);
            if (ready()) return;  // set once: a late duplicate (never expected) is dropped
            f();
            ready_.store(true, std::memory_order_release);
        }
        cv_.notify_all();
        if (link_) wake(*link_);  // a caller may be waiting in get() on the pool's bell, not on cv_
    }

    std::string task_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::atomic<bool> ready_{false};
    std::atomic<int> stage_{pending_stage};
    std::atomic<bool> kill_{false};
    std::shared_ptr<const PoolLink> link_;
    std::conditional_t<std::is_void_v<T>, std::optional<int>, std::optional<T>> value_;
    std::exception_ptr error_;
};

}  // namespace shmpool::detail
