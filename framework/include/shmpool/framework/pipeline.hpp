// Pipeline: tbb::parallel_pipeline across processes. A source, stages that run in worker
// processes, a sink; items move between them as indices of slots in a shared-memory arena.
//
//   shmpool::Pipeline p({.max_tokens = 64});
//   p.source([n = 0]() mutable -> std::optional<int> { return n < 1000 ? std::optional(n++)
//                                                                       : std::nullopt; })
//    .stage(square_task, shmpool::StageMode::parallel, 2)      // int -> long, 2 processes
//    .stage(format_task, shmpool::StageMode::serial_in_order)  // long -> std::string
//    .sink([&](const std::string& s) { out.push_back(s); });   // in this process, in order
//   shmpool::PipelineStats stats = p.run();
//
// Each worker stage is a Pool of its own (a serial stage has one worker), so a stage that crashes
// is replaced and its item retried as in the pool (docs/pipeline.md has the exact guarantees).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeindex>
#include <vector>

#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/pool_options.hpp"
#include "shmpool/framework/task.hpp"

namespace shmpool {

/// How a stage takes its items, with tbb::filter_mode's meaning.
enum class StageMode {
    parallel,             ///< any number at once, in any order
    serial_in_order,      ///< one at a time, in the order the source produced them
    serial_out_of_order,  ///< one at a time, in any order
};

struct PipelineOptions {
    /// The bound on items alive at once (slots in the arena); the source waits when all are
    /// taken. Each token costs 2 × token_bytes of shared memory; few tokens make every handful
    /// of items wait for a cross-process wake-up (docs/pipeline.md). 0: as many as 4 MiB of
    /// buffers hold (512 with the default token_bytes), at least 4 per worker process and 8.
    std::size_t max_tokens = 0;
    /// Bytes of one item in the arena; an item that encodes to more travels in a block of its
    /// own (created by the stage that produced it, removed once the next stage has read it).
    std::size_t token_bytes = 4096;
    /// How often an item whose worker died is tried again before it counts as failed.
    int max_retries = 1;
    /// Kill a stage worker whose item runs longer than this (the item fails); 0: no limit.
    std::chrono::milliseconds task_timeout{0};
    /// Publish per-stage counters in a guarded ShareableList (status_board() names it) that
    /// `shmpool show` and CPython can read while the pipeline runs.
    bool status_board = false;
    /// Draw a one-line live display of the stages on stderr, when it is a terminal.
    bool progress_line = false;
    /// Cancel on SIGINT while run() runs (the previous handler is restored afterwards).
    bool cancel_on_sigint = false;
    /// How each stage's pool starts its workers (PoolOptions::start_method): with fork_server,
    /// one fork server per stage.
    StartMethod start_method = StartMethod::exec;
};

/// An item that did not make it through: its sequence number (the order the source made it),
/// the stage it failed in, and why (a TaskError, WorkerCrashed or TaskTimeout).
struct ItemFailure {
    std::uint64_t sequence = 0;
    std::string stage;
    std::string message;
    std::exception_ptr error;
};

struct StageStats {
    std::string task;
    StageMode mode = StageMode::parallel;
    unsigned workers = 0;
    std::size_t items_in = 0;   ///< handed to the stage
    std::size_t items_out = 0;  ///< completed by it
    std::size_t failed = 0;
    std::size_t retries = 0;
    std::size_t crashes = 0;
    double busy_seconds = 0;          ///< time its workers spent in the stage function
    std::size_t max_queue_depth = 0;  ///< most items waiting for it at once
};

struct PipelineStats {
    std::size_t produced = 0;   ///< items the source made
    std::size_t completed = 0;  ///< items that went through every stage (and the sink)
    std::size_t failed = 0;
    bool cancelled = false;
    double seconds = 0;
    std::size_t max_live_tokens = 0;  ///< never more than max_tokens
    std::vector<StageStats> stages;
    std::vector<ItemFailure> failures;  ///< in sequence order
};

namespace detail {

template <class F>
struct SinkArgument : SinkArgument<decltype(&F::operator())> {};
template <class C, class R, class A>
struct SinkArgument<R (C::*)(A) const> {
    using type = std::decay_t<A>;
};
template <class C, class R, class A>
struct SinkArgument<R (C::*)(A)> {
    using type = std::decay_t<A>;
};
template <class R, class A>
struct SinkArgument<R (*)(A)> {
    using type = std::decay_t<A>;
};

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};

struct StageSpec {
    std::string task;
    StageMode mode = StageMode::parallel;
    unsigned workers = 1;
    bool source = false;  // a worker source: std::optional<T>(std::uint64_t sequence)
};

}  // namespace detail

