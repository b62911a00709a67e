// RemotePool and RemoteNode: chunks out to a node, results back into the pool's router.
#include "remote_pool.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "node_identity.hpp"
#include "protocol/records.hpp"
#include "remote_steps.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"

namespace shmpool::cluster {

RemoteNode::RemoteNode(Coordinator& coordinator, const detail::PoolWiring& wiring,
                       std::uint32_t pool, unsigned node)
    : coordinator_(coordinator), wiring_(wiring), pool_(pool), node_(node) {
}

void RemoteNode::opened(unsigned workers) noexcept {
    workers_ = workers;
    // Twice the node's workers, so that none waits for the next chunk a round trip long; at
    // least eight, so that chunks of one item still fill the network's pipe.
    window_ = std::max(8u, 2 * workers);
}

PoolStats RemoteNode::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

bool RemoteNode::dispatch(const detail::SlotsLocked& /*locked*/, detail::JobQueue& queue) {
    bool any = false;
    while (in_flight_.size() < window_) {
        std::optional<detail::Chunk> next = queue.take_halving_the_last();
        if (!next) break;
        const detail::Chunk chunk = std::move(*next);
        detail::Job& job = *chunk.job;
        // A future cancelled before it started is settled already (submit jobs are one item).
        if (!job.items.packed() && chunk.size() == 1 && !job.sink->start(chunk.begin)) {
            queue.finish(1);
            continue;
        }
        ChunkRequest request;
        request.pool = pool_;
        request.chunk = next_chunk_++;
        request.task = job.task;
        request.in_stride = job.items.in_stride;
        request.out_stride = job.items.out_stride;
        request.count = static_cast<std::uint32_t>(chunk.size());
        request.index_ranges = job.items.index_ranges;
        if (is_pipeline_step(chunk)) {
            remote_step_items(chunk, arena(), request);  // the items' bytes, not their slots
        } else if (job.items.packed()) {
            request.items.assign(job.items.args.data() + chunk.begin * job.items.in_stride,
                                 chunk.size() * job.items.in_stride);
        } else {
            for (std::size_t i = chunk.begin; i < chunk.end; ++i) {
                const std::size_t at = job.items.offsets[i];
                const auto length = static_cast<std::uint64_t>(job.items.offsets[i + 1] - at);
                request.items.append(reinterpret_cast<const char*>(&length), 8);
                request.items.append(job.items.args, at, length);
            }
        }
        in_flight_.emplace(request.chunk, chunk);
        coordinator_.note_in_flight(1);
        coordinator_.send(node_, Tag::chunk, encode(request));
        any = true;
    }
    return any;
}

void RemoteNode::receive(ChunkResult&& result) {
    {
        std::lock_guard lock(mutex_);
        stats_ = result.stats;
        inbox_.push_back(std::move(result));
    }
    has_results_.store(true);
    wiring_.bell.ring();  // the supervisor, or a get() waiting on the bell, harvests it
}

void RemoteNode::closed(const PoolStats& stats) {
    std::lock_guard lock(mutex_);
    stats_ = stats;
}

bool RemoteNode::harvest(const detail::SlotsLocked& locked, detail::JobQueue& queue) {
    if (!has_results_.load()) return false;
    std::vector<ChunkResult> results;
    {
        std::lock_guard lock(mutex_);
        results.swap(inbox_);
        has_results_.store(false);
    }
    for (ChunkResult& r : results)
        deliver(locked, queue, r);
    return !results.empty();
}

std::exception_ptr RemoteNode::to_exception(const RemoteError& e, const detail::Chunk& chunk,
                                            std::uint32_t position) const {
    const std::string& task = chunk.job->task;
    const std::size_t item = chunk.begin + position;
    switch (e.kind) {
        case RemoteError::Kind::task_error:
            return std::make_exception_ptr(TaskError(task, e.type, e.message, node_));
        case RemoteError::Kind::crashed:
            return std::make_exception_ptr(
                WorkerCrashed(task, item, e.pid, e.signal, e.exit_code, e.attempts, node_));
        case RemoteError::Kind::timeout:
            return std::make_exception_ptr(TaskTimeout(task, item, e.seconds, node_));
        case RemoteError::Kind::cancelled:
            return std::make_exception_ptr(TaskCancelled(task));
        case RemoteError::Kind::closed:
            return std::make_exception_ptr(shmpool::PoolClosed());
        case RemoteError::Kind::length_error:
            return std::make_exception_ptr(std::length_error(e.message));
        case RemoteError::Kind::other:
            break;
    }
    return std::make_exception_ptr(std::runtime_error(
        fmt::format("task '{}' item {} on node {}: {}", task, item, node_, e.message)));
}

void RemoteNode::deliver(const detail::SlotsLocked& locked, detail::JobQueue& queue,
                         ChunkResult& r) {
    auto it = in_flight_.find(r.chunk);
    if (it == in_flight_.end()) return;  // failed already (terminate)
    const detail::Chunk chunk = std::move(it->second);
    in_flight_.erase(it);
    cancels_sent_.erase(r.chunk);
    coordinator_.note_in_flight(-1);
    // Bytes the node wrote into writable blocks, back into this machine's copy first: the
    // caller may read them as soon as the results are in.
    for (const WriteBack& w : r.writes) {
        SharedMemory& block = shared_block(w.block);
        if (w.offset <= block.size() && w.bytes.size() <= block.size() - w.offset)
            std::memcpy(block.data() + w.offset, w.bytes.data(), w.bytes.size());
    }
    if (is_pipeline_step(chunk)) apply_remote_steps(chunk, arena(), r);
    const auto* area = reinterpret_cast<const std::byte*>(r.response.data());
    const auto size = static_cast<std::uint32_t>(r.response.size());
    const detail::ResponseView response{area, size, size};
    std::sort(r.specials.begin(), r.specials.end(),
              [](const SpecialError& a, const SpecialError& b) { return a.position < b.position; });
    const auto count = static_cast<std::uint32_t>(std::min<std::size_t>(r.count, chunk.size()));
    std::uint32_t from = 0;
    for (const SpecialError& s : r.specials) {
        if (s.position >= count) break;
        wiring_.router.deliver(locked, chunk, response, from, s.position);
        wiring_.router.fail(locked, chunk, s.position, to_exception(s.error, chunk, s.position));
        from = s.position + 1;
    }
    wiring_.router.deliver(locked, chunk, response, from, count);
    for (std::uint32_t k = count; k < chunk.size(); ++k)  // never: a node settles every item
        wiring_.router.fail(locked, chunk, k,
                            std::make_exception_ptr(std::runtime_error("no result from node")));
    queue.finish(chunk.size());
}

// The pipeline's arena, for a stage pool (its workers find it through SHMPOOL_PIPELINE).
const detail::ArenaView& RemoteNode::arena() {
    if (!arena_) {
        for (const std::string& var : wiring_.options.environment) {
            if (var.starts_with("SHMPOOL_PIPELINE="))
                arena_ = detail::ArenaView{shared_block(var.substr(17)).data()};
        }
        if (!arena_) throw std::logic_error("pipeline steps outside a pipeline's stage pool");
    }
    return *arena_;
}

void RemoteNode::kill_cancelled(const detail::SlotsLocked& /*locked*/) {
    for (const auto& [id, chunk] : in_flight_) {
        if (chunk.job->sink->kill_requested() && cancels_sent_.insert(id).second)
            coordinator_.send(node_, Tag::cancel, encode(ChunkRef{pool_, id}));
    }
}

void RemoteNode::terminate(const detail::SlotsLocked& locked) {
    for (auto& [id, chunk] : in_flight_) {
        wiring_.router.fail_all(locked, chunk, std::make_exception_ptr(shmpool::PoolClosed()));
        wiring_.queue.finish(chunk.size());
        coordinator_.note_in_flight(-1);
    }
    in_flight_.clear();
}

RemotePool::RemotePool(Coordinator& coordinator, const detail::PoolWiring& wiring)
    : coordinator_(coordinator), wiring_(wiring), id_(coordinator.new_pool_id()) {
    const auto& nodes = coordinator.nodes();
    const bool replicate =
        std::any_of(nodes.begin(), nodes.end(), [](const NodeInfo& n) { return !n.shares_shm; });
    OpenPool open;
    open.pool = id_;
    open.shm_identity = shm_identity();
    open.options = wiring.options;
    std::vector<std::pair<const std::byte*, std::size_t>> replicated;
    for (const std::string& name : wiring.options.shared_blocks) {
        SharedMemory& block = shared_block(name);  // this process's mapping, for good
        open.blocks.push_back({block.name(), block.size(), replicate});
        if (replicate) replicated.emplace_back(block.data(), block.size());
    }
    for (unsigned n = 1; n <= nodes.size(); ++n)
        nodes_.push_back(std::make_unique<RemoteNode>(coordinator, wiring, id_, n));
    const std::vector<unsigned> workers = coordinator.open(open, std::move(replicated), *this);
    for (unsigned n = 1; n <= nodes.size(); ++n)
        nodes_[n - 1]->opened(workers[n - 1]);
}

RemotePool::~RemotePool() {
    close();
}

std::vector<detail::ChunkExecutor*> RemotePool::executors() {
    std::vector<detail::ChunkExecutor*> out;
    for (auto& n : nodes_)
        out.push_back(n.get());
    return out;
}

unsigned RemotePool::workers() const {
    unsigned total = 0;
    for (const auto& n : nodes_)
        total += n->workers();
    return total;
}

std::vector<PoolStats> RemotePool::stats() const {
    std::vector<PoolStats> out;
    for (const auto& n : nodes_)
        out.push_back(n->stats());
    return out;
}

void RemotePool::kill_cancelled(const detail::SlotsLocked& locked) {
    for (auto& n : nodes_)
        n->kill_cancelled(locked);
}

void RemotePool::terminate(const detail::SlotsLocked& locked) {
    terminated_ = true;
    for (auto& n : nodes_)
        n->terminate(locked);
}

void RemotePool::close() noexcept {
    if (closed_) return;
    closed_ = true;
    coordinator_.close(id_, terminated_ ? Tag::terminate_pool : Tag::close_pool);
}

void RemotePool::on_result(unsigned node, ChunkResult&& result) {
    if (node >= 1 && node <= nodes_.size()) nodes_[node - 1]->receive(std::move(result));
}

void RemotePool::on_event(unsigned node, WorkerEvent event) {
    event.node = node;
    wiring_.callbacks.push(std::move(event));
}

void RemotePool::on_closed(unsigned node, const PoolStats& stats) {
    if (node >= 1 && node <= nodes_.size()) nodes_[node - 1]->closed(stats);
}

}  // namespace shmpool::cluster
