// CallbackQueue: the callbacks' thread, and the ready-made progress bar.
#include "parent/callback_queue.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "posix/sys.hpp"

namespace shmpool::detail {
namespace {

thread_local bool delivering_callbacks = false;

// One line on stderr, redrawn in place.
void draw_progress_bar(const Progress& p) {
    constexpr int width = 30;
    const int filled = p.total ? static_cast<int>(width * p.done / p.total) : width;
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, ' ');
    fmt::print(stderr, "\r{} [{}] {}/{} {:.0f}/s ETA {:.0f}s ", p.task, bar, p.done, p.total,
               p.rate, p.eta_seconds);
    if (p.done == p.total) fmt::print(stderr, "\n");
    std::fflush(stderr);
}

}  // namespace

bool in_pool_callback() noexcept {
    return delivering_callbacks;
}

CallbackQueue::CallbackQueue(const PoolOptions& options)
    : on_worker_exit_(options.on_worker_exit),
      on_progress_(options.on_progress),
      bar_(options.progress_bar && sys::isatty(STDERR_FILENO) == 1) {
    if (on_worker_exit_ || wants_progress()) thread_ = std::thread([this] { run(); });
}

void CallbackQueue::push(WorkerEvent event) {
    if (!on_worker_exit_) return;
    {
        std::lock_guard lock(mutex_);
        events_.emplace_back(std::move(event));
    }
    wake_.notify_one();
}

void CallbackQueue::push(Progress progress, std::shared_ptr<ResultSink> job_sink, bool final) {
    {
        std::lock_guard lock(mutex_);
        events_.emplace_back(ProgressEvent{std::move(progress), std::move(job_sink), final});
    }
    wake_.notify_one();
}

void CallbackQueue::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void CallbackQueue::run() {
    delivering_callbacks = true;
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !events_.empty(); });
        if (events_.empty()) return;  // stopping, and everything delivered
        Event event = std::move(events_.front());
        events_.pop_front();
        lock.unlock();
        deliver(event);
        lock.lock();
    }
}

void CallbackQueue::deliver(const Event& event) {
    // A callback that throws loses its event, not the pool: there is nobody to rethrow to.
    try {
        if (const auto* e = std::get_if<WorkerEvent>(&event)) {
            on_worker_exit_(*e);
        } else {
            const auto& p = std::get<ProgressEvent>(event);
            if (on_progress_) on_progress_(p.progress);
            if (bar_) draw_progress_bar(p.progress);
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "shmpool: a pool callback threw: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "shmpool: a pool callback threw\n");
    }
    if (const auto* p = std::get_if<ProgressEvent>(&event); p && p->final)
        p->sink->final_progress_delivered();
}

}  // namespace shmpool::detail
