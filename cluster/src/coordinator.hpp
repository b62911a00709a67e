// Coordinator: rank 0's side of a job. Its communication thread makes every MPI call of rank 0:
// the start-up handshake (every node must run the same tasks), opening and closing pools on the
// nodes with their shared blocks replicated, chunks out and results in, routed to the pools.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "messages.hpp"
#include "mpi/mpi.hpp"
#include "transport.hpp"

namespace shmpool::cluster {

class RemotePool;

/// What rank 0 knows of another node.
struct NodeInfo {
    std::string host;
    std::string shm_identity;
    bool shares_shm = false;  // the same /dev/shm as rank 0: blocks are shared already
};

class Coordinator {
  public:
    /// Starts MPI on a thread of its own and waits for every node's hello; a node whose tasks
    /// differ from this program's ends the job with a message naming it.
    explicit Coordinator(mpi::Launch launch);
    ~Coordinator();
    Coordinator(const Coordinator&) = delete;
    Coordinator& operator=(const Coordinator&) = delete;

    /// The other nodes, by node number - 1 (node n is rank n).
    const std::vector<NodeInfo>& nodes() const noexcept { return nodes_; }
    std::uint32_t new_pool_id() noexcept { return next_pool_.fetch_add(1); }

    /// Opens pool `open.pool` on every node, with `open.blocks` replicated where needed, and
    /// routes its results and events to `target` from now on. Returns each node's workers;
    /// throws what a node failed with.
    /// `replicated` holds the bytes of each block to replicate, in the order of open.blocks.
    std::vector<unsigned> open(const OpenPool& open,
                               std::vector<std::pair<const std::byte*, std::size_t>> replicated,
                               RemotePool& target);
    /// Sends `tag` for `pool` to every node and waits (bounded) until each that opened it
    /// closed it.
    void close(std::uint32_t pool, Tag tag) noexcept;
    /// From any thread.
    void send(unsigned node, Tag tag, std::string bytes) {
        transport_.post(static_cast<int>(node), tag, std::move(bytes));
    }
    /// Whether chunks are out (the communication thread polls faster then).
    void note_in_flight(int delta) noexcept { in_flight_.fetch_add(delta); }
    /// The end of the job: the nodes are told, MPI finalised.
    void shut_down() noexcept;

  private:
    enum class Phase : std::uint8_t { opening, open, closing };
    struct Control {  // a pool's opening and closing, under mutex_
        Phase phase = Phase::opening;
        std::vector<bool> answered;  // by node - 1, in the current phase
        std::vector<unsigned> workers;
        unsigned failed_node = 0;  // the first node that could not open the pool, and why
        RemoteError error;
        bool failed = false;
    };
    /// Waits (bounded) until every node answered `pool`'s current phase; the nodes that did not.
    std::vector<unsigned> wait_for_answers(std::unique_lock<std::mutex>& lock, std::uint32_t pool);
    void run(std::promise<void>& started);
    void handshake();
    void route(mpi::Message&& m);

    mpi::Launch launch_;
    std::vector<NodeInfo> nodes_;
    Transport transport_;
    std::atomic<std::uint32_t> next_pool_{1};
    std::atomic<int> in_flight_{0};
    std::atomic<bool> stopping_{false};

    std::mutex mutex_;  // pools_, controls_, pending opens
    std::condition_variable answered_;
    std::map<std::uint32_t, RemotePool*> pools_;
    std::map<std::uint32_t, Control> controls_;
    std::deque<std::function<void()>> tasks_;  // MPI work for the communication thread
    std::thread thread_;
};

}  // namespace shmpool::cluster
