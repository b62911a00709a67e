// Future<T>: the result of Pool::submit. Thread-safe; copies share one result.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/errors.hpp"

namespace shmpool {

namespace detail {

/// Where a result goes: a future, or one slot of a map job. Set exactly once.
class ResultSink {
  public:
    virtual ~ResultSink() = default;
    /// Decodes item `index`'s result.
    virtual void set_value(Reader& r, std::size_t index) = 0;
    virtual void set_error(std::exception_ptr e, std::size_t index) = 0;
    /// Whether the item was cancelled before it started (then it is not dispatched).
    virtual bool cancelled(std::size_t /*index*/) const noexcept { return false; }
    /// Marks the item dispatched (it can no longer be cancelled); false if it was cancelled.
    virtual bool start(std::size_t /*index*/) noexcept { return true; }
    /// Decodes a run of successful results for items first, first + 1, ...; sinks override it to
    /// settle a whole chunk at once.
    virtual void set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                            std::size_t first) {
        for (std::size_t k = 0; k < n; ++k) {
            Reader r(results[k].first, results[k].second);
            set_value(r, first + k);
        }
    }
    /// Settles items first, first + 1, ... from results of `stride` bytes back to back (a packed
    /// chunk of Pool::map).
    virtual void set_packed(const char* results, std::size_t stride, std::size_t n,
                            std::size_t first) {
        for (std::size_t k = 0; k < n; ++k) {
            Reader r(results + k * stride, stride);
            set_value(r, first + k);
        }
    }
    /// Whether the caller asked to kill the item's worker (a hard cancel of a running task).
    virtual bool kill_requested() const noexcept { return false; }
};

template <class T>
class FutureState : public ResultSink {
  public:
    explicit FutureState(std::string task) : task_(std::move(task)) {}

    void set_value(Reader& r, std::size_t) override {
        if constexpr (std::is_void_v<T>) {
            finish([&] {});
        } else {
            T v = Codec<T>::decode(r);
            finish([&] { value_.emplace(std::move(v)); });
        }
    }
    void set_error(std::exception_ptr e, std::size_t) override {
        finish([&] { error_ = e; });
    }
    bool cancelled(std::size_t) const noexcept override { return stage_.load() == cancelled_stage; }

    bool start(std::size_t) noexcept override {
        int expected = pending_stage;
        return stage_.compare_exchange_strong(expected, started_stage) || expected == started_stage;
    }
    bool cancel(bool hard) {
        int expected = pending_stage;
        if (stage_.compare_exchange_strong(expected, cancelled_stage)) {
            set_error(std::make_exception_ptr(TaskCancelled(task_)), 0);
            return true;
        }
        if (!hard || ready()) return false;
        kill_.store(true, std::memory_order_release);
        if (wake_) wake_();  // the supervisor kills the worker and fails the task
        return true;
    }
    bool kill_requested() const noexcept override { return kill_.load(std::memory_order_acquire); }
    void set_wake(std::function<void()> wake) { wake_ = std::move(wake); }
    void set_assist(std::function<void(const std::function<bool()>&)> assist) {
        assist_ = std::move(assist);
    }

    bool ready() const noexcept { return ready_.load(std::memory_order_acquire); }
    void wait() {
        if (ready()) return;
        if (assist_)
            assist_([this] { return ready(); });  // harvests it ourselves until it is ready
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
        if (wake_) wake_();  // a caller may be waiting in get() on the pool's bell, not on cv_
    }

    std::string task_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::atomic<bool> ready_{false};
    std::atomic<int> stage_{pending_stage};
    std::atomic<bool> kill_{false};
    std::function<void()> wake_;
    std::function<void(const std::function<bool()>&)> assist_;
    std::conditional_t<std::is_void_v<T>, std::optional<int>, std::optional<T>> value_;
    std::exception_ptr error_;
};

}  // namespace detail

template <class T>
class Future {
  public:
    Future() = default;
    explicit Future(std::shared_ptr<detail::FutureState<T>> state) : state_(std::move(state)) {}

    /// Waits for the result; throws TaskError, WorkerCrashed, TaskTimeout, TaskCancelled or
    /// PoolClosed as the task ended.
    T get() { return state_->get(); }
    void wait() { state_->wait(); }
    /// Whether the result arrived within `d`.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) {
        return state_->wait_for(d);
    }
    bool ready() const noexcept { return state_->ready(); }
    /// Cancels the task if it has not started; with `hard`, also a running one, by killing its
    /// worker alone (which is replaced; nothing else in the pool is disturbed). Returns whether it
    /// did; get() then throws TaskCancelled.
    bool cancel(bool hard = false) { return state_->cancel(hard); }
    bool valid() const noexcept { return state_ != nullptr; }

  private:
    std::shared_ptr<detail::FutureState<T>> state_;
};

}  // namespace shmpool
