// What rank 0 and the nodes of a job say to each other, and the bytes of each message. All ranks
// run the same binary, so the encoding is shmpool's Codec with no versioning beyond the
// protocol number the nodes announce in their hello.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmpool/framework/pool_options.hpp"

namespace shmpool::cluster {

constexpr std::uint32_t protocol_version = 1;

enum class Tag : int {
    hello = 1,       // node -> 0: who it is, once, at start
    open_pool,       // 0 -> node: open a pool (then the replicated blocks, broadcast)
    pool_ready,      // node -> 0
    pool_failed,     // node -> 0
    chunk,           // 0 -> node: run these items
    result,          // node -> 0: what they gave
    cancel,          // 0 -> node: a hard cancel of a chunk's running item
    worker_event,    // node -> 0: a worker of the node's pool left
    close_pool,      // 0 -> node: the pool's work is done
    terminate_pool,  // 0 -> node: stop the pool now
    pool_closed,     // node -> 0: it is gone, with its last statistics
    shutdown,        // 0 -> node: the job ends
};

struct Hello {
    std::uint32_t protocol = protocol_version;
    std::uint64_t tasks = 0;   // the task registry's fingerprint
    std::string shm_identity;  // this node's /dev/shm: boot id, device and inode
    std::string host;
};

struct BlockSpec {
    std::string name;
    std::uint64_t size = 0;
    bool replicate = false;  // its bytes follow the open, broadcast from rank 0
};

struct OpenPool {
    std::uint32_t pool = 0;
    std::string shm_identity;  // rank 0's: a node with the same /dev/shm shares its blocks
    PoolOptions options;       // what travels of it: everything but the callbacks
    std::vector<BlockSpec> blocks;
};

struct PoolReady {
    std::uint32_t pool = 0;
    std::uint32_t workers = 0;
};

/// An item's failure, as it travels from a node.
struct RemoteError {
    enum class Kind : std::uint8_t {
        task_error = 1,
        crashed,
        timeout,
        cancelled,
        closed,
        length_error,  // arguments larger than the node's slot
        other,
    };
    Kind kind = Kind::other;
    std::string task;           // the task (an initializer's, for a pool that could not open)
    std::string type, message;  // task_error: the exception; other: what() of anything else
    std::int32_t pid = 0, signal = 0, exit_code = -1, attempts = 0;  // crashed
    double seconds = 0;                                              // timeout
};

struct PoolFailed {
    std::uint32_t pool = 0;
    RemoteError error;
};

struct ChunkRequest {
    std::uint32_t pool = 0;
    std::uint64_t chunk = 0;
    std::string task;
    std::uint32_t in_stride = 0;  // > 0: packed
    std::uint32_t out_stride = 0;
    std::uint32_t count = 0;
    std::uint64_t first_item = 0;  // the chunk's first item in its job on rank 0
    bool index_ranges = false;     // for_each_index: write ranges back
    std::string items;             // packed: count × in_stride; else per item [u64 length][bytes]
};

/// An item that failed in a way a TaskError record cannot say (a crash, a timeout, ...).
struct SpecialError {
    std::uint32_t position = 0;
    RemoteError error;
};

/// Bytes a node wrote into a writable block, at `offset`.
struct WriteBack {
    std::string block;
    std::uint64_t offset = 0;
    std::string bytes;
};

struct ChunkResult {
    std::uint32_t pool = 0;
    std::uint64_t chunk = 0;
    std::uint32_t count = 0;
    std::string response;  // in a slot's response format (records, or packed results + errors)
    std::vector<SpecialError> specials;
    std::vector<WriteBack> writes;
    PoolStats stats;  // the node's pool, now
};

struct ChunkRef {
    std::uint32_t pool = 0;
    std::uint64_t chunk = 0;
};

struct RemoteEvent {
    std::uint32_t pool = 0;
    WorkerEvent event;
};

// (not shmpool::PoolClosed, the exception)
struct ClosedPool {
    std::uint32_t pool = 0;
    PoolStats stats;
};

/// The bytes of a message: one of the structs above, field by field in declaration order.
template <class M>
std::string encode(const M& m);
/// Throws std::length_error on truncated bytes.
template <class M>
M decode(std::string_view bytes);
std::string encode_pool(std::uint32_t pool);
std::uint32_t decode_pool(std::string_view bytes);

}  // namespace shmpool::cluster
