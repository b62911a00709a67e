// RemotePool: a pool's other nodes, seen from rank 0. It is one ChunkExecutor of the pool's
// supervisor: each chunk goes to the node with the most room in its window (about twice its
// workers), the last chunk of a job shared out among the nodes with room; results come back
// through the pool's router, so that maps, futures, imap windows, progress and statistics work
// as on one machine. A RemoteNode is one node's chunks in flight and results in.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coordinator.hpp"
#include "messages.hpp"
#include "parent/cluster_hook.hpp"
#include "pipeline/arena.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::cluster {

/// Rank 0's own mappings of what a pool's chunks read and write here: its shared blocks (for
/// write-backs) and, for a pipeline's stage, the arena. Owned by the pool: unmapped with it.
struct PoolBlocks {
    std::map<std::string, SharedMemory> blocks;  // by name, without the leading slash
    std::optional<SharedMemory> arena_block;
    std::optional<detail::ArenaView> arena;
};

class RemoteNode {
  public:
    RemoteNode(Coordinator& coordinator, const detail::PoolWiring& wiring, PoolBlocks& blocks,
               std::uint32_t pool, unsigned node);
    /// Once the node opened the pool, before any work: its workers, and so its window.
    void opened(unsigned workers) noexcept;

    /// Chunks it may take now, the next being of `next_size` items (one-item chunks get a wider
    /// window: they are all latency).
    std::size_t room(std::size_t next_size) const noexcept;
    std::size_t window(std::size_t next_size) const noexcept;
    /// Sends `chunk` to the node; a chunk that cannot be sent fails here, item by item.
    void send(const detail::SlotsLocked& locked, detail::JobQueue& queue, detail::Chunk chunk);
    bool harvest(const detail::SlotsLocked& locked, detail::JobQueue& queue);
    bool has_finished() const noexcept { return has_results_.load(); }

    unsigned workers() const noexcept { return workers_; }
    PoolStats stats() const;
    void kill_cancelled(const detail::SlotsLocked& locked);
    void terminate(const detail::SlotsLocked& locked);
    /// Communication thread: a chunk's result, or the pool's last statistics.
    void receive(ChunkResult&& result);
    void closed(const PoolStats& stats);

  private:
    ChunkRequest request_for(const detail::Chunk& chunk);
    void deliver(const detail::SlotsLocked& locked, detail::JobQueue& queue, ChunkResult& r);
    std::exception_ptr to_exception(const RemoteError& e, const detail::Chunk& chunk,
                                    std::uint32_t position) const;

    Coordinator& coordinator_;
    detail::PoolWiring wiring_;  // references to the pool's parts, which outlive this
    PoolBlocks& blocks_;
    std::uint32_t pool_;
    unsigned node_;
    unsigned workers_ = 0;
    // Under the slot lock.
    std::map<std::uint64_t, detail::Chunk> in_flight_;
    std::set<std::uint64_t> cancels_sent_;
    std::uint64_t next_chunk_ = 1;
    // From the communication thread.
    mutable std::mutex mutex_;  // a leaf
    std::vector<ChunkResult> inbox_;
    std::atomic<bool> has_results_{false};
    PoolStats stats_;
};

class RemotePool final : public detail::RemoteNodes, public detail::ChunkExecutor {
  public:
    /// Opens the pool on every node (blocks until they all did; throws what one failed with).
    RemotePool(Coordinator& coordinator, const detail::PoolWiring& wiring);
    ~RemotePool() override;

    // RemoteNodes
    std::vector<detail::ChunkExecutor*> executors() override { return {this}; }
    unsigned nodes() const noexcept override { return static_cast<unsigned>(nodes_.size()); }
    unsigned workers() const override;
    std::vector<PoolStats> stats() const override;
    void kill_cancelled(const detail::SlotsLocked& locked) override;
    void terminate(const detail::SlotsLocked& locked) override;
    void close() noexcept override;

    // ChunkExecutor
    bool dispatch(const detail::SlotsLocked& locked, detail::JobQueue& queue) override;
    bool harvest(const detail::SlotsLocked& locked, detail::JobQueue& queue) override;
    bool has_finished() const noexcept override;

    /// Communication thread.
    void on_result(unsigned node, ChunkResult&& result);
    void on_event(unsigned node, WorkerEvent event);
    void on_closed(unsigned node, const PoolStats& stats);

  private:
    Coordinator& coordinator_;
    detail::PoolWiring wiring_;  // references to the pool's parts, which outlive this
    std::uint32_t id_;
    PoolBlocks blocks_;
    std::vector<std::unique_ptr<RemoteNode>> nodes_;  // node n at n - 1
    bool terminated_ = false;
    bool closed_ = false;
};

}  // namespace shmpool::cluster
