// ResultStream: the lazy results of Pool::imap and Pool::imap_unordered, as a single-pass input
// range that submits chunks as it is iterated (not for users: take it as `auto`).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "shmpool/framework/detail/job_items.hpp"
#include "shmpool/framework/detail/relabel.hpp"
#include "shmpool/framework/detail/result_sink.hpp"
#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {

template <auto Fn, class View>
class ResultStream {
  public:
    using R = typename Task<Fn>::Result;
    static_assert(!std::is_void_v<R>, "imap needs a task that returns a value");

    /// Keeps at most `window_items` items outstanding, in chunks of `chunksize`.
    ResultStream(Pool& pool, const Task<Fn>& task, View view, std::size_t chunksize,
                 std::size_t window_items, bool ordered)
        : pool_(&pool),
          task_(task.name()),
          view_(std::move(view)),
          it_(std::ranges::begin(view_)),
          chunksize_(std::max<std::size_t>(1, chunksize)),
          window_items_(window_items),
          ordered_(ordered),
          state_(std::make_shared<State>()) {}
    ResultStream(ResultStream&&) = delete;  // iterators point at it
    ResultStream(const ResultStream&) = delete;

    class iterator {  // NOLINT(readability-identifier-naming): the standard's name for it
      public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        R operator*() const {
            if (stream_->current_error_) std::rethrow_exception(stream_->current_error_);
            return *stream_->current_;
        }
        iterator& operator++() {
            if (!stream_->advance()) stream_ = nullptr;
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& a, std::default_sentinel_t) {
            return a.stream_ == nullptr;
        }

      private:
        friend class ResultStream;
        explicit iterator(ResultStream* s) : stream_(s) {}
        ResultStream* stream_ = nullptr;
    };

    iterator begin() { return advance() ? iterator(this) : iterator(); }
    std::default_sentinel_t end() const noexcept { return {}; }

  private:
    struct State {
        std::mutex mutex;
        std::condition_variable cv;
        std::map<std::size_t, std::variant<R, std::exception_ptr>> results;
        std::deque<std::size_t> arrival;  // completion order, for imap_unordered
    };
    // Forwards a chunk's results (indexed from 0) to the stream's state (indexed from `base`).
    class Sink : public ResultSink {
      public:
        Sink(std::shared_ptr<State> s, std::size_t base) : s_(std::move(s)), base_(base) {}
        void set_value(Reader& r, std::size_t i) override { put(i, Codec<R>::decode(r)); }
        void set_error(std::exception_ptr e, std::size_t i) override {
            put(i, relabel(e, base_ + i));  // the item's position in the input, not in its chunk
        }

      private:
        template <class V>
        void put(std::size_t i, V&& v) {
            {
                std::lock_guard lock(s_->mutex);
                s_->results.emplace(base_ + i, std::forward<V>(v));
                s_->arrival.push_back(base_ + i);
            }
            s_->cv.notify_all();
        }
        std::shared_ptr<State> s_;
        std::size_t base_;
    };

    // Submits chunks until `window_items_` items are outstanding or the input ends.
    void fill() {
        while (!exhausted_ && submitted_ - yielded_ < window_items_) {
            JobItems items;
            for (std::size_t k = 0; k < chunksize_ && it_ != std::ranges::end(view_); ++k, ++it_) {
                items.template add<Fn>(*it_);
            }
            if (items.empty()) {
                exhausted_ = true;
                break;
            }
            const std::size_t n = items.size();
            submit_job(*pool_, task_, std::move(items), std::make_shared<Sink>(state_, submitted_),
                       n);
            submitted_ += n;
            if (n < chunksize_) exhausted_ = true;
        }
    }
    // Moves to the next result; false when there is none.
    bool advance() {
        fill();
        if (yielded_ == submitted_) return false;
        std::unique_lock lock(state_->mutex);
        std::size_t index = 0;
        if (ordered_) {
            index = yielded_;
            state_->cv.wait(lock, [&] { return state_->results.count(index) > 0; });
        } else {
            state_->cv.wait(lock, [&] {
                while (!state_->arrival.empty() &&
                       !state_->results.count(state_->arrival.front())) {
                    state_->arrival.pop_front();  // taken already
                }
                return !state_->arrival.empty();
            });
            index = state_->arrival.front();
            state_->arrival.pop_front();
        }
        auto node = state_->results.extract(index);
        lock.unlock();
        ++yielded_;
        current_error_ = nullptr;
        current_.reset();
        if (auto* e = std::get_if<std::exception_ptr>(&node.mapped())) {
            current_error_ = *e;
        } else {
            current_.emplace(std::move(std::get<R>(node.mapped())));
        }
        return true;
    }

    Pool* pool_;
    std::string task_;
    View view_;
    std::ranges::iterator_t<View> it_;
    std::size_t chunksize_;
    std::size_t window_items_;
    bool ordered_;
    std::shared_ptr<State> state_;
    std::size_t submitted_ = 0;
    std::size_t yielded_ = 0;
    bool exhausted_ = false;
    std::optional<R> current_;
    std::exception_ptr current_error_;
};

}  // namespace shmpool::detail
