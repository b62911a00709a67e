// RemotePool: a pool's other nodes, seen from rank 0. One RemoteNode per node is a ChunkExecutor
// of the pool's supervisor: it takes chunks from the queue while the node has room (a window of
// about twice its workers), sends them, and delivers the results through the pool's router, so
// that maps, futures, imap windows, progress and statistics work as on one machine.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "coordinator.hpp"
#include "messages.hpp"
#include "parent/cluster_hook.hpp"
#include "pipeline/arena.hpp"

namespace shmpool::cluster {

class RemoteNode final : public detail::ChunkExecutor {
  public:
    RemoteNode(Coordinator& coordinator, const detail::PoolWiring& wiring, std::uint32_t pool,
               unsigned node);
    /// Once the node opened the pool, before any work: its workers, and so its window.
    void opened(unsigned workers) noexcept;

    bool dispatch(const detail::SlotsLocked& locked, detail::JobQueue& queue) override;
    bool harvest(const detail::SlotsLocked& locked, detail::JobQueue& queue) override;
    bool has_finished() const noexcept override { return has_results_.load(); }

    unsigned workers() const noexcept { return workers_; }
    PoolStats stats() const;
    void kill_cancelled(const detail::SlotsLocked& locked);
    void terminate(const detail::SlotsLocked& locked);
    /// Communication thread: a chunk's result, or the pool's last statistics.
    void receive(ChunkResult&& result);
    void closed(const PoolStats& stats);

  private:
    void deliver(const detail::SlotsLocked& locked, detail::JobQueue& queue, ChunkResult& r);
    std::exception_ptr to_exception(const RemoteError& e, const detail::Chunk& chunk,
                                    std::uint32_t position) const;
    const detail::ArenaView& arena();

    Coordinator& coordinator_;
    detail::PoolWiring wiring_;  // references to the pool's parts, which outlive this
    std::uint32_t pool_;
    unsigned node_;
    unsigned workers_ = 0;
    std::size_t window_ = 0;  // chunks out at once
    // Under the slot lock.
    std::map<std::uint64_t, detail::Chunk> in_flight_;
    std::set<std::uint64_t> cancels_sent_;
    std::uint64_t next_chunk_ = 1;
    std::optional<detail::ArenaView> arena_;
    // From the communication thread.
    mutable std::mutex mutex_;  // a leaf
    std::vector<ChunkResult> inbox_;
    std::atomic<bool> has_results_{false};
    PoolStats stats_;
};

class RemotePool final : public detail::RemoteNodes {
  public:
    /// Opens the pool on every node (blocks until they all did; throws what one failed with).
    RemotePool(Coordinator& coordinator, const detail::PoolWiring& wiring);
    ~RemotePool() override;

    std::vector<detail::ChunkExecutor*> executors() override;
    unsigned workers() const override;
    std::vector<PoolStats> stats() const override;
    void kill_cancelled(const detail::SlotsLocked& locked) override;
    void terminate(const detail::SlotsLocked& locked) override;
    void close() noexcept override;

    /// Communication thread.
    void on_result(unsigned node, ChunkResult&& result);
    void on_event(unsigned node, WorkerEvent event);
    void on_closed(unsigned node, const PoolStats& stats);

  private:
    Coordinator& coordinator_;
    detail::PoolWiring wiring_;  // references to the pool's parts, which outlive this
    std::uint32_t id_;
    std::vector<std::unique_ptr<RemoteNode>> nodes_;  // node n at n - 1
    bool terminated_ = false;
    bool closed_ = false;
};

}  // namespace shmpool::cluster
