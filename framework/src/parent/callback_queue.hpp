// CallbackQueue: the user's callbacks (on_worker_exit, on_progress, the progress bar) on a
// thread of their own, started only when there are callbacks. Whoever holds the slot lock queues
// events; the thread runs them one at a time and in order, with no lock of the pool held, so a
// callback may block, submit work and wait for it without stalling the supervisor.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <variant>

#include "shmpool/framework/detail/result_sink.hpp"
#include "shmpool/framework/pool_options.hpp"

namespace shmpool::detail {

class CallbackQueue {
  public:
    explicit CallbackQueue(const PoolOptions& options);
    ~CallbackQueue() { stop(); }
    CallbackQueue(const CallbackQueue&) = delete;
    CallbackQueue& operator=(const CallbackQueue&) = delete;

    /// Whether jobs report their progress (a callback, or a bar on a terminal).
    bool wants_progress() const noexcept { return on_progress_ || bar_; }
    void push(WorkerEvent event);
    /// A job's progress; after the final one, `job_sink` hears that it was delivered.
    void push(Progress progress, std::shared_ptr<ResultSink> job_sink, bool final);
    /// Runs what is queued, then ends the thread (the end of the pool).
    void stop();

  private:
    struct ProgressEvent {
        Progress progress;
        std::shared_ptr<ResultSink> sink;
        bool final = false;
    };
    using Event = std::variant<WorkerEvent, ProgressEvent>;
    void run();
    void deliver(const Event& event);

    std::function<void(const WorkerEvent&)> on_worker_exit_;
    std::function<void(const Progress&)> on_progress_;
    bool bar_ = false;
    std::mutex mutex_;  // a leaf: never held while a callback runs
    std::condition_variable wake_;
    std::deque<Event> events_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace shmpool::detail
