// NodeChunk: gathering a chunk's results on a node, and the result message they make.
#include "node_chunk.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <typeinfo>

#include "mpi/mpi.hpp"
#include "shmpool/framework/errors.hpp"

namespace shmpool::cluster {

RemoteError classify(std::exception_ptr error) {
    RemoteError e;
    try {
        std::rethrow_exception(std::move(error));
    } catch (const TaskError& x) {
        e.kind = RemoteError::Kind::task_error;
        e.task = x.task();
        e.type = x.type();
        e.message = x.message();
    } catch (const WorkerCrashed& x) {
        e.kind = RemoteError::Kind::crashed;
        e.pid = x.pid();
        e.signal = x.signal();
        e.exit_code = x.exit_code();
        e.attempts = x.attempts();
    } catch (const TaskTimeout& x) {
        e.kind = RemoteError::Kind::timeout;
        e.seconds = x.seconds();
    } catch (const TaskCancelled&) {
        e.kind = RemoteError::Kind::cancelled;
    } catch (const shmpool::PoolClosed&) {
        e.kind = RemoteError::Kind::closed;
    } catch (const std::length_error& x) {
        e.kind = RemoteError::Kind::length_error;
        e.message = x.what();
    } catch (const std::exception& x) {
        e.message = x.what();
    } catch (...) {
        e.message = "an unknown error";
    }
    return e;
}

NodeChunk::NodeChunk(Transport& transport, const ChunkRequest& request, const Pool& pool,
                     std::vector<WritableReplica> writable, std::function<void(std::uint64_t)> done)
    : transport_(transport),
      pool_id_(request.pool),
      chunk_(request.chunk),
      count_(request.count),
      first_item_(request.first_item),
      packed_(request.in_stride != 0),
      out_stride_(request.out_stride),
      index_ranges_(request.index_ranges),
      pool_(pool),
      writable_(std::move(writable)),
      done_(std::move(done)),
      left_(request.count) {
    if (index_ranges_ && !writable_.empty()) items_ = request.items;
    if (packed_) {
        packed_results_.resize(std::size_t{count_} * out_stride_);
    } else {
        values_.resize(count_);
    }
}

void NodeChunk::set_value(Reader& r, std::size_t index) {
    const std::size_t n = r.left();
    values_[index].assign(r.view(n), n);
    settled(1);
}

void NodeChunk::set_values(const std::pair<const char*, std::uint32_t>* results, std::size_t n,
                           std::size_t first) {
    for (std::size_t k = 0; k < n; ++k)
        values_[first + k].assign(results[k].first, results[k].second);
    settled(n);
}

void NodeChunk::set_packed(const char* results, std::size_t stride, std::size_t n,
                           std::size_t first) {
    if (packed_) {
        std::memcpy(packed_results_.data() + first * out_stride_, results,
                    std::min<std::size_t>(stride, out_stride_) * n);
    } else {
        for (std::size_t k = 0; k < n; ++k)
            values_[first + k].assign(results + k * stride, stride);
    }
    settled(n);
}

void NodeChunk::set_error(std::exception_ptr e, std::size_t index) {
    {
        std::lock_guard lock(mutex_);
        specials_.push_back({static_cast<std::uint32_t>(index), classify(std::move(e))});
    }
    settled(1);
}

void NodeChunk::fail_all(const RemoteError& error) {
    {
        std::lock_guard lock(mutex_);
        for (std::uint32_t i = 0; i < count_; ++i)
            specials_.push_back({i, error});
    }
    settled(count_);
}

void NodeChunk::kill() noexcept {
    kill_.store(true);
    if (link_) detail::wake(*link_);  // the node pool's supervisor kills the worker
}

void NodeChunk::settled(std::size_t n) {
    if (left_.fetch_sub(n) == n) send();
}

// Every item is settled: one message back to rank 0.
void NodeChunk::send() {
    ChunkResult r;
    r.pool = pool_id_;
    r.chunk = chunk_;
    r.count = count_;
    {
        std::lock_guard lock(mutex_);
        r.specials = std::move(specials_);
    }
    std::vector<bool> failed(count_, false);
    for (const SpecialError& s : r.specials)
        if (s.position < count_) failed[s.position] = true;
    if (packed_) {
        r.response = std::move(packed_results_);  // no error records: failures are specials
    } else {
        // A slot's record format; a failed item's record is a placeholder, never read.
        for (std::uint32_t i = 0; i < count_; ++i) {
            const std::string& v = failed[i] ? std::string() : values_[i];
            r.response += static_cast<char>(failed[i] ? 1 : 0);
            const auto length = static_cast<std::uint32_t>(v.size());
            r.response.append(reinterpret_cast<const char*>(&length), 4);
            r.response += v;
        }
    }
    // Writable ranges of the items that ran: each item's last two arguments are its range.
    if (!items_.empty()) {
        Reader items(items_.data(), items_.size());
        for (std::uint32_t i = 0; i < count_; ++i) {
            const auto length = items.raw<std::uint64_t>();
            const char* args = items.view(length);
            if (failed[i] || length < 16) continue;
            std::uint64_t begin = 0, end = 0;
            std::memcpy(&begin, args + length - 16, 8);
            std::memcpy(&end, args + length - 8, 8);
            for (const WritableReplica& w : writable_) {
                const std::uint64_t from = begin * w.element_bytes;
                const std::uint64_t to =
                    std::min<std::uint64_t>(end * w.element_bytes, w.block->size());
                if (from >= to) continue;
                r.writes.push_back(
                    {w.name, from,
                     std::string(reinterpret_cast<const char*>(w.block->data()) + from,
                                 to - from)});
            }
        }
    }
    r.stats = pool_.stats();
    std::size_t bytes = r.response.size() + 64 * r.specials.size();
    for (const WriteBack& w : r.writes)
        bytes += w.block.size() + w.bytes.size() + 16;
    if (bytes > mpi::max_message - 4096) {
        // One message cannot carry it: every item fails, as an argument too big for a slot does.
        RemoteError e;
        e.kind = RemoteError::Kind::length_error;
        e.message = fmt::format(
            "the results of a chunk of {} items came to {} bytes, more than "
            "one cluster message carries ({} bytes)",
            count_, bytes, mpi::max_message);
        r.response.clear();
        r.writes.clear();
        r.specials.clear();
        for (std::uint32_t i = 0; i < count_; ++i)
            r.specials.push_back({i, e});
    }
    transport_.post(0, Tag::result, encode(r));
    done_(chunk_);
}

}  // namespace shmpool::cluster
