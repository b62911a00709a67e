// The resource tracker and block ownership: who cleans up a tracked block when its owner dies.
//
// Model (docs/ownership.md): a block created with CreateOptions::track (the default) is owned by
// its creating process. When the owner dies, however it dies, its tracker unlinks the blocks it
// still owns, within milliseconds, and reports them once on stderr. Attaching never makes a
// process an owner, so a reader's exit never destroys a block. Ownership can be handed to
// another live process or released (the block then lives on untracked). A block created with
// CreateOptions::shared_lifetime lives instead while any of its registered users (the owner, and
// attachers that opt in with AttachOptions::share_lifetime) lives.
//
// The tracker is a helper process (shmpool-tracker) started on the first tracked create, or by
// Tracker::ensure(); children find it through the SHMPOOL_TRACKER environment variable. It is a
// convenience for promptness, not a single point of failure: ownership is recorded in a durable
// registry with kernel-proven liveness, so if the tracker is killed, collect_garbage() (and
// `shmpool gc`, and the next tracker) still finds and removes the blocks of dead owners.
//
// All functions are thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmpool {

/// A block that a cleanup unlinked, with the pid of the process that owned it.
struct CollectedBlock {
    std::string name;
    pid_t owner_pid = 0;
};

/// A tracked block as the registry sees it.
struct TrackedBlock {
    std::string name;
    pid_t owner_pid = 0;  ///< 0 if only users are registered
    bool owner_alive = false;
    bool shared_lifetime = false;
    std::vector<pid_t> users;  ///< live or dead processes registered as users
};

/// A live tracker and what it holds.
struct TrackerStatus {
    pid_t pid = 0;
    std::string socket;
    std::vector<TrackedBlock> blocks;
};

class Tracker {
  public:
    /// Makes sure this process is served by a tracker (the one named by SHMPOOL_TRACKER, or a
    /// new one it starts and names in SHMPOOL_TRACKER for its children); returns its pid.
    /// Launchers call it before starting workers. Throws std::system_error if no tracker can be
    /// started (the message names the executable; SHMPOOL_TRACKER_EXE overrides its path).
    static pid_t ensure();
    /// The pid of this process's tracker, or 0 if it has none (yet).
    static pid_t pid() noexcept;
    /// Asks this process's tracker what it holds. Throws std::system_error if it has none.
    static std::vector<TrackedBlock> blocks();
    /// Every live tracker of this user, and what each holds.
    static std::vector<TrackerStatus> list_all();
};

/// The registry's view of block `name`, if it is tracked.
std::optional<TrackedBlock> tracked_block(std::string_view name);

/// Stops tracking a block this process owns: it lives on untracked until someone unlinks it.
/// Throws std::invalid_argument if this process does not own it.
void release_ownership(std::string_view name);

/// Makes this process the owner of block `name` (taking it from its current owner, if any).
/// Throws std::system_error(ENOENT) if the block does not exist.
void adopt_ownership(std::string_view name);

/// Hands a block this process owns to the live shmpool process `new_owner`.
/// Throws std::invalid_argument if this process does not own it, std::system_error(ESRCH) if no
/// live process with that pid is registered.
void transfer_ownership(std::string_view name, pid_t new_owner);

/// Unlinks the blocks of dead owners whose tracker is dead too (a live tracker cleans up after
/// its own clients), removes their registry entries, and returns what was (or, with dry_run,
/// would be) unlinked.
std::vector<CollectedBlock> collect_garbage(bool dry_run = false);

}  // namespace shmpool
