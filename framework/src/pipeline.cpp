// Pipeline: the parent side. One thread (the caller of run()) moves slots between stages; each
// worker stage is a Pool whose packed jobs are batches of steps; completions come back from the
// pools' supervisor threads as events.
#include "shmpool/framework/pipeline.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "pipeline_arena.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool {
namespace {

using detail::ArenaView;
using detail::BufferMeta;
using detail::StepCall;

// A completed (or failed) step, from a pool's supervisor thread to the pipeline's.
struct Event {
    unsigned stage;
    std::uint32_t token;
    std::exception_ptr error;  // null: done
    bool last = false;         // the last of its batch to settle
};

struct Events {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Event> list;
    void push(Event e) {
        {
            std::lock_guard lock(mutex);
            list.push_back(std::move(e));
        }
        cv.notify_one();
    }
};

// Receives one batch's step results and turns them into events.
class StepSink : public detail::ResultSink {
  public:
    StepSink(Events& events, unsigned stage, std::vector<std::uint32_t> tokens)
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
    Events& events_;
    unsigned stage_;
    std::vector<std::uint32_t> tokens_;
    std::atomic<std::size_t> left_;
};

// The cancel flag of the pipeline running with cancel_on_sigint. The handler only stores to it
// (a condition variable is not async-signal-safe); run() checks it at least every 100 ms.
std::atomic<std::atomic<bool>*> sigint_target{nullptr};
void on_sigint(int /*sig*/) {
    if (std::atomic<bool>* flag = sigint_target.load()) flag->store(true);
}

}  // namespace

struct Pipeline::Impl {
    PipelineOptions options;
    std::function<bool(std::string&)> parent_source;
    std::function<void(Reader&)> parent_sink;
    StageMode sink_mode = StageMode::serial_in_order;
    std::vector<detail::StageSpec> specs;
    std::optional<std::type_index> out_type;
    bool ran = false;
    std::atomic<bool> cancelled{false};
    Events events;

    // Run state (the run() thread's alone).
    struct Slot {
        std::uint64_t sequence = 0;
        unsigned cur = 0;  // the buffer holding the item now
    };
    struct StageQueue {
        static constexpr std::uint32_t unknown = UINT32_MAX;      // not arrived yet
        static constexpr std::uint32_t skipped = UINT32_MAX - 1;  // will never come
        std::deque<std::uint32_t> ready;                          // parallel, serial_out_of_order
        // serial_in_order: a ring by sequence, ring[(head + i) & mask] the token of sequence
        // next + i, or unknown, or skipped (no allocation and no tree per item, as a map had).
        std::vector<std::uint32_t> ring = std::vector<std::uint32_t>(64, unknown);
        std::size_t head = 0;
        std::uint64_t next = 0;   // serial_in_order: the next sequence due
        std::size_t waiting = 0;  // tokens in the ring
        std::size_t batches = 0;  // handed to the pool, not all back
        bool in_order = false;
        std::size_t depth() const { return ready.size() + waiting; }
        std::uint32_t& at(std::size_t i) { return ring[(head + i) & (ring.size() - 1)]; }
        void place(std::uint64_t sequence, std::uint32_t what) {
            // A sequence already passed would wrap the offset into a huge allocation.
            if (sequence < next)
                throw std::logic_error("pipeline: an in-order queue got a sequence it passed");
            const auto i = static_cast<std::size_t>(sequence - next);
            if (i >= ring.size()) {  // grow to a power of two, unrolled from the head
                std::vector<std::uint32_t> bigger(std::bit_ceil(i + 1), unknown);
                for (std::size_t k = 0; k < ring.size(); ++k)
                    bigger[k] = at(k);
                ring.swap(bigger);
                head = 0;
            }
            at(i) = what;
        }
        // The entry of sequence `next`, taken: unknown if it has not arrived.
        std::uint32_t pop_next() {
            const std::uint32_t v = at(0);
            if (v == unknown) return v;
            at(0) = unknown;
            head = (head + 1) & (ring.size() - 1);
            ++next;
            return v;
        }
    };
    std::optional<SharedMemory> arena_block;
    ArenaView arena;
    std::vector<Slot> slots;
    std::vector<std::uint32_t> free_slots;
    std::vector<std::unique_ptr<Pool>> pools;
    std::vector<StageQueue> queues;  // one per worker stage, then one for the parent sink
    std::optional<ShareableList> board;
    std::string board_name;
    PipelineStats stats;
    std::uint64_t next_sequence = 0;
    std::uint64_t end_sequence = UINT64_MAX;  // a worker source's end of stream
    bool source_done = false;
    std::size_t live = 0;
    std::chrono::steady_clock::time_point last_display{};