class Pipeline {
  public:
    explicit Pipeline(PipelineOptions options = {});
    ~Pipeline();
    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    /// A source in this process: `next()` returns the next item, or std::nullopt at the end. It
    /// is called on the thread that runs the pipeline, only while a slot is free.
    template <class F>
    requires detail::IsOptional<std::invoke_result_t<F&>>::value Pipeline& source(F next) {
        using T = typename std::invoke_result_t<F&>::value_type;
        set_source(
            [next = std::move(next)](std::string& out) mutable {
                std::optional<T> item = next();
                if (!item) return false;
                encode(out, *item);
                return true;
            },
            typeid(T));
        return *this;
    }

    /// A source in a worker process: task(sequence) for sequence 0, 1, 2, ... until it returns
    /// std::nullopt (the task's results for later sequences are then discarded).
    template <auto Fn>
    Pipeline& source(const Task<Fn>& task) {
        using R = typename Task<Fn>::Result;
        static_assert(detail::IsOptional<R>::value,
                      "a worker source returns std::optional<T> and takes the sequence number");
        static_assert(std::is_same_v<typename Task<Fn>::Arguments, std::tuple<std::uint64_t>>,
                      "a worker source takes one std::uint64_t: the sequence number");
        add_stage({task.name(), StageMode::serial_in_order, 1, true}, typeid(void),
                  typeid(typename R::value_type));
        return *this;
    }

    /// A stage in `workers` worker processes (one for the serial modes): task(item) -> next item.
    /// A task returning void ends the pipeline (no sink after it).
    template <auto Fn>
    Pipeline& stage(const Task<Fn>& task, StageMode mode, unsigned workers = 1) {
        static_assert(std::tuple_size_v<typename Task<Fn>::Arguments> == 1,
                      "a stage task takes one argument: the item");
        using A = std::tuple_element_t<0, typename Task<Fn>::Arguments>;
        using R = typename Task<Fn>::Result;
        add_stage({task.name(), mode, workers, false}, typeid(A), typeid(R));
        return *this;
    }

    /// A sink in this process, called on the thread that runs the pipeline with each item that
    /// went through every stage: in source order (serial_in_order) or as they come.
    template <class F>
    Pipeline& sink(F consume, StageMode mode = StageMode::serial_in_order) {
        using T = typename detail::SinkArgument<F>::type;
        set_sink(
            [consume = std::move(consume)](Reader& r) mutable { consume(Codec<T>::decode(r)); },
            typeid(T), mode);
        return *this;
    }

    /// Runs to completion (or until cancel()); throws what the parent's own source or sink
    /// throws, after stopping everything. Item failures are in the statistics, not thrown.
    /// std::logic_error if the pipeline is incomplete or already ran.
    PipelineStats run();

    /// Stops a running pipeline: the source is not called again, items in flight are dropped
    /// and the workers stopped; run() returns with `cancelled`. Call it from any thread; from a
    /// signal handler use PipelineOptions::cancel_on_sigint instead (this is not
    /// async-signal-safe).
    void cancel() noexcept;

    /// The status board's block name (PipelineOptions::status_board), valid from run() until
    /// the pipeline is destroyed; empty without one.
    std::string status_board() const;

  private:
    void set_source(std::function<bool(std::string&)> next, std::type_index type);
    void set_sink(std::function<void(Reader&)> consume, std::type_index type, StageMode mode);
    void add_stage(detail::StageSpec spec, std::type_index in, std::type_index out);

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpool
