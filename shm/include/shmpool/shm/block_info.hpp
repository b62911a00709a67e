// Inspection of the blocks in /dev/shm: what `shmpool ls` shows. Reads only; never changes a block.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmpool/shm/robust_mutex.hpp"

namespace shmpool {

/// What the file system says about one shared-memory block.
struct BlockInfo {
    std::string name;  ///< without the leading slash
    std::size_t size = 0;
    unsigned uid = 0;   ///< owning user
    std::string owner;  ///< the user's name, or the uid in decimal if it has none
    unsigned mode = 0;  ///< permission bits, e.g. 0600
    /// The file's inode number: a block unlinked and re-created under the same name has a new one.
    std::uint64_t inode = 0;
    std::chrono::system_clock::time_point modified;
    /// Whether it holds a valid ShareableList layout; empty if it could not be read.
    std::optional<bool> shareable_list;
    /// Whether it holds a SharedHeap of this build's layout; empty if it could not be read.
    std::optional<bool> heap;
    /// The tracked owner's pid and whether it lives; empty for untracked blocks.
    std::optional<pid_t> owner_pid;
    std::optional<bool> owner_alive;
    /// Whether the block carries a lock (CreateOptions::guarded), and the lock's state.
    bool guarded = false;
    std::optional<RobustMutex::State> lock;
};

/// Directory holding POSIX shared memory on this system ("/dev/shm" on Linux).
std::string_view shm_directory() noexcept;

/// All blocks in shm_directory(), sorted by name (POSIX semaphores, "sem.*", are left out).
/// Throws std::system_error if the directory cannot be read.
std::vector<BlockInfo> list_blocks();

/// How much stat_block() reads.
struct StatOptions {
    /// Also read the owner's user name, the block's contents (shareable_list, heap, guarded, lock) and
    /// the registry (owner_pid, owner_alive). False: one stat() call and nothing else (name, size,
    /// uid, mode, modified, inode; owner stays empty), for hot paths such as
    /// SharedArray<T>::cached().
    bool inspect = true;
};

/// The block `name`, or nothing if there is no such block. Throws std::invalid_argument for a
/// bad name, std::system_error for other failures than ENOENT.
std::optional<BlockInfo> stat_block(std::string_view name, const StatOptions& options = {});

}  // namespace shmpool