    unsigned worker_stages() const { return static_cast<unsigned>(specs.size()); }

    void check_type(std::type_index in, const std::string& what) {
        if (!out_type)
            throw std::logic_error(fmt::format("pipeline: {} comes before any source", what));
        if (*out_type == typeid(void))
            throw std::logic_error(
                fmt::format("pipeline: {} follows a stage that returns void", what));
        if (*out_type != in)
            throw std::logic_error(fmt::format(
                "pipeline: {} takes a different type from what the stage before it produces",
                what));
    }

    void release(std::uint32_t t) {
        detail::clear_buffer(arena.meta(t, 0));
        detail::clear_buffer(arena.meta(t, 1));
        free_slots.push_back(t);
        --live;
    }

    // A sequence number that will not reach the stages from `from` on (it failed, or it is past
    // a worker source's end).
    void skip_from(unsigned from, std::uint64_t sequence) {
        for (unsigned s = from; s < queues.size(); ++s) {
            if (queues[s].in_order && sequence >= queues[s].next)
                queues[s].place(sequence, StageQueue::skipped);
        }
    }

    void enqueue_for(unsigned s, std::uint32_t t) {
        StageQueue& q = queues[s];
        if (q.in_order) {
            q.place(slots[t].sequence, t);
            ++q.waiting;
        } else {
            q.ready.push_back(t);
        }
        if (s < worker_stages())
            stats.stages[s].max_queue_depth = std::max(stats.stages[s].max_queue_depth, q.depth());
    }

    // Takes what stage s may run now: for serial_in_order, only the run of sequences due next.
    std::vector<std::uint32_t> take(unsigned s, std::size_t limit) {
        StageQueue& q = queues[s];
        std::vector<std::uint32_t> out;
        if (!q.in_order) {
            while (!q.ready.empty() && out.size() < limit) {
                out.push_back(q.ready.front());
                q.ready.pop_front();
            }
            return out;
        }
        while (out.size() < limit) {
            const std::uint32_t v = q.pop_next();
            if (v == StageQueue::unknown) break;
            if (v != StageQueue::skipped) {
                out.push_back(v);
                --q.waiting;
            }
        }
        return out;
    }

    void produce() {
        while (!source_done && !free_slots.empty() && !cancelled.load(std::memory_order_relaxed)) {
            std::uint32_t t = free_slots.back();
            if (!specs.front().source) {
                std::string bytes;
                if (!parent_source(bytes)) {
                    source_done = true;
                    break;
                }
                write_item(t, 0, bytes);
            }
            free_slots.pop_back();
            slots[t] = Slot{next_sequence++, 0};
            ++live;
            stats.max_live_tokens = std::max(stats.max_live_tokens, live);
            if (!specs.front().source) ++stats.produced;
            enqueue_for(0, t);
        }
    }

    // The parent source's item into slot t's buffer `buf` (or a block of its own if too big).
    void write_item(std::uint32_t t, unsigned buf, const std::string& bytes) {
        BufferMeta* m = arena.meta(t, buf);
        detail::clear_buffer(m);
        if (bytes.size() <= options.token_bytes) {
            std::memcpy(arena.data(t, buf), bytes.data(), bytes.size());
            m->bytes = static_cast<std::uint32_t>(bytes.size());
            return;
        }
        if (bytes.size() > UINT32_MAX) throw std::length_error("pipeline item over 4 GiB");
        SharedMemory block = SharedMemory::create(bytes.size());  // owned by this process
        std::memcpy(block.data(), bytes.data(), bytes.size());
        std::memcpy(m->block, block.name().c_str(),
                    std::min(block.name().size() + 1, sizeof m->block));
        m->bytes = static_cast<std::uint32_t>(bytes.size());
        m->flags = detail::buffer_in_block;
    }

