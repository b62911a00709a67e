// NodeSupervisor: the node's loop, its pools, their replicated blocks.
#include "node_supervisor.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "messages.hpp"
#include "node_chunk.hpp"
#include "node_identity.hpp"
#include "posix/sys.hpp"
#include "shmpool/framework/detail/task_entry.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"
#include "transport.hpp"

namespace shmpool::cluster {
namespace {

using namespace std::chrono_literals;

class NodeSupervisor {
  public:
    explicit NodeSupervisor(unsigned node) : node_(node) {}
    bool step();  // one turn of the loop; false once rank 0 ended the job
    void say_hello();
    void end() noexcept;

  private:
    // A block of rank 0 copied here, under its name: shared by this node's pools that name it,
    // removed when the last of them closes.
    struct Replica {
        SharedMemory block;
        unsigned pools = 0;
    };
    struct NodePool {
        std::unique_ptr<Pool> pool;
        std::vector<std::string> replicas;  // the names of those it uses
        std::vector<WritableReplica> writable;
        std::map<std::uint64_t, std::shared_ptr<NodeChunk>> running;
    };
    void handle(mpi::Message&& m);
    void open(const OpenPool& open);
    void run(const ChunkRequest& request);
    void close(std::uint32_t id, bool terminate) noexcept;
    SharedMemory& use_replica(NodePool& np, const BlockSpec& spec);
    void release_replicas(NodePool& np) noexcept;

