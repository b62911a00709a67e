// Pool: worker processes that run registered tasks, with data shared in memory.
//
// The pool re-executes this program (or PoolOptions::worker_executable) as N workers; each one
// runs shmpool::init() at the top of main(), attaches the pool's control block once, and waits for
// chunks of work in its slot there. Arguments and results travel through that block, never
// through a pipe; big data goes in a SharedArray or a SharedMemory block passed by name.
//
// Failure semantics: a task that throws fails with TaskError and its worker lives on. A worker
// that dies (a signal, an exit, a timeout kill) is noticed at once through a pidfd, replaced, and
// the item it was running is retried up to max_retries times, then fails with WorkerCrashed; the
// other items of its chunk are requeued, not lost or redone. The pool is never "broken".
//
// Thread-safe: submit, map and the rest may be called from any thread. Create the pool from a
// thread that outlives it (workers get SIGKILL when the thread that started them exits).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/future.hpp"
#include "shmpool/framework/task.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool {

/// A worker that exited or died, as reported to PoolOptions::on_worker_exit.
struct WorkerEvent {
    unsigned worker = 0;  ///< its index in the pool
    pid_t pid = 0;
    int signal = 0;                   ///< terminating signal, 0 if it exited
    int exit_code = -1;               ///< exit status if it exited
    std::string task;                 ///< the task it was running, if any
    std::optional<std::size_t> item;  ///< the item of that task's job it was on
    long peak_rss_kb = 0;             ///< its peak resident set size
    std::string reason;  ///< "crashed", "timeout", "cancelled", "start_failed" (died before ready)
};

/// Progress of a map-style job (map, starmap, for_each_index, imap chunks count separately).
struct Progress {
    std::string task;
    std::size_t done = 0;  ///< items settled (results and failures)
    std::size_t total = 0;
    double elapsed_seconds = 0;
    double rate = 0;         ///< items per second so far
    double eta_seconds = 0;  ///< at that rate
};

struct PoolStats {
    std::size_t tasks_done = 0;    ///< items that produced a result
    std::size_t tasks_failed = 0;  ///< items that failed (TaskError, WorkerCrashed, TaskTimeout)
    std::size_t retries = 0;
    std::size_t crashes = 0;  ///< workers that died running a task
    std::size_t respawns = 0;
    std::size_t start_failures = 0;  ///< workers that died before they reported ready
    std::size_t timeouts = 0;
    std::size_t cancelled = 0;        ///< running tasks killed by a hard cancel
    std::size_t recycled_tasks = 0;   ///< workers replaced after max_tasks_per_worker
    std::size_t recycled_memory = 0;  ///< workers replaced after max_memory_per_worker
    double busy_seconds = 0;          ///< with measure_busy: time workers spent on completed chunks
};

/// The name of a registered task (any Task<Fn> converts to it), e.g. for PoolOptions::initializer.
struct TaskName {
    TaskName() = default;
    template <auto Fn>
    TaskName(const Task<Fn>& task) : name(task.name()) {}  // NOLINT(google-explicit-constructor)
    std::string name;
};

struct PoolOptions {
    /// Number of workers; 0 means one per core.
    unsigned workers = 0;
    /// How often an item whose worker died is tried again before it fails with WorkerCrashed.
    int max_retries = 1;
    /// Kill the worker of an item running longer than this (then TaskTimeout); 0: no limit.
    std::chrono::milliseconds task_timeout{0};
    /// How many times in a row a worker may die before it reports ready (killed during
    /// start-up, or its program exits) before the pool gives up on it: pool creation then fails
    /// with WorkerStartFailed, and a running pool stops replacing that worker. Each such death is
    /// replaced like a crash and counted in PoolStats::start_failures.
    unsigned max_start_failures = 5;
    /// After SIGTERM, how long a worker has before SIGKILL.
    std::chrono::milliseconds kill_grace{200};
    /// Bytes of arguments, and of results, one chunk may carry (per worker, each way); 4 KiB to
    /// 1 GiB, rounded up to a multiple of 64.
    std::size_t slot_bytes = std::size_t{256} << 10;
    /// The worker program (it must call shmpool::init); default: this program.
    std::string worker_executable{};
    /// Called (on the pool's supervisor thread) for every worker that dies or is killed.
    std::function<void(const WorkerEvent&)> on_worker_exit{};
    /// Blocks every worker attaches once, before it takes work, and keeps; tasks reach them with
    /// shmpool::shared_block(name). A block that cannot be attached fails pool creation.
    std::vector<std::string> shared_blocks{};
    /// Extra environment variables ("NAME=value") for every worker, on top of this process's.
    std::vector<std::string> environment{};
    /// A task taking no arguments, run once in every worker before it takes work. If it throws,
    /// pool creation fails with its error (and a replacement worker is not retried forever).
    TaskName initializer{};
    /// Called with the progress of every job of more than one item, at most every 100 ms and
    /// once at its end, on whichever pool thread delivers its results: the supervisor, or a
    /// thread waiting in Future::get() (keep it short; it may submit work).
    std::function<void(const Progress&)> on_progress{};
    /// Draw a progress bar for such jobs on stderr, when stderr is a terminal.
    bool progress_bar = false;
    /// oneTBB threads a task may use inside one worker (tbb::global_control in each worker), so
    /// that workers × threads do not oversubscribe the cores; 0: cores / workers, at least 1.
    unsigned threads_per_worker = 0;
    /// How long an idle worker spins, watching its slot, before it sleeps: new work within that
    /// time costs no wake-up. 0 suits pools with more busy processes than cores (a spinning
    /// worker takes the core from the one it waits for).
    std::chrono::microseconds idle_spin{20};
    /// Sum the time the workers spend on chunks in stats().busy_seconds. It costs two clock reads
    /// per chunk, which shows in a map of tiny tasks with chunksize 1 (so it is off by default).
    bool measure_busy = false;
    /// Replace a worker after it ran this many items (0: never).
    std::size_t max_tasks_per_worker = 0;
    /// Replace a worker whose resident set grew past this many bytes, checked between chunks (0:
    /// never).
    std::size_t max_memory_per_worker = 0;
};

