// Job: one job a Python program submitted to a pool (a map, one call of submit, one batch of an
// imap): the ResultSink that keeps its results as the codec's bytes until Python decodes them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "shmpool/framework/detail/result_sink.hpp"

namespace shmpool::python {

/// Where jobs that share one waiter (an imap stream, a pool's futures) post their tags when
/// they are done.
class DoneSignal {
  public:
    void post(std::uint64_t tag);
    /// The tags posted since the last call, waiting up to `timeout` for one.
    std::vector<std::uint64_t> take(std::chrono::milliseconds timeout);

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::uint64_t> done_;
};

/// Every item is settled once (a value or an error); what comes later for a settled item (the
/// result of an item cancelled while it ran) is dropped. Thread-safe.
class Job final : public detail::ResultSink {
  public:
    struct Shape {
        std::string task;
        std::size_t items = 0;
        std::size_t packed_stride = 0;  ///< > 0: results of this many bytes, back to back
        bool keep_results = true;       ///< false: the task returns void
        bool single = false;            ///< one call of submit: cancellable until it starts
        std::shared_ptr<DoneSignal> signal{};
        std::uint64_t tag = 0;
    };
    explicit Job(Shape shape);

    // The pool's side.
    void set_value(Reader& r, std::size_t index) override;
    void set_error(std::exception_ptr e, std::size_t index) override;
    void set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                    std::size_t first) override;
    void set_packed(const char* results, std::size_t stride, std::size_t n,
                    std::size_t first) override;
    bool cancelled(std::size_t index) const noexcept override;
    bool start(std::size_t index) noexcept override;
    bool kill_requested() const noexcept override;
    bool cancellable() const noexcept override { return shape_.single; }
    void bind(const std::shared_ptr<const detail::PoolLink>& link) override;
    void expect_final_progress() noexcept override;
    void final_progress_delivered() noexcept override;

    // Python's side (called without the GIL, except where it says).
    /// Whether every item is settled (and the final progress report delivered), waiting up to
    /// `timeout`.
    bool wait_for(std::chrono::milliseconds timeout);
    bool done() const noexcept;
    /// Settles every item not settled yet with TaskCancelled; `kill`: workers running its items
    /// are killed too. A call of submit that started is cancelled only with `kill`. Whether
    /// anything was cancelled.
    bool cancel(bool kill);
    /// The lowest failed item and its error, once done; index `items` if none failed.
    std::pair<std::size_t, std::exception_ptr> first_error() const;
    std::exception_ptr error(std::size_t index) const;
    /// Item `index`'s result bytes (valid while the job lives).
    std::pair<const char*, std::size_t> result(std::size_t index) const;
    std::size_t size() const noexcept { return shape_.items; }
    /// Whether its results are packed (Shape::packed_stride bytes each, back to back).
    bool packed() const noexcept { return shape_.packed_stride != 0; }
    const std::string& task() const noexcept { return shape_.task; }

  private:
    bool settle(std::size_t index);  // under mutex_: false if it was settled already
    void finished(std::size_t n);    // after settling n items, outside mutex_

    Shape shape_;
    // Guards everything below but the atomics. Taken alone: DoneSignal's mutex is taken after
    // it is released (finished()), never under it.
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::uint8_t> settled_;
    std::vector<std::string> results_;  // not packed
    std::string packed_;                // packed: items × packed_stride bytes
    std::map<std::size_t, std::exception_ptr> errors_;
    std::size_t left_;
    bool progress_pending_ = false;
    bool announced_ = false;  // done, and said so
    static constexpr int pending_stage = 0, started_stage = 1, cancelled_stage = 2;
    std::atomic<int> stage_{pending_stage};
    std::atomic<bool> kill_{false};
    std::shared_ptr<const detail::PoolLink> link_;
};

}  // namespace shmpool::python