    void dispatch() {
        const detail::TaskEntry entry = detail::task_entry<&detail::pipeline_step>();
        for (unsigned s = 0; s < worker_stages(); ++s) {
            const detail::StageSpec& spec = specs[s];
            // At most two batches per stage in the pool: one running, one waiting, so the
            // workers never idle while items that arrive meanwhile gather into the next batch
            // (big batches are what make a step cost little).
            if (queues[s].batches >= 2) continue;
            std::vector<std::uint32_t> batch = take(s, SIZE_MAX);
            if (batch.empty()) continue;
            detail::JobItems items;
            items.in_stride = entry.in_stride;
            items.out_stride = entry.out_stride;
            items.count = batch.size();
            items.args.resize(batch.size() * sizeof(StepCall));
            for (std::size_t k = 0; k < batch.size(); ++k) {
                const Slot& slot = slots[batch[k]];
                StepCall call{batch[k], static_cast<std::uint16_t>(s),
                              static_cast<std::uint16_t>(slot.cur), slot.sequence};
                std::memcpy(items.args.data() + k * sizeof call, &call, sizeof call);
            }
            stats.stages[s].items_in += batch.size();
            ++queues[s].batches;
            const std::size_t n = batch.size();
            const std::size_t chunk =
                spec.mode == StageMode::parallel
                    ? std::max<std::size_t>(1, (n + spec.workers - 1) / spec.workers)
                    : n;  // one worker: one chunk, in order
            Pipeline::enqueue_steps(*pools[s], std::move(items),
                                    std::make_shared<StepSink>(events, s, std::move(batch)), chunk);
        }
    }

    void complete(const Event& e) {
        const unsigned s = e.stage;
        const std::uint32_t t = e.token;
        if (e.last) --queues[s].batches;
        Slot& slot = slots[t];
        if (e.error) {
            // The pool reports the internal step task and the item's index in its batch; the
            // user wants the stage's task and the item's sequence number.
            const std::exception_ptr error =
                detail::relabel(e.error, slot.sequence, &specs[s].task);
            std::string message;
            try {
                std::rethrow_exception(error);
            } catch (const std::exception& x) {
                message = x.what();
            } catch (...) {
                message = "unknown error";
            }
            if (specs[s].source && slot.sequence >= end_sequence) {
                release(t);  // past the end: nothing was lost
                return;
            }
            ++stats.stages[s].failed;
            if (!cancelled.load()) {
                ++stats.failed;
                stats.failures.push_back({slot.sequence, specs[s].task, message, error});
            }
            skip_from(s + 1, slot.sequence);
            release(t);
            return;
        }
        const unsigned out = 1 - slot.cur;
        if (specs[s].source) {
            // A worker source runs in order in one worker: its end is seen before any result
            // of a later sequence, which is then discarded.
            if (slot.sequence >= end_sequence) {
                release(t);
                return;
            }
            if ((arena.meta(t, out)->flags & detail::buffer_end) != 0) {
                end_sequence = slot.sequence;
                source_done = true;
                release(t);
                return;
            }
            ++stats.produced;
        }
        ++stats.stages[s].items_out;
        detail::clear_buffer(arena.meta(t, slot.cur));
        slot.cur = out;
        const unsigned next = s + 1;
        if (next < worker_stages() || parent_sink) {  // the next stage, or the sink's queue
            enqueue_for(next, t);
        } else {
            ++stats.completed;
            release(t);
        }
    }

    void publish(bool final) {
        auto now = std::chrono::steady_clock::now();
        if (!final && now - last_display < std::chrono::milliseconds(100)) return;
        last_display = now;
        if (board) {
            auto lock = board->lock();
            board->set(0, final ? (stats.cancelled ? "cancelled" : "done") : "running");
            board->set(1, static_cast<std::int64_t>(stats.produced));
            board->set(2, static_cast<std::int64_t>(stats.completed));
            board->set(3, static_cast<std::int64_t>(stats.failed));
            for (unsigned s = 0; s < worker_stages(); ++s) {
                const std::ptrdiff_t at = 4 + static_cast<std::ptrdiff_t>(s) * 5;
                board->set(at + 1, static_cast<std::int64_t>(stats.stages[s].items_in));
                board->set(at + 2, static_cast<std::int64_t>(stats.stages[s].items_out));
                board->set(at + 3, static_cast<std::int64_t>(stats.stages[s].failed));
                board->set(at + 4, static_cast<std::int64_t>(queues[s].depth()));
            }
        }
        if (options.progress_line && ::isatty(STDERR_FILENO)) {
            std::string line = fmt::format("\rpipeline: {} made", stats.produced);
            for (unsigned s = 0; s < worker_stages(); ++s) {
                line += fmt::format(" | {} {}/{} q{}", specs[s].task, stats.stages[s].items_out,
                                    stats.stages[s].items_in, queues[s].depth());
            }
            line += fmt::format(" | {} done ", stats.completed);
            if (final) line += '\n';
            std::fputs(line.c_str(), stderr);
            std::fflush(stderr);
        }
    }
};