    unsigned node_;
    std::map<std::string, Replica> replicas_;
    Transport transport_;
    std::map<std::uint32_t, NodePool> pools_;
    std::mutex finished_mutex_;  // a leaf: chunks done, from the pools' threads
    std::vector<std::pair<std::uint32_t, std::uint64_t>> finished_;
    bool shutdown_ = false;
    Backoff backoff_;
};

void NodeSupervisor::say_hello() {
    Hello h;
    h.tasks = detail::task_registry_fingerprint();
    h.shm_identity = shm_identity();
    h.host = host_name();
    transport_.post(0, Tag::hello, encode(h));
}

bool NodeSupervisor::step() {
    bool found = transport_.pump();
    {
        std::lock_guard lock(finished_mutex_);
        for (const auto& [pool, chunk] : finished_) {
            if (auto it = pools_.find(pool); it != pools_.end()) it->second.running.erase(chunk);
        }
        found = found || !finished_.empty();
        finished_.clear();
    }
    while (auto m = transport_.receive()) {
        handle(std::move(*m));
        found = true;
    }
    if (shutdown_) return false;
    bool busy = false;
    for (auto& [id, p] : pools_) {
        if (p.running.empty()) continue;
        busy = true;
        p.running.begin()->second->help();  // any chunk of the pool reaches its slots
    }
    const auto pause = backoff_.next(found, busy);
    if (pause.count() == 0) {
        std::this_thread::yield();
    } else {
        transport_.sleep(pause);
    }
    return true;
}

void NodeSupervisor::handle(mpi::Message&& m) {
    switch (static_cast<Tag>(m.tag)) {
        case Tag::open_pool:
            open(decode<OpenPool>(m.bytes));
            return;
        case Tag::chunk:
            run(decode<ChunkRequest>(m.bytes));
            return;
        case Tag::cancel: {
            const ChunkRef ref = decode<ChunkRef>(m.bytes);
            if (auto p = pools_.find(ref.pool); p != pools_.end()) {
                if (auto c = p->second.running.find(ref.chunk); c != p->second.running.end())
                    c->second->kill();
            }
            return;
        }
        case Tag::close_pool:
            close(decode_pool(m.bytes), false);
            return;
        case Tag::terminate_pool:
            close(decode_pool(m.bytes), true);
            return;
        case Tag::shutdown:
            shutdown_ = true;
            return;
        default:
            return;
    }
}

void NodeSupervisor::open(const OpenPool& open) {
    NodePool& np = pools_[open.pool];
    const bool shared = open.shm_identity == shm_identity();
    std::exception_ptr failure;
    // Every replicated block is broadcast whatever happens here: the broadcast is collective,
    // and a node that skipped one would hang the job.
    for (const BlockSpec& spec : open.blocks) {
        SharedMemory* replica = nullptr;
        if (!shared && !failure) {
            try {
                replica = &use_replica(np, spec);
            } catch (...) {
                failure = std::current_exception();
            }
        }
        if (!spec.replicate) continue;
        if (replica != nullptr) {
            // Its pages faulted in at once, not one by one under the copy (expensive on VMs).
            sys::populate_for_write(replica->data(), spec.size);
            mpi::broadcast(replica->data(), spec.size, 0);
        } else {
            std::vector<std::byte> scratch(spec.size);  // not needed here, but joined
            mpi::broadcast(scratch.data(), spec.size, 0);
        }
    }
    try {
        if (failure) std::rethrow_exception(failure);
        PoolOptions options = open.options;
        options.cluster.mode = ClusterMode::off;  // this node's own pool
        options.environment.push_back(fmt::format("SHMPOOL_NODE={}", node_));
        options.on_worker_exit = [this, id = open.pool](const WorkerEvent& e) {
            transport_.post(0, Tag::worker_event, encode(RemoteEvent{id, e}));
        };
        for (const WritableBlock& w : options.cluster.writable_blocks) {
            const auto r = replicas_.find(w.name.starts_with('/') ? w.name.substr(1) : w.name);
            if (r != replicas_.end())
                np.writable.push_back({w.name, w.element_bytes, &r->second.block});
        }
        np.pool = std::make_unique<Pool>(options);
        transport_.post(0, Tag::pool_ready, encode(PoolReady{open.pool, np.pool->size()}));
    } catch (...) {
        transport_.post(0, Tag::pool_failed,
                        encode(PoolFailed{open.pool, classify(std::current_exception())}));
        release_replicas(np);
        pools_.erase(open.pool);
    }
}

// The replica of `spec` for a pool: created, or the one another open pool of this node uses
// (a snapshot of the block as it was when this pool opened: the broadcast that follows
// refreshes it).
SharedMemory& NodeSupervisor::use_replica(NodePool& np, const BlockSpec& spec) {
    const std::string name = spec.name.starts_with('/') ? spec.name.substr(1) : spec.name;
    auto it = replicas_.find(name);
    if (it == replicas_.end()) {
        it = replicas_.emplace(name, Replica{SharedMemory::create(name, spec.size), 0}).first;
    } else if (it->second.block.size() != spec.size) {
        throw std::invalid_argument(fmt::format(
            "block '{}' of {} bytes is replicated on node {} with {} bytes for another pool", name,
            spec.size, node_, it->second.block.size()));
    }
    ++it->second.pools;
    np.replicas.push_back(name);
    return it->second.block;
}

void NodeSupervisor::release_replicas(NodePool& np) noexcept {
    for (const std::string& name : np.replicas) {
        auto it = replicas_.find(name);
        if (it == replicas_.end() || --it->second.pools > 0) continue;
        try {
            it->second.block.unlink();
        } catch (const std::exception&) {  // gone already
        }
        replicas_.erase(it);
    }
    np.replicas.clear();
}

void NodeSupervisor::run(const ChunkRequest& request) {
    auto p = pools_.find(request.pool);
    if (p == pools_.end()) return;  // the pool failed to open here; rank 0 knows
    NodePool& np = p->second;
    auto sink = std::make_shared<NodeChunk>(transport_, request, *np.pool, np.writable,
                                            [this, id = request.pool](std::uint64_t c) {
                                                std::lock_guard lock(finished_mutex_);
                                                finished_.emplace_back(id, c);
                                            });
    np.running.emplace(request.chunk, sink);
    detail::JobItems items;
    items.in_stride = request.in_stride;
    items.out_stride = request.out_stride;
    items.index_ranges = request.index_ranges;
    try {
        if (request.in_stride != 0) {
            if (request.items.size() != std::size_t{request.count} * request.in_stride)
                throw std::length_error("a packed chunk whose bytes do not match its items");
            items.count = request.count;
            items.args = request.items;
        } else {
            Reader r(request.items.data(), request.items.size());
            items.args.reserve(request.items.size());
            for (std::uint32_t i = 0; i < request.count; ++i) {
                const auto length = r.raw<std::uint64_t>();
                items.args.append(r.view(length), length);
                items.offsets.push_back(items.args.size());
            }
        }
        // Split among this node's workers, as rank 0 splits among the nodes.
        const std::size_t per_worker =
            (request.count + np.pool->size() - 1) / std::max(1u, np.pool->size());
        detail::submit_job(*np.pool, request.task, std::move(items), sink,
                           std::max<std::size_t>(1, per_worker));
    } catch (...) {
        sink->fail_all(classify(std::current_exception()));
    }
}

void NodeSupervisor::close(std::uint32_t id, bool terminate) noexcept {
    PoolStats stats;
    if (auto p = pools_.find(id); p != pools_.end()) {
        NodePool& np = p->second;
        try {
            if (terminate) {
                np.pool->terminate();
            } else {
                np.pool->close();
                np.pool->join();
            }
        } catch (const std::exception& e) {
            fmt::print(stderr, "shmpool node: closing pool {}: {}\n", id, e.what());
        }
        stats = np.pool->stats();
        np.pool.reset();
        release_replicas(np);
        pools_.erase(p);
    }
    transport_.post(0, Tag::pool_closed, encode(ClosedPool{id, stats}));
}

void NodeSupervisor::end() noexcept {
    while (!pools_.empty())
        close(pools_.begin()->first, true);
    transport_.flush(5s);
}

}  // namespace

void run_node(mpi::Launch launch, int argc, char** argv) noexcept {
    int status = 0;
    try {
        sys::set_timer_slack(1000);  // the short polls of the loop must not end 50 µs late
        mpi::initialize(&argc, &argv);
        NodeSupervisor node(static_cast<unsigned>(launch.rank));
        node.say_hello();
        while (node.step()) {
        }
        node.end();
        mpi::finalize();
    } catch (const std::exception& e) {
        // Rank 0 is gone, or MPI failed: nothing here can go on.
        fmt::print(stderr, "shmpool node {}: {}; ending the job\n", launch.rank, e.what());
        std::fflush(stderr);
        mpi::abort_job(1);
    }
    std::exit(status);  // NOLINT(concurrency-mt-unsafe): the node's pools are closed
}

}  // namespace shmpool::cluster