/// Called at the top of main(): in a process launched as a worker, runs the worker and exits;
/// elsewhere returns at once. Never throws: a worker that fails reports on stderr and exits.
void init(int argc, char** argv) noexcept;

/// This process's long-lived mapping of block `name`: in a worker, one of the pool's
/// PoolOptions::shared_blocks (attached at start-up); elsewhere attached on first use. Throws
/// what SharedMemory::attach throws.
SharedMemory& shared_block(std::string_view name);

namespace detail {

/// One job's result vector (map, starmap, for_each_index). Results are written by the pool's
/// supervisor thread only (failures also by terminate()), each index once, so they need no lock;
/// the count of items left is the one synchronisation point.
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
    /// Waits for every item; rethrows the error of the lowest failed index.
    auto collect() {
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] { return left_.load(std::memory_order_acquire) == 0; });
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
};

/// A job's items: their encoded arguments back to back, and where each one starts; or, packed,
/// `count` arguments of `in_stride` bytes each (a map of a raw-bytes task over contiguous data).
struct JobItems {
    std::string args;
    std::vector<std::size_t> offsets{0};  // items + 1, unless packed
    std::uint32_t in_stride = 0;          // > 0: packed
    std::uint32_t out_stride = 0;         // packed: the size of one result
    std::size_t count = 0;                // packed: the number of items
    template <auto Fn, class... A>
    void add(const A&... a) {
        Task<Fn>::append_args(args, a...);
        offsets.push_back(args.size());
    }
    bool packed() const noexcept { return in_stride != 0; }
    std::size_t size() const noexcept { return packed() ? count : offsets.size() - 1; }
    bool empty() const noexcept { return size() == 0; }
};

template <auto Fn, class View>
class ResultStream;

}  // namespace detail

class Pipeline;

class Pool {
  public:
    /// Starts the workers and waits until they are ready; a worker that dies on the way is
    /// replaced (PoolOptions::max_start_failures). Throws std::system_error if a worker cannot
    /// be launched, WorkerStartFailed if one died before it was ready too often in a row,
    /// TaskError if the initializer or a shared block failed, std::invalid_argument for bad
    /// options.
    explicit Pool(PoolOptions options = {});
    /// close(), then join(): waits for the queued work, stops the workers.
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    /// Runs task(args...) in a worker.
    template <auto Fn, class... A>
    auto submit(const Task<Fn>& task, const A&... args) {
        using R = typename Task<Fn>::Result;
        auto state = std::make_shared<detail::FutureState<R>>(task.name());
        state->set_wake(wake_function());
        state->set_assist(assist_function());
        detail::JobItems items;
        items.add<Fn>(args...);
        enqueue(task.name(), std::move(items), state, 1);
        return Future<R>(std::move(state));
    }

    /// task(item) for every item, results in input order. chunksize 0: len / (4 × workers),
    /// as CPython's Pool.map. Throws the error of the first failed item.
    template <auto Fn, class Range>
    auto map(const Task<Fn>& task, const Range& range, std::size_t chunksize = 0) {
        detail::JobItems items;
        if constexpr (detail::packable_v<Fn> && std::ranges::contiguous_range<Range> &&
                      std::ranges::sized_range<Range> &&
                      std::is_same_v<std::ranges::range_value_t<Range>,
                                     std::tuple_element_t<0, typename Task<Fn>::Arguments>>) {
            // The items' bytes are the arguments: one copy, no encoding (see task.hpp).
            const detail::TaskEntry entry = detail::task_entry<Fn>();
            items.in_stride = entry.in_stride;
            items.out_stride = entry.out_stride;
            items.count = std::ranges::size(range);
            items.args.assign(reinterpret_cast<const char*>(std::ranges::data(range)),
                              items.count * entry.in_stride);
        } else {
            if constexpr (std::ranges::sized_range<Range>)
                items.offsets.reserve(std::ranges::size(range) + 1);
            for (const auto& x : range)
                items.add<Fn>(x);
        }
        return run_job<Fn>(task, std::move(items), chunksize);
    }