Pipeline::Pipeline(PipelineOptions options) : impl_(std::make_unique<Impl>()) {
    if (options.token_bytes == 0 || options.token_bytes > (std::size_t{1} << 30))
        throw std::invalid_argument("PipelineOptions::token_bytes must be between 1 and 1 GiB");
    if (options.max_tokens > (std::size_t{1} << 20))
        throw std::invalid_argument("PipelineOptions::max_tokens is over 1,048,576");
    impl_->options = options;
    detail::register_pipeline_step();
}

Pipeline::~Pipeline() {
    if (impl_->board) {
        try {
            impl_->board->unlink();
        } catch (const std::exception&) {  // removed by someone else: nothing to do
        }
    }
}

void Pipeline::set_source(std::function<bool(std::string&)> next, std::type_index type) {
    Impl& m = *impl_;
    if (m.out_type) throw std::logic_error("pipeline: the source must come first, and only once");
    m.parent_source = std::move(next);
    m.out_type = type;
}

void Pipeline::add_stage(detail::StageSpec spec, std::type_index in, std::type_index out) {
    Impl& m = *impl_;
    if (spec.source) {
        if (m.out_type)
            throw std::logic_error("pipeline: the source must come first, and only once");
    } else {
        m.check_type(in, fmt::format("stage '{}'", spec.task));
    }
    if (m.parent_sink) throw std::logic_error("pipeline: no stage can follow the sink");
    if (m.specs.size() == detail::max_pipeline_stages)
        throw std::logic_error(
            fmt::format("pipeline: more than {} stages", detail::max_pipeline_stages));
    if (spec.task.size() >= detail::stage_task_chars)
        throw std::invalid_argument(fmt::format("pipeline: task name '{}' is too long", spec.task));
    if (spec.mode != StageMode::parallel) spec.workers = 1;
    if (spec.workers == 0)
        throw std::invalid_argument(fmt::format("pipeline: stage '{}' has no workers", spec.task));
    m.specs.push_back(std::move(spec));
    m.out_type = out;
}

void Pipeline::set_sink(std::function<void(Reader&)> consume, std::type_index type,
                        StageMode mode) {
    Impl& m = *impl_;
    m.check_type(type, "the sink");
    if (m.parent_sink) throw std::logic_error("pipeline: only one sink");
    m.parent_sink = std::move(consume);
    m.sink_mode = mode;
}

void Pipeline::cancel() noexcept {
    impl_->cancelled.store(true);
    impl_->events.cv.notify_all();
}

std::string Pipeline::status_board() const {
    return impl_->board_name;
}

