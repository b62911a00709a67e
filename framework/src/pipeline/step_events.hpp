// A pipeline's completed steps, from the stage pools' threads to the thread running the
// pipeline: StepSink turns one batch's results into events, StepEvents queues them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>
#include <vector>

#include "shmpool/framework/detail/result_sink.hpp"

namespace shmpool::detail {

struct StepEvent {
    unsigned stage = 0;
    std::uint32_t token = 0;
    std::exception_ptr error;  // null: done
    bool last = false;         // the last of its batch to settle
};

struct StepEvents {
    std::mutex mutex;  // a leaf
    std::condition_variable cv;
    std::vector<StepEvent> list;
    void push(StepEvent e) {
        {
            std::lock_guard lock(mutex);
            list.push_back(std::move(e));
        }
        cv.notify_one();
    }
};

class StepSink : public ResultSink {
  public:
    StepSink(StepEvents& events, unsigned stage, std::vector<std::uint32_t> tokens)
        : events_(events), stage_(stage), tokens_(std::move(tokens)), left_(tokens_.size()) {}
    void set_value(Reader& /*r*/, std::size_t i) override { done(i, 1); }
    void set_error(std::exception_ptr e, std::size_t i) override {
        events_.push({stage_, tokens_[i], std::move(e), left_.fetch_sub(1) == 1});
    }
    void set_packed(const char* /*results*/, std::size_t /*stride*/, std::size_t n,
                    std::size_t first) override {
        done(first, n);
    }

  private:
    void done(std::size_t first, std::size_t n) {
        const bool last = left_.fetch_sub(n) == n;
        {
            std::lock_guard lock(events_.mutex);
            for (std::size_t k = first; k < first + n; ++k)
                events_.list.push_back({stage_, tokens_[k], nullptr, last && k + 1 == first + n});
        }
        events_.cv.notify_one();
    }
    StepEvents& events_;
    unsigned stage_;
    std::vector<std::uint32_t> tokens_;
    std::atomic<std::size_t> left_;
};

}  // namespace shmpool::detail