    /// task(item) for every item, lazily: the returned range submits items as it is iterated,
    /// keeping at most `window` chunks of `chunksize` items outstanding (0: 2 × workers), so an
    /// endless input is fine. Results come in input order; iterating rethrows a failed item's
    /// error at its position. The pool must outlive the range; an lvalue input must too.
    template <auto Fn, std::ranges::input_range Range>
    auto imap(const Task<Fn>& task, Range&& range, std::size_t chunksize = 1,
              std::size_t window = 0) {
        using View = std::ranges::views::all_t<Range>;
        return detail::ResultStream<Fn, View>(
            *this, task, std::views::all(std::forward<Range>(range)), chunksize, window, true);
    }
    /// As imap(), results in completion order.
    template <auto Fn, std::ranges::input_range Range>
    auto imap_unordered(const Task<Fn>& task, Range&& range, std::size_t chunksize = 1,
                        std::size_t window = 0) {
        using View = std::ranges::views::all_t<Range>;
        return detail::ResultStream<Fn, View>(
            *this, task, std::views::all(std::forward<Range>(range)), chunksize, window, false);
    }

    /// task(args...) for every tuple of arguments, results in input order.
    template <auto Fn, class Range>
    auto starmap(const Task<Fn>& task, const Range& range, std::size_t chunksize = 0) {
        detail::JobItems items;
        for (const auto& t : range) {
            std::apply([&](const auto&... a) { items.add<Fn>(a...); }, t);
        }
        return run_job<Fn>(task, std::move(items), chunksize);
    }

    /// task(leading..., begin, end) over [0, n) in ranges of `grain` indices (0: n / (4 ×
    /// workers)). The task's last two parameters are std::size_t; the leading ones are typically
    /// the name of a SharedArray it works on.
    template <auto Fn, class... A>
    void for_each_index(const Task<Fn>& task, std::size_t n, std::size_t grain,
                        const A&... leading) {
        if (grain == 0) grain = std::max<std::size_t>(1, n / (std::size_t{4} * size()));
        detail::JobItems items;
        for (std::size_t b = 0; b < n; b += grain)
            items.add<Fn>(leading..., b, std::min(n, b + grain));
        run_job<Fn>(task, std::move(items), 1);
    }

    /// No more work is accepted; queued work still runs.
    void close();
    /// Waits for all queued work, then stops the workers (after close()).
    void join();
    /// Stops now: workers are killed, queued work fails with PoolClosed.
    void terminate();

    unsigned size() const noexcept;
    std::vector<pid_t> worker_pids() const;
    PoolStats stats() const;
    /// The pool's control block (its name is what the workers attach).
    const std::string& control_block() const noexcept;

  private:
    template <auto Fn>
    auto run_job(const Task<Fn>& task,
                 detail::JobItems items,  // NOLINT(performance-unnecessary-value-param): moved
                 std::size_t chunksize) {
        using R = typename Task<Fn>::Result;
        auto state = std::make_shared<detail::MapState<R>>(items.size());
        if (chunksize == 0)
            chunksize = std::max<std::size_t>(
                1, (items.size() + std::size_t{4} * size() - 1) / (std::size_t{4} * size()));
        if (!items.empty()) enqueue(task.name(), std::move(items), state, chunksize);
        return state->collect();
    }
    void enqueue(const std::string& task, detail::JobItems items,
                 std::shared_ptr<detail::ResultSink> sink, std::size_t chunksize);
    std::function<void()> wake_function();
    std::function<void(const std::function<bool()>&)> assist_function();

    template <auto Fn, class View>
    friend class detail::ResultStream;
    friend class Pipeline;  // dispatches its stages' packed steps through enqueue()

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

namespace detail {

/// Results of a lazy imap/imap_unordered, as a single-pass input range.
template <auto Fn, class View>
class ResultStream {
  public:
    using R = typename Task<Fn>::Result;
    static_assert(!std::is_void_v<R>, "imap needs a task that returns a value");

    ResultStream(Pool& pool, const Task<Fn>& task, View view, std::size_t chunksize,
                 std::size_t window, bool ordered)
        : pool_(&pool),
          task_(task.name()),
          view_(std::move(view)),
          it_(std::ranges::begin(view_)),
          chunksize_(std::max<std::size_t>(1, chunksize)),
          window_items_((window ? window : std::size_t{2} * pool.size()) * chunksize_),
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
            std::size_t n = items.size();
            pool_->enqueue(task_, std::move(items), std::make_shared<Sink>(state_, submitted_), n);
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

}  // namespace detail

}  // namespace shmpool
