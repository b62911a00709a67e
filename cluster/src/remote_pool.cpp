// RemotePool and RemoteNode: chunks out to the nodes, results back into the pool's router.
#include "remote_pool.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "node_identity.hpp"
#include "protocol/records.hpp"
#include "remote_steps.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"

namespace shmpool::cluster {

namespace {

std::string without_slash(std::string_view name) {
    return std::string(name.starts_with('/') ? name.substr(1) : name);
}

// Two nodes on one machine (other than rank 0's) would each make the same replicas there.
void refuse_nodes_sharing_a_machine(const std::vector<NodeInfo>& nodes) {
    for (std::size_t a = 0; a < nodes.size(); ++a) {
        for (std::size_t b = a + 1; b < nodes.size(); ++b) {
            if (!nodes[a].shares_shm && nodes[a].shm_identity == nodes[b].shm_identity)
                throw std::invalid_argument(fmt::format(
                    "nodes {} and {} share a /dev/shm (on {}), so a pool's shared_blocks cannot "
                    "be replicated to both: run one rank per machine (mpirun --map-by "
                    "ppr:1:node, as shmpool run does)",
                    a + 1, b + 1, nodes[a].host));
        }
    }
}

}  // namespace

RemoteNode::RemoteNode(Coordinator& coordinator, const detail::PoolWiring& wiring,
                       PoolBlocks& blocks, std::uint32_t pool, unsigned node)
    : coordinator_(coordinator), wiring_(wiring), blocks_(blocks), pool_(pool), node_(node) {
}

void RemoteNode::opened(unsigned workers) noexcept {
    workers_ = workers;
}

std::size_t RemoteNode::window(std::size_t next_size) const noexcept {
    // Twice the node's workers, so that none waits a round trip for its next chunk; for chunks
    // of one item at least eight, so that they fill the network's pipe.
    const std::size_t twice = 2 * std::size_t{std::max(1u, workers_)};
    return next_size == 1 ? std::max<std::size_t>(8, twice) : twice;
}

std::size_t RemoteNode::room(std::size_t next_size) const noexcept {
    const std::size_t w = window(next_size);
    return in_flight_.size() < w ? w - in_flight_.size() : 0;
}

PoolStats RemoteNode::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

ChunkRequest RemoteNode::request_for(const detail::Chunk& chunk) {
    const detail::Job& job = *chunk.job;
    ChunkRequest request;
    request.pool = pool_;
    request.task = job.task;
    request.in_stride = job.items.in_stride;
    request.out_stride = job.items.out_stride;
    request.count = static_cast<std::uint32_t>(chunk.size());
    request.first_item = chunk.begin;
    request.index_ranges = job.items.index_ranges;
    if (is_pipeline_step(chunk)) {
        if (!blocks_.arena)
            throw std::logic_error("pipeline steps outside a pipeline's stage pool");
        remote_step_items(chunk, *blocks_.arena, request);  // the items' bytes, not their slots
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
    return request;
}

void RemoteNode::send(const detail::SlotsLocked& locked, detail::JobQueue& queue,
                      detail::Chunk chunk) {
    detail::Job& job = *chunk.job;
    // A future cancelled before it started is settled already (submit jobs are one item).
    if (!job.items.packed() && chunk.size() == 1 && !job.sink->start(chunk.begin)) {
        queue.finish(1);
        return;
    }
    try {
        ChunkRequest request = request_for(chunk);
        request.chunk = next_chunk_;
        std::string bytes = encode(request);
        if (bytes.size() > mpi::max_message - 4096) {
            if (chunk.size() > 1) {  // in two, back at the front in order
                const std::size_t half = chunk.begin + chunk.size() / 2;
                if (queue.requeue_front({chunk.job, half, chunk.end}) &&
                    queue.requeue_front({chunk.job, chunk.begin, half}))
                    return;
            }
            throw std::length_error(
                fmt::format("task '{}' item {}: its arguments come to {} bytes, more than one "
                            "cluster message carries ({} bytes)",
                            job.task, chunk.begin, bytes.size(), mpi::max_message));
        }
        in_flight_.emplace(next_chunk_, chunk);
        coordinator_.note_in_flight(1);
        coordinator_.send(node_, Tag::chunk, std::move(bytes));
        ++next_chunk_;
    } catch (...) {
        if (in_flight_.erase(next_chunk_) != 0) coordinator_.note_in_flight(-1);
        wiring_.router.fail_all(locked, chunk, std::current_exception());
        queue.finish(chunk.size());
    }
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
            return std::make_exception_ptr(std::length_error(
                fmt::format("task '{}' item {} on node {}: {}", task, item, node_, e.message)));
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
    const auto count = static_cast<std::uint32_t>(std::min<std::size_t>(r.count, chunk.size()));
    try {
        // Bytes the node wrote into writable blocks, back into this machine's copy first: the
        // caller may read them as soon as the results are in.
        for (const WriteBack& w : r.writes) {
            const auto b = blocks_.blocks.find(without_slash(w.block));
            if (b == blocks_.blocks.end() || w.offset > b->second.size() ||
                w.bytes.size() > b->second.size() - w.offset)
                throw std::runtime_error(fmt::format(
                    "node {} wrote back {} bytes at {} of block '{}', which is not a writable "
                    "block of the pool of that size",
                    node_, w.bytes.size(), w.offset, w.block));
            std::memcpy(b->second.data() + w.offset, w.bytes.data(), w.bytes.size());
        }
        if (is_pipeline_step(chunk)) {
            if (!blocks_.arena) throw std::logic_error("pipeline steps outside a stage pool");
            apply_remote_steps(chunk, *blocks_.arena, r);
        }
        if (chunk.job->items.packed() && r.specials.size() < count &&
            r.response.size() < std::size_t{count} * chunk.job->items.out_stride)
            throw std::runtime_error(
                fmt::format("node {} sent {} bytes of results for {} items of {} bytes", node_,
                            r.response.size(), count, chunk.job->items.out_stride));
    } catch (...) {
        wiring_.router.fail_all(locked, chunk, std::current_exception());
        queue.finish(chunk.size());
        return;
    }
    const auto* area = reinterpret_cast<const std::byte*>(r.response.data());
    const auto size = static_cast<std::uint32_t>(
        std::min<std::size_t>(r.response.size(), std::numeric_limits<std::uint32_t>::max()));
    const detail::ResponseView response{area, size, size};
    std::sort(r.specials.begin(), r.specials.end(),
              [](const SpecialError& a, const SpecialError& b) { return a.position < b.position; });
    std::uint32_t from = 0;
    for (const SpecialError& s : r.specials) {
        if (s.position >= count || s.position < from) continue;
        wiring_.router.deliver(locked, chunk, response, from, s.position);
        wiring_.router.fail(locked, chunk, s.position, to_exception(s.error, chunk, s.position));
        from = s.position + 1;
    }
    wiring_.router.deliver(locked, chunk, response, from, count);
    for (std::uint32_t k = count; k < chunk.size(); ++k)  // never: a node settles every item
        wiring_.router.fail(locked, chunk, k,
                            std::make_exception_ptr(std::runtime_error(
                                fmt::format("task '{}' item {}: node {} sent no result for it",
                                            chunk.job->task, chunk.begin + k, node_))));
    queue.finish(chunk.size());
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
    open.options.workers = wiring.requested_workers;  // 0: each node its own cores
    open.options.shared_blocks.clear();
    open.options.environment.clear();
    // A pipeline's arena stays here: its steps travel as bytes (remote_steps.hpp).
    std::string arena;
    for (const std::string& var : wiring.options.environment) {
        if (var.starts_with("SHMPOOL_PIPELINE=")) {
            arena = var.substr(17);
        } else {
            open.options.environment.push_back(var);
        }
    }
    if (!arena.empty()) {
        blocks_.arena_block = SharedMemory::attach(arena);
        blocks_.arena = detail::ArenaView{blocks_.arena_block->data()};
    }
    std::vector<std::pair<const std::byte*, std::size_t>> replicated;
    for (const std::string& name : wiring.options.shared_blocks) {
        if (name == arena) continue;
        open.options.shared_blocks.push_back(name);
        const std::string key = without_slash(name);
        if (blocks_.blocks.count(key) != 0) continue;
        SharedMemory& block = blocks_.blocks.emplace(key, SharedMemory::attach(name)).first->second;
        open.blocks.push_back({block.name(), block.size(), replicate});
        if (replicate) replicated.emplace_back(block.data(), block.size());
    }
    if (!open.blocks.empty()) refuse_nodes_sharing_a_machine(nodes);
    for (unsigned n = 1; n <= nodes.size(); ++n)
        nodes_.push_back(std::make_unique<RemoteNode>(coordinator, wiring, blocks_, id_, n));
    const std::vector<unsigned> workers = coordinator.open(open, std::move(replicated), *this);
    for (unsigned n = 1; n <= nodes.size(); ++n)
        nodes_[n - 1]->opened(workers[n - 1]);
}

RemotePool::~RemotePool() {
    close();
}

// Each chunk to the node with the most room in its window; of a job's last chunk, each node
// with room takes one share (this machine counting as one when it runs work too).
bool RemotePool::dispatch(const detail::SlotsLocked& locked, detail::JobQueue& queue) {
    bool any = false;
    std::vector<bool> took_a_share(nodes_.size(), false);
    const unsigned here = wiring_.options.cluster.use_this_node ? 1 : 0;
    for (;;) {
        const std::size_t next = queue.front_size();
        if (next == 0) break;
        std::size_t best = nodes_.size();
        double most_room = 0;
        unsigned parts = here;
        for (std::size_t n = 0; n < nodes_.size(); ++n) {
            const std::size_t room = nodes_[n]->room(next);
            if (room == 0 || took_a_share[n]) continue;
            ++parts;
            const double share =
                static_cast<double>(room) / static_cast<double>(nodes_[n]->window(next));
            if (share > most_room) {
                most_room = share;
                best = n;
            }
        }
        if (best == nodes_.size()) break;
        bool shared = false;
        std::optional<detail::Chunk> chunk = queue.take_sharing_the_last(parts, shared);
        if (!chunk) break;
        took_a_share[best] = shared;
        nodes_[best]->send(locked, queue, std::move(*chunk));
        any = true;
    }
    return any;
}

bool RemotePool::harvest(const detail::SlotsLocked& locked, detail::JobQueue& queue) {
    bool any = false;
    for (auto& n : nodes_)
        any = n->harvest(locked, queue) || any;
    return any;
}

bool RemotePool::has_finished() const noexcept {
    return std::any_of(nodes_.begin(), nodes_.end(),
                       [](const auto& n) { return n->has_finished(); });
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
