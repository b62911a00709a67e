// The durable registry of tracked blocks (not installed; see docs/ownership.md).
//
// Every process that owns tracked blocks is a *node*: a file `node.<pid>.<hex>` in the runtime
// directory (/dev/shm/.shmpool-<uid> unless SHMPOOL_RUNTIME_DIR says otherwise), on which the
// process holds an OFD write lock for as long as it lives. The kernel drops that lock when the
// process dies, however it dies, so "is the lock held?" is a proof of life that needs no
// heartbeat and cannot be fooled by PID reuse. The file is a table of (name, device, inode,
// kind) entries that the node writes through a shared mapping: registering a block is a few
// stores, no system call.
//
// Whoever finds a dead node (its tracker, a restarted tracker, `shmpool gc`, any client calling
// collect_garbage()) cleans it up under one flock-ed lock file, by one rule: an entry's block is
// unlinked only if it still is the same inode and no live node lists it (as owner, or as a user
// of a block created with a shared lifetime).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "posix/sys.hpp"
#include "shmpool/shm/detail/mapping.hpp"
#include "shmpool/shm/tracker.hpp"

namespace shmpool::detail {

enum class EntryKind : std::uint32_t { free = 0, claiming = 1, owner = 2, user = 3 };
constexpr std::uint32_t entry_refcounted = 1;

/// The runtime directory, created (0700) and checked (ours, private, not a symlink) on first use.
const std::string& runtime_dir();

/// Holds the registry's global lock (flock on <runtime dir>/registry.lock) while alive.
class RegistryLock {
  public:
    RegistryLock();
    RegistryLock(const RegistryLock&) = delete;
    RegistryLock& operator=(const RegistryLock&) = delete;
    ~RegistryLock();

  private:
    sys::FileDescriptor fd_;
};

/// One entry of some node, as read from its file.
struct NodeEntry {
    std::string name;
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
    EntryKind kind = EntryKind::free;
    bool refcounted = false;
};

/// Another node's file, read (and, under the registry lock, written) by this process.
struct NodeFile {
    std::string path;
    std::string id;  ///< "<pid>.<hex>"
    pid_t pid = 0;
    bool alive = false;    ///< its process holds the lock
    bool tracker = false;  ///< the node is a tracker process
    std::string tracker_id;
    std::vector<NodeEntry> entries;
};

/// Reads every node file of the runtime directory (unreadable or malformed ones are skipped).
std::vector<NodeFile> read_nodes();

/// Whether the node with this id is alive.
bool node_alive(const std::string& id);

/// This process's node; created on first use (and afresh in a child after fork()).
class LocalNode {
  public:
    /// The node, creating it (and connecting to or starting the tracker) if needed. Throws
    /// std::system_error if the runtime directory or the node file cannot be made.
    static LocalNode& get();
    /// The node if this process has one, else nullptr.
    static LocalNode* existing() noexcept;

    const std::string& id() const noexcept { return id_; }
    /// Records an entry; throws std::system_error (ENOMEM, ENOSPC) if the table cannot grow.
    void add(std::string_view name, std::uint64_t dev, std::uint64_t ino, EntryKind kind,
             std::uint32_t flags);
    /// Drops this node's entries for `name`; returns whether there was one.
    bool remove(std::string_view name) noexcept;
    /// Whether this node owns (or uses) `name`.
    bool has(std::string_view name, EntryKind kind) noexcept;
    /// Records which tracker serves this node.
    void set_tracker(std::string_view tracker_id) noexcept;

    /// Makes a node for a tracker process (role tracker, no tracker of its own).
    static LocalNode& get_as_tracker();

    LocalNode(const LocalNode&) = delete;
    LocalNode& operator=(const LocalNode&) = delete;

  private:
    LocalNode(bool tracker);
    friend void adopt_after_fork_child() noexcept;
    void grow();  // needs mutex_

    std::mutex mutex_;
    std::string id_;
    std::string path_;
    sys::FileDescriptor fd_;
    Mapping mapping_;
    std::uint32_t capacity_ = 0;
    std::uint32_t hint_ = 0;  // where the next free entry probably is
    // Own entries by name (a name is usually in one entry): where to clear them on unlink.
    std::unordered_multimap<std::string, std::uint32_t> slots_;
};

/// Adds an entry to another node's table (under the registry lock); grows its file if needed.
void add_to_node(const NodeFile& node, const NodeEntry& entry);
/// Clears `node`'s entries for (name, ino) of the given kind (under the registry lock).
void clear_in_node(const NodeFile& node, std::string_view name, std::uint64_t ino, EntryKind kind);

/// Cleans up a dead node (under the registry lock): unlinks its blocks that no live node keeps,
/// removes its file. With `everything`, unlinks all its blocks whether others keep them or not
/// (the root of a tracker died). Returns what was unlinked; with `dry_run`, what would be, and
/// nothing changes.
std::vector<CollectedBlock> clean_node(const NodeFile& node, const std::vector<NodeFile>& all,
                                       bool everything, bool dry_run = false);

/// Identity of a block in /dev/shm, or {0, 0} if it does not exist.
struct BlockId {
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
    bool exists() const noexcept { return ino != 0; }
};
BlockId block_id(std::string_view name);

/// This process's node, connected to its tracker (tracker_client.cpp).
LocalNode& tracked_node();
void forget_tracker_after_fork() noexcept;

}  // namespace shmpool::detail