PipelineStats Pipeline::run() {
    Impl& m = *impl_;
    if (m.ran) throw std::logic_error("pipeline: run() was already called");
    if (m.specs.empty()) throw std::logic_error("pipeline: no stage runs in a worker");
    if (!m.parent_source && !m.specs.front().source) throw std::logic_error("pipeline: no source");
    m.ran = true;
    const auto started = std::chrono::steady_clock::now();

    unsigned processes = 0;
    for (const auto& s : m.specs)
        processes += s.workers;
    // The default fills a fixed budget of token buffers: each token is one item in flight, and a
    // pipeline with few of them waits for a cross-process wake-up per handful of items.
    const std::size_t tokens =
        m.options.max_tokens
            ? m.options.max_tokens
            : std::max({std::size_t{8}, std::size_t{4} * processes,
                        detail::default_token_budget / (2 * m.options.token_bytes)});

    // The arena, owned by this process: if it dies, the tracker removes it.
    m.arena_block.emplace(SharedMemory::create(detail::arena_size(tokens, m.options.token_bytes)));
    m.arena = ArenaView{m.arena_block->data()};
    detail::ArenaHeader* h = m.arena.header();
    h->tokens = static_cast<std::uint32_t>(tokens);
    h->token_bytes = static_cast<std::uint32_t>(m.options.token_bytes);
    h->stages = m.worker_stages();
    h->parent_pid = ::getpid();
    for (unsigned s = 0; s < m.worker_stages(); ++s) {
        std::memcpy(h->stage[s].task, m.specs[s].task.c_str(), m.specs[s].task.size() + 1);
        h->stage[s].source = m.specs[s].source ? 1 : 0;
    }
    std::memcpy(h->magic, detail::arena_magic, 8);
    m.slots.assign(tokens, {});
    for (std::size_t t = tokens; t-- > 0;)
        m.free_slots.push_back(static_cast<std::uint32_t>(t));
    m.queues.assign(m.worker_stages() + 1, {});
    for (unsigned s = 0; s < m.worker_stages(); ++s) {
        m.queues[s].in_order = m.specs[s].mode == StageMode::serial_in_order;
        m.stats.stages.push_back({m.specs[s].task, m.specs[s].mode, m.specs[s].workers});
    }
    m.queues.back().in_order = m.sink_mode == StageMode::serial_in_order;

    if (m.options.status_board) {
        std::vector<Value> values{Value("cancelled"), Value(std::int64_t{0}),
                                  Value(std::int64_t{0}), Value(std::int64_t{0})};
        for (const auto& s : m.specs) {
            values.emplace_back(s.task);
            for (int k = 0; k < 4; ++k)
                values.emplace_back(std::int64_t{0});
        }
        m.board.emplace(ShareableList::create(values, {.guarded = true}));
        m.board_name = m.board->name();
    }

    struct Cleanup {  // whatever happens: workers stopped, every block removed
        Impl& m;
        struct sigaction previous {};
        bool handler = false;
        ~Cleanup() {
            if (handler) {
                sigint_target.store(nullptr);
                ::sigaction(SIGINT, &previous, nullptr);
            }
            for (auto& p : m.pools)
                p->terminate();
            m.pools.clear();
            for (std::uint32_t t = 0; t < m.slots.size(); ++t) {
                detail::clear_buffer(m.arena.meta(t, 0));
                detail::clear_buffer(m.arena.meta(t, 1));
            }
            try {
                m.arena_block->unlink();
            } catch (const std::exception&) {  // removed by someone else: nothing to do
            }
        }
    } cleanup{m};
    if (m.options.cancel_on_sigint) {
        std::atomic<bool>* expected = nullptr;
        if (!sigint_target.compare_exchange_strong(expected, &m.cancelled))
            throw std::logic_error("pipeline: another pipeline already cancels on SIGINT");
        struct sigaction sa {};
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &cleanup.previous);
        cleanup.handler = true;
    }

    for (const auto& s : m.specs) {
        m.pools.push_back(std::make_unique<Pool>(PoolOptions{
            .workers = s.workers,
            .max_retries = m.options.max_retries,
            .task_timeout = m.options.task_timeout,
            .slot_bytes = std::size_t{64} << 10,
            .shared_blocks = {m.arena_block->name()},
            .environment = {"SHMPOOL_PIPELINE=" + m.arena_block->name()},
            // Idle workers sleep at once when the stages' processes outnumber the cores: a
            // spinning one would take the core from the stage it waits for.
            .idle_spin = processes + 1 > std::thread::hardware_concurrency()
                             ? std::chrono::microseconds(0)
                             : std::chrono::microseconds(20),
            .measure_busy = true,  // StageStats::busy_seconds; a batch's chunk is many steps
        }));
    }

    std::vector<Event> batch;
    for (;;) {
        if (m.cancelled.load()) {
            m.stats.cancelled = true;
            break;
        }
        m.produce();
        m.dispatch();
        if (m.source_done && m.live == 0) break;
        {
            std::unique_lock lock(m.events.mutex);
            m.events.cv.wait_for(lock, std::chrono::milliseconds(100),
                                 [&] { return !m.events.list.empty() || m.cancelled.load(); });
            batch.swap(m.events.list);
        }
        for (const Event& e : batch)
            m.complete(e);
        batch.clear();
        // The parent sink: items that went through every stage, in order if it asked so.
        if (m.parent_sink) {
            for (std::uint32_t t : m.take(m.worker_stages(), SIZE_MAX)) {
                detail::ItemBytes item = detail::read_buffer(m.arena, t, m.slots[t].cur);
                Reader r(item.data, item.size);
                try {
                    m.parent_sink(r);
                } catch (...) {
                    m.release(t);
                    throw;
                }
                item.block.reset();
                ++m.stats.completed;
                m.release(t);
            }
        }
        m.publish(false);
    }
    for (unsigned s = 0; s < m.worker_stages(); ++s) {
        PoolStats ps = m.pools[s]->stats();
        m.stats.stages[s].retries = ps.retries;
        m.stats.stages[s].crashes = ps.crashes;
        m.stats.stages[s].busy_seconds = ps.busy_seconds;
    }
    std::sort(m.stats.failures.begin(), m.stats.failures.end(),
              [](const ItemFailure& a, const ItemFailure& b) { return a.sequence < b.sequence; });
    m.stats.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    m.publish(true);
    return m.stats;
}

}  // namespace shmpool

namespace shmpool {

void Pipeline::enqueue_steps(Pool& pool, detail::JobItems&& items,
                             std::shared_ptr<detail::ResultSink> sink, std::size_t chunksize) {
    pool.enqueue(detail::pipeline_step_name, std::move(items), std::move(sink), chunksize);
}

}  // namespace shmpool
