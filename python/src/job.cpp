// Job: a Python job's results as they arrive from the pool's threads.
#include "job.hpp"

#include <cstring>
#include <stdexcept>
#include <vector>

#include "shmpool/framework/errors.hpp"

namespace shmpool::python {

void DoneSignal::post(std::uint64_t tag) {
    {
        std::lock_guard lock(mutex_);
        done_.push_back(tag);
    }
    cv_.notify_all();
}

std::vector<std::uint64_t> DoneSignal::take(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return !done_.empty(); });
    std::vector<std::uint64_t> out(done_.begin(), done_.end());
    done_.clear();
    return out;
}

Job::Job(Shape shape) : shape_(std::move(shape)), settled_(shape_.items, 0), left_(shape_.items) {
    if (shape_.packed_stride != 0)
        packed_.resize(shape_.items * shape_.packed_stride);
    else if (shape_.keep_results)
        results_.resize(shape_.items);
}

bool Job::settle(std::size_t index) {
    if (index >= settled_.size() || settled_[index] != 0) return false;
    settled_[index] = 1;
    --left_;
    return true;
}

void Job::finished(std::size_t n) {
    if (n == 0) return;
    {
        std::lock_guard lock(mutex_);
        if (left_ != 0 || progress_pending_ || announced_) return;
        announced_ = true;  // whichever thread settled last, the job is announced once
    }
    cv_.notify_all();
    if (shape_.signal) shape_.signal->post(shape_.tag);
}

void Job::set_value(Reader& r, std::size_t index) {
    const std::size_t bytes = r.left();
    // Checked before the item is settled: a throw settles nothing (the router then fails it).
    if (shape_.packed_stride != 0 && bytes != shape_.packed_stride)
        throw std::length_error("packed result of the wrong size");
    const char* at = r.view(bytes);
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        if (settle(index)) {
            if (shape_.packed_stride != 0)
                std::memcpy(packed_.data() + index * shape_.packed_stride, at, bytes);
            else if (shape_.keep_results)
                results_[index].assign(at, bytes);
            n = 1;
        }
    }
    finished(n);
}

void Job::set_error(std::exception_ptr e, std::size_t index) {
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        if (settle(index)) {
            errors_.emplace(index, std::move(e));
            n = 1;
        }
    }
    finished(n);
}

void Job::set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                     std::size_t first) {
    std::size_t count = 0;
    {
        std::lock_guard lock(mutex_);
        for (std::size_t k = 0; k < n; ++k) {
            if (!settle(first + k)) continue;
            if (shape_.keep_results)
                results_[first + k].assign(results[k].first, results[k].second);
            ++count;
        }
    }
    finished(count);
}

void Job::set_packed(const char* results, std::size_t stride, std::size_t n, std::size_t first) {
    if (stride != shape_.packed_stride) throw std::length_error("packed result of the wrong size");
    std::size_t count = 0;
    {
        std::lock_guard lock(mutex_);
        // The usual case, nothing of the run settled meanwhile (by a cancel): one copy, and no
        // allocation on the way of results.
        bool untouched = first + n <= settled_.size();
        for (std::size_t k = 0; untouched && k < n; ++k)
            untouched = settled_[first + k] == 0;
        if (untouched) {
            for (std::size_t k = 0; k < n; ++k)
                settle(first + k);
            std::memcpy(packed_.data() + first * stride, results, n * stride);
            count = n;
        } else {
            for (std::size_t k = 0; k < n; ++k) {
                if (!settle(first + k)) continue;
                std::memcpy(packed_.data() + (first + k) * stride, results + k * stride, stride);
                ++count;
            }
        }
    }
    finished(count);
}

bool Job::cancelled(std::size_t /*index*/) const noexcept {
    return stage_.load(std::memory_order_acquire) == cancelled_stage;
}

bool Job::start(std::size_t /*index*/) noexcept {
    int expected = pending_stage;
    return stage_.compare_exchange_strong(expected, started_stage) || expected == started_stage;
}

bool Job::kill_requested() const noexcept {
    return kill_.load(std::memory_order_acquire);
}

void Job::bind(const std::shared_ptr<const detail::PoolLink>& link) {
    std::lock_guard lock(mutex_);
    link_ = link;
}

void Job::expect_final_progress() noexcept {
    std::lock_guard lock(mutex_);
    progress_pending_ = true;
}

void Job::final_progress_delivered() noexcept {
    {
        std::lock_guard lock(mutex_);
        progress_pending_ = false;
    }
    finished(1);
}

bool Job::wait_for(std::chrono::milliseconds timeout) {
    // A callback (on_progress) that waits for a job of its own pool: the final report of that
    // job would come from this very thread, after the callback returns. As MapState::collect.
    const bool wait_for_report = !detail::in_pool_callback();
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout,
                        [&] { return left_ == 0 && !(wait_for_report && progress_pending_); });
}

bool Job::done() const noexcept {
    const bool wait_for_report = !detail::in_pool_callback();
    std::lock_guard lock(mutex_);
    return left_ == 0 && !(wait_for_report && progress_pending_);
}

bool Job::cancel(bool kill) {
    // A call of submit that started runs on unless its worker is killed; a map's items that
    // run are settled here and their results dropped when they come.
    int expected = pending_stage;
    const bool before_start = stage_.compare_exchange_strong(expected, cancelled_stage);
    if (!before_start && expected == started_stage && !shape_.single)
        stage_.store(cancelled_stage, std::memory_order_release);
    if (!before_start && shape_.single && !kill) return false;
    std::size_t n = 0;
    std::shared_ptr<const detail::PoolLink> link;
    {
        std::lock_guard lock(mutex_);
        if (left_ == 0) return false;
        const auto error = std::make_exception_ptr(TaskCancelled(shape_.task));
        if (!shape_.single || before_start) {
            for (std::size_t i = 0; i < settled_.size(); ++i) {
                if (settle(i)) {
                    errors_.emplace(i, error);
                    ++n;
                }
            }
            // Items dropped as cancelled are not counted in the job's progress: no final report
            // will come.
            progress_pending_ = false;
        }
        link = link_;
    }
    if (kill) {
        kill_.store(true, std::memory_order_release);
        if (link) detail::wake(*link);  // the supervisor kills the workers running its items
    }
    finished(n);
    return true;
}

std::pair<std::size_t, std::exception_ptr> Job::first_error() const {
    std::lock_guard lock(mutex_);
    if (errors_.empty()) return {shape_.items, nullptr};
    return *errors_.begin();
}

std::exception_ptr Job::error(std::size_t index) const {
    std::lock_guard lock(mutex_);
    auto it = errors_.find(index);
    return it == errors_.end() ? nullptr : it->second;
}

std::pair<const char*, std::size_t> Job::result(std::size_t index) const {
    std::lock_guard lock(mutex_);
    if (shape_.packed_stride != 0)
        return {packed_.data() + index * shape_.packed_stride, shape_.packed_stride};
    if (!shape_.keep_results) return {nullptr, 0};
    return {results_[index].data(), results_[index].size()};
}

}  // namespace shmpool::python
