// PipelineRun: the arena and the stage pools, and the loop that moves tokens between stages.
#include "pipeline/run.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "posix/sys.hpp"
#include "shmpool/framework/detail/relabel.hpp"

namespace shmpool::detail {
namespace {

// The cancel flag of the pipeline running with cancel_on_sigint. The handler only stores to it
// (a condition variable is not async-signal-safe); run() checks it at least every 100 ms.
std::atomic<std::atomic<bool>*> sigint_target{nullptr};
void on_sigint(int /*sig*/) {
    if (std::atomic<bool>* flag = sigint_target.load()) flag->store(true);
}

}  // namespace

PipelineRun::PipelineRun(const PipelinePlan& plan, std::atomic<bool>& cancelled, StepEvents& events,
                         std::optional<ShareableList>& board)
    : plan_(plan), cancelled_(cancelled), events_(events), display_(plan, board) {
    unsigned processes = 0;
    for (const auto& s : plan.specs)
        processes += s.workers;
    // The default fills a fixed budget of token buffers: each token is one item in flight, and a
    // pipeline with few of them waits for a cross-process wake-up per handful of items.
    const PipelineOptions& o = plan.options;
    const std::size_t count = o.max_tokens ? o.max_tokens
                                           : std::max({std::size_t{8}, std::size_t{4} * processes,
                                                       default_token_budget / (2 * o.token_bytes)});

    // The arena, owned by this process: if it dies, the tracker removes it.
    arena_block_.emplace(SharedMemory::create(arena_size(count, o.token_bytes)));
    arena_ = ArenaView{arena_block_->data()};
    ArenaHeader* h = arena_.header();
    h->tokens = static_cast<std::uint32_t>(count);
    h->token_bytes = static_cast<std::uint32_t>(o.token_bytes);
    h->stages = worker_stages();
    h->parent_pid = ::getpid();
    for (unsigned s = 0; s < worker_stages(); ++s) {
        std::memcpy(h->stage[s].task, plan.specs[s].task.c_str(), plan.specs[s].task.size() + 1);
        h->stage[s].source = plan.specs[s].source ? 1 : 0;
    }
    std::memcpy(h->magic, arena_magic, 8);
    tokens_.assign(count, {});
    for (std::size_t t = count; t-- > 0;)
        free_tokens_.push_back(static_cast<std::uint32_t>(t));
    for (const auto& s : plan.specs) {
        queues_.emplace_back(s.mode == StageMode::serial_in_order);
        stats_.stages.push_back({s.task, s.mode, s.workers});
    }
    queues_.emplace_back(plan.sink_mode == StageMode::serial_in_order);
    batches_.assign(worker_stages(), 0);

    try {
        if (o.cancel_on_sigint) catch_sigint();
        start_pools(processes);
    } catch (...) {
        clean_up();  // no destructor runs for a constructor that throws
        throw;
    }
}

PipelineRun::~PipelineRun() {
    clean_up();
}

void PipelineRun::clean_up() noexcept {
    if (sigint_handler_) {
        sigint_target.store(nullptr);
        sys::sigaction(SIGINT, &previous_sigint_, nullptr);
        sigint_handler_ = false;
    }
    for (auto& p : pools_)
        p->terminate();
    pools_.clear();
    if (!arena_block_) return;
    for (std::uint32_t t = 0; t < tokens_.size(); ++t) {
        clear_buffer(arena_.meta(t, 0));
        clear_buffer(arena_.meta(t, 1));
    }
    try {
        arena_block_->unlink();
    } catch (const std::exception&) {  // removed by someone else: nothing to do
    }
    arena_block_.reset();
}

void PipelineRun::catch_sigint() {
    std::atomic<bool>* expected = nullptr;
    if (!sigint_target.compare_exchange_strong(expected, &cancelled_))
        throw std::logic_error("pipeline: another pipeline already cancels on SIGINT");
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sys::sigaction(SIGINT, &sa, &previous_sigint_);
    sigint_handler_ = true;
}

void PipelineRun::start_pools(unsigned processes) {
    for (const auto& s : plan_.specs) {
        pools_.push_back(std::make_unique<Pool>(PoolOptions{
            .workers = s.workers,
            .max_retries = plan_.options.max_retries,
            .task_timeout = plan_.options.task_timeout,
            .slot_bytes = std::size_t{64} << 10,
            .start_method = plan_.options.start_method,
            .shared_blocks = {arena_block_->name()},
            .environment = {"SHMPOOL_PIPELINE=" + arena_block_->name()},
            // Idle workers sleep at once when the stages' processes outnumber the cores: a
            // spinning one would take the core from the stage it waits for.
            .idle_spin = processes + 1 > std::thread::hardware_concurrency()
                             ? std::chrono::microseconds(0)
                             : std::chrono::microseconds(20),
            .measure_busy = true,  // StageStats::busy_seconds; a batch's chunk is many steps
            // In a cluster, parallel stages spread over the nodes; a source and serial stages
            // stay on this machine, beside the arena, as their order needs one worker.
            .cluster = {.mode = s.mode == StageMode::parallel && !s.source ? ClusterMode::automatic
                                                                           : ClusterMode::off},
        }));
    }
}

PipelineStats PipelineRun::run() {
    const auto started = std::chrono::steady_clock::now();
    std::vector<StepEvent> batch;
    for (;;) {
        if (cancelled_.load()) {
            stats_.cancelled = true;
            break;
        }
        produce();
        dispatch();
        if (source_done_ && live_ == 0) break;
        {
            std::unique_lock lock(events_.mutex);
            events_.cv.wait_for(lock, std::chrono::milliseconds(100),
                                [&] { return !events_.list.empty() || cancelled_.load(); });
            batch.swap(events_.list);
        }
        for (const StepEvent& e : batch)
            complete(e);
        batch.clear();
        consume_in_parent();
        display_.show(stats_, queues_, false);
    }
    for (unsigned s = 0; s < worker_stages(); ++s) {
        const PoolStats ps = pools_[s]->stats();
        stats_.stages[s].retries = ps.retries;
        stats_.stages[s].crashes = ps.crashes;
        stats_.stages[s].busy_seconds = ps.busy_seconds;
    }
    std::sort(stats_.failures.begin(), stats_.failures.end(),
              [](const ItemFailure& a, const ItemFailure& b) { return a.sequence < b.sequence; });
    stats_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    display_.show(stats_, queues_, true);
    return stats_;
}

void PipelineRun::release(std::uint32_t t) {
    clear_buffer(arena_.meta(t, 0));
    clear_buffer(arena_.meta(t, 1));
    free_tokens_.push_back(t);
    --live_;
}

void PipelineRun::skip_from(unsigned stage, std::uint64_t sequence) {
    for (unsigned s = stage; s < queues_.size(); ++s)
        queues_[s].skip(sequence);
}

void PipelineRun::enqueue_for(unsigned stage, std::uint32_t t) {
    queues_[stage].put(t, tokens_[t].sequence);
    if (stage < worker_stages())
        stats_.stages[stage].max_queue_depth =
            std::max(stats_.stages[stage].max_queue_depth, queues_[stage].depth());
}

void PipelineRun::produce() {
    const bool worker_source = plan_.specs.front().source;
    while (!source_done_ && !free_tokens_.empty() && !cancelled_.load(std::memory_order_relaxed)) {
        const std::uint32_t t = free_tokens_.back();
        if (!worker_source) {
            std::string bytes;
            if (!plan_.parent_source(bytes)) {
                source_done_ = true;
                break;
            }
            write_item(t, 0, bytes);
            ++stats_.produced;
        }
        free_tokens_.pop_back();
        tokens_[t] = Token{next_sequence_++, 0};
        ++live_;
        stats_.max_live_tokens = std::max(stats_.max_live_tokens, live_);
        enqueue_for(0, t);
    }
}

// The parent source's item into token t's buffer (or a block of its own if too big).
void PipelineRun::write_item(std::uint32_t t, unsigned buffer, const std::string& bytes) {
    BufferMeta* m = arena_.meta(t, buffer);
    clear_buffer(m);
    if (bytes.size() <= plan_.options.token_bytes) {
        std::memcpy(arena_.data(t, buffer), bytes.data(), bytes.size());
        m->bytes = static_cast<std::uint32_t>(bytes.size());
        return;
    }
    if (bytes.size() > UINT32_MAX) throw std::length_error("pipeline item over 4 GiB");
    SharedMemory block = SharedMemory::create(bytes.size());  // owned by this process
    std::memcpy(block.data(), bytes.data(), bytes.size());
    std::memcpy(m->block, block.name().c_str(), std::min(block.name().size() + 1, sizeof m->block));
    m->bytes = static_cast<std::uint32_t>(bytes.size());
    m->flags = buffer_in_block;
}

void PipelineRun::dispatch() {
    const TaskEntry entry = task_entry<&pipeline_step>();
    for (unsigned s = 0; s < worker_stages(); ++s) {
        // At most two batches per stage in the pool: one running, one waiting, so the workers
        // never idle while items that arrive meanwhile gather into the next batch (big batches
        // are what make a step cost little).
        if (batches_[s] >= 2) continue;
        std::vector<std::uint32_t> batch = queues_[s].take(SIZE_MAX);
        if (batch.empty()) continue;
        JobItems items;
        items.in_stride = entry.in_stride;
        items.out_stride = entry.out_stride;
        items.count = batch.size();
        items.args.resize(batch.size() * sizeof(StepCall));
        for (std::size_t k = 0; k < batch.size(); ++k) {
            const Token& token = tokens_[batch[k]];
            const StepCall call{batch[k], static_cast<std::uint16_t>(s),
                                static_cast<std::uint16_t>(token.current), token.sequence};
            std::memcpy(items.args.data() + k * sizeof call, &call, sizeof call);
        }
        stats_.stages[s].items_in += batch.size();
        ++batches_[s];
        const std::size_t n = batch.size();
        const StageSpec& spec = plan_.specs[s];
        const std::size_t chunk =
            spec.mode == StageMode::parallel
                ? std::max<std::size_t>(1, (n + spec.workers - 1) / spec.workers)
                : n;  // one worker: one chunk, in order
        submit_job(*pools_[s], pipeline_step_name, std::move(items),
                   std::make_shared<StepSink>(events_, s, std::move(batch)), chunk);
    }
}

void PipelineRun::complete(const StepEvent& e) {
    const unsigned s = e.stage;
    const std::uint32_t t = e.token;
    if (e.last) --batches_[s];
    Token& token = tokens_[t];
    const StageSpec& spec = plan_.specs[s];
    if (e.error) {
        if (spec.source && token.sequence >= end_sequence_) {
            release(t);  // past the end: nothing was lost
            return;
        }
        // The pool reports the internal step task and the item's index in its batch; the user
        // wants the stage's task and the item's sequence number.
        const std::exception_ptr error = relabel(e.error, token.sequence, &spec.task);
        std::string message = "unknown error";
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& x) {
            message = x.what();
        } catch (...) {
        }
        ++stats_.stages[s].failed;
        if (!cancelled_.load()) {
            ++stats_.failed;
            stats_.failures.push_back({token.sequence, spec.task, message, error});
        }
        skip_from(s + 1, token.sequence);
        release(t);
        return;
    }
    const unsigned out = 1 - token.current;
    if (spec.source) {
        // A worker source runs in order in one worker: its end is seen before any result of a
        // later sequence, which is then discarded.
        if (token.sequence >= end_sequence_) {
            release(t);
            return;
        }
        if ((arena_.meta(t, out)->flags & buffer_end) != 0) {
            end_sequence_ = token.sequence;
            source_done_ = true;
            release(t);
            return;
        }
        ++stats_.produced;
    }
    ++stats_.stages[s].items_out;
    clear_buffer(arena_.meta(t, token.current));
    token.current = out;
    if (s + 1 < worker_stages() || plan_.parent_sink) {  // the next stage, or the sink's queue
        enqueue_for(s + 1, t);
    } else {
        ++stats_.completed;
        release(t);
    }
}

// The parent sink: items that went through every stage, in order if it asked so.
void PipelineRun::consume_in_parent() {
    if (!plan_.parent_sink) return;
    for (const std::uint32_t t : queues_[worker_stages()].take(SIZE_MAX)) {
        ItemBytes item = read_buffer(arena_, t, tokens_[t].current);
        Reader r(item.data, item.size);
        try {
            plan_.parent_sink(r);
        } catch (...) {
            release(t);
            throw;
        }
        item.block.reset();
        ++stats_.completed;
        release(t);
    }
}

}  // namespace shmpool::detail
