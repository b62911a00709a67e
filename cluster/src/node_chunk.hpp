// NodeChunk: on a node, where the results of one chunk from rank 0 gather while the node's own
// pool runs it; when every item is settled it becomes one result message (records in a slot's
// format, the failures a record cannot carry, the bytes of writable ranges).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "messages.hpp"
#include "shmpool/framework/detail/result_sink.hpp"
#include "shmpool/framework/pool.hpp"
#include "transport.hpp"

namespace shmpool::cluster {

/// A writable block's replica on this node.
struct WritableReplica {
    std::string name;
    std::size_t element_bytes = 1;
    SharedMemory* block = nullptr;
};

class NodeChunk final : public detail::ResultSink {
  public:
    NodeChunk(Transport& transport, const ChunkRequest& request, const Pool& pool,
              std::vector<WritableReplica> writable, std::function<void(std::uint64_t)> done);

    void set_value(Reader& r, std::size_t index) override;
    void set_error(std::exception_ptr e, std::size_t index) override;
    void set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                    std::size_t first) override;
    void set_packed(const char* results, std::size_t stride, std::size_t n,
                    std::size_t first) override;
    std::size_t submitted_index(std::size_t index) const noexcept override {
        return first_item_ + index;
    }
    bool kill_requested() const noexcept override { return kill_.load(); }
    void bind(const std::shared_ptr<const detail::PoolLink>& link) override { link_ = link; }
    /// Rank 0 asked for a hard cancel of the running item.
    void kill() noexcept;
    /// Harvests the node pool's finished work on the calling thread, if it can at once: the
    /// node's loop does it while chunks run, sparing a wake-up of the pool's supervisor.
    void help() {
        if (link_) detail::help(*link_);
    }
    /// Every item fails with `error` (the node's pool refused the chunk).
    void fail_all(const RemoteError& error);

  private:
    void settled(std::size_t n);
    void send();

    Transport& transport_;
    std::uint32_t pool_id_;
    std::uint64_t chunk_;
    std::uint32_t count_;
    std::uint64_t first_item_;
    bool packed_;
    std::uint32_t out_stride_;
    bool index_ranges_;
    std::string items_;  // the request's items, for the writable ranges
    const Pool& pool_;
    std::vector<WritableReplica> writable_;
    std::function<void(std::uint64_t)> done_;
    std::shared_ptr<const detail::PoolLink> link_;
    std::atomic<bool> kill_{false};

    std::mutex mutex_;                 // a leaf: items settle from the node pool's threads
    std::vector<std::string> values_;  // records: each item's result bytes
    std::string packed_results_;       // packed: count × out_stride
    std::vector<SpecialError> specials_;
    std::atomic<std::size_t> left_;
};

/// What an exception means on rank 0's side.
RemoteError classify(std::exception_ptr error);

}  // namespace shmpool::cluster
