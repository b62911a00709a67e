// Future<T>: the result of Pool::submit. Thread-safe; copies share one result.
#pragma once

#include <chrono>
#include <memory>
#include <utility>

#include "shmpool/framework/detail/future_state.hpp"

namespace shmpool {

template <class T>
class Future {
  public:
    Future() = default;
    explicit Future(std::shared_ptr<detail::FutureState<T>> state) : state_(std::move(state)) {}

    /// Waits for the result; throws TaskError, WorkerCrashed, TaskTimeout, TaskCancelled,
    /// WorkerStartFailed or PoolClosed as the task ended.
    T get() & { return state_->get(); }
    /// The same; the last Future of a result (`pool.submit(...).get()`, `std::move(f).get()`)
    /// moves it out instead of copying it, which matters for big results.
    T get() && { return state_.use_count() == 1 ? state_->take() : state_->get(); }
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
