// MapState<R>: one map-style job's result vector (map, starmap, for_each_index); not for users.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmpool/framework/detail/result_sink.hpp"
#include "shmpool/framework/detail/task_entry.hpp"

namespace shmpool::detail {

/// Results are written by whichever pool thread harvests them (failures also by terminate()),
/// each index once, so they need no lock: the count of items left is the one synchronisation
/// point, with the final progress report when the pool makes one.
template <class R>
class MapState : public ResultSink {
    // Raw-bytes results are stored as they are (a packed chunk is one memcpy); others wait in an
    // optional until collect() moves them out.
    static constexpr bool direct =
        std::is_void_v<R> || (raw_codec_v<R> && std::is_default_constructible_v<R>);
    using Slot = std::conditional_t<std::is_void_v<R>, char,
                                    std::conditional_t<direct, R, std::optional<R>>>;

  public:
    explicit MapState(std::size_t n) : results_(std::is_void_v<R> ? 0 : n), left_(n) {}
    void set_value(Reader& r, std::size_t i) override {
        if constexpr (!std::is_void_v<R>) results_[i] = Codec<R>::decode(r);
        done();
    }
    void set_error(std::exception_ptr e, std::size_t i) override {
        {
            std::lock_guard lock(mutex_);
            errors_.emplace(i, std::move(e));
        }
        done();
    }
    void set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                    std::size_t first) override {
        if constexpr (!std::is_void_v<R>) {
            for (std::size_t k = 0; k < n; ++k) {
                Reader r(results[k].first, results[k].second);
                results_[first + k] = Codec<R>::decode(r);
            }
        }
        done(n);  // one synchronisation for the whole run
    }
    void set_packed(const char* results, std::size_t stride, std::size_t n,
                    std::size_t first) override {
        if constexpr (!std::is_void_v<R>) {
            if constexpr (direct) {
                if (stride != sizeof(R)) throw std::length_error("packed result of the wrong size");
                std::memcpy(static_cast<void*>(results_.data() + first), results, n * sizeof(R));
            } else {
                ResultSink::set_packed(results, stride, n, first);
                return;  // settled one by one
            }
        }
        done(n);
    }
    void expect_final_progress() noexcept override { progress_pending_ = true; }
    void final_progress_delivered() noexcept override {
        std::lock_guard lock(mutex_);
        progress_pending_ = false;
        cv_.notify_all();
    }

    /// Waits for every item (and the final progress report, unless this thread is the one that
    /// delivers reports: a callback that runs a map); rethrows the error of the lowest failed
    /// index.
    auto collect() {
        {
            const bool wait_for_report = !in_pool_callback();
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] {
                return left_.load(std::memory_order_acquire) == 0 &&
                       !(wait_for_report && progress_pending_);
            });
        }
        if (!errors_.empty()) std::rethrow_exception(errors_.begin()->second);
        if constexpr (direct && !std::is_void_v<R>) {
            return std::move(results_);
        } else if constexpr (!std::is_void_v<R>) {
            std::vector<R> out;
            out.reserve(results_.size());
            for (auto& r : results_)
                out.push_back(std::move(*r));
            return out;
        }
    }

  private:
    void done(std::size_t n = 1) {
        if (left_.fetch_sub(n, std::memory_order_acq_rel) == n) {
            std::lock_guard lock(mutex_);
            cv_.notify_all();
        }
    }
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<Slot> results_;
    std::map<std::size_t, std::exception_ptr> errors_;  // few, usually none: by index
    std::atomic<std::size_t> left_;
    bool progress_pending_ = false;  // under mutex_ once the job is queued
};

}  // namespace shmpool::detail
