// SharedMemory: a named POSIX shared-memory block, the C++ counterpart of CPython's
// multiprocessing.shared_memory.SharedMemory.
//
// Ownership and lifetime: a SharedMemory object owns one mapping of the block. It is move-only;
// the destructor (like close()) unmaps but never unlinks: the block lives on in /dev/shm until
// someone calls unlink() or SharedMemory::remove(name), exactly as in CPython. Names are CPython's:
// a block that Python created as SharedMemory(name="abc") is /dev/shm/abc and is attached here
// as "abc".
//
// Threads and processes: the object itself is not synchronised (use one per thread, or guard it);
// the bytes of buf() are shared with every process that attached the block, with no locking.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "shmpool/shm/detail/mapping.hpp"
#include "shmpool/shm/robust_mutex.hpp"

namespace shmpool {

namespace detail {
struct GuardTrailer;
}

/// How a new block is created.
struct CreateOptions {
    /// Register the block with the resource tracker: this process owns it, and if it dies with
    /// the block still registered, the tracker unlinks it (see tracker.hpp).
    bool track = true;
    /// Instead of dying with its owner, the block lives while any registered user lives (the
    /// owner, and attachers with AttachOptions::share_lifetime). Implies track.
    bool shared_lifetime = false;
    /// Reserve the block's pages at creation (posix_fallocate), so that a full /dev/shm is an
    /// ENOSPC error now instead of a SIGBUS on first touch. Turn off for blocks meant to be used
    /// sparsely (the pages are then allocated as they are first written).
    bool reserve = true;
    /// Permission bits of the new block (before the umask), 0600 as in CPython.
    unsigned mode = 0600;
    /// The block carries a RobustMutex and a RobustCondition in a 64-byte trailer after its
    /// data (detail/guard_trailer.hpp); size() and buf() are the data, without the trailer.
    bool guarded = false;
};

/// How an existing block is mapped.
enum class Access { read_write, read_only };

struct AttachOptions {
    Access access = Access::read_write;
    /// Register this process as a user of a block created with CreateOptions::shared_lifetime,
    /// keeping it alive while this process lives. std::invalid_argument for other blocks.
    bool share_lifetime = false;
};

class SharedMemory {
  public:
    /// Longest name accepted, without the leading slash (NAME_MAX of /dev/shm).
    static constexpr std::size_t max_name_length = 255;

    /// An empty object: no block, is_open() is false.
    SharedMemory() noexcept = default;

    /// Creates a new block with a random name (`psm_` + 8 hex digits from the OS's secure random
    /// source, retried on collision) and maps it read-write.
    /// Throws std::invalid_argument if size is 0; std::system_error (ENOSPC with the free space
    /// and a hint, EMFILE, EACCES, ...) if the OS refuses. Nothing is left behind on failure.
    static SharedMemory create(std::size_t size, const CreateOptions& options = {});

    /// Creates a new block named `name` (O_CREAT|O_EXCL). As above, plus std::invalid_argument
    /// for a bad name and std::system_error(EEXIST) if the name is taken.
    static SharedMemory create(std::string_view name, std::size_t size,
                               const CreateOptions& options = {});

    /// Attaches an existing block; its size is taken from the block.
    /// Throws std::invalid_argument for a bad name, std::system_error (ENOENT, EACCES, ...) if it
    /// cannot be opened, and std::system_error(EINVAL) for an empty (size 0) block.
    static SharedMemory attach(std::string_view name, const AttachOptions& options = {});

    /// Removes the block named `name` from /dev/shm (shm_unlink); mappings stay valid until
    /// closed. Throws std::invalid_argument for a bad name, std::system_error (ENOENT, ...).
    static void remove(std::string_view name);

    /// Checks a block name; throws std::invalid_argument naming the problem. A single leading
    /// slash is accepted (and dropped by the other functions).
    static void validate_name(std::string_view name);

    SharedMemory(SharedMemory&& other) noexcept
        : name_(std::move(other.name_)),
          mapping_(std::move(other.mapping_)),
          size_(std::exchange(other.size_, 0)),
          guard_(std::exchange(other.guard_, nullptr)),
          probed_(std::exchange(other.probed_, true)),
          read_only_(other.read_only_),
          tracked_(other.tracked_) {}
    SharedMemory& operator=(SharedMemory&& other) noexcept {
        if (this != &other) {
            name_ = std::move(other.name_);
            mapping_ = std::move(other.mapping_);
            size_ = std::exchange(other.size_, 0);
            guard_ = std::exchange(other.guard_, nullptr);
            probed_ = std::exchange(other.probed_, true);
            read_only_ = other.read_only_;
            tracked_ = other.tracked_;
        }
        return *this;
    }
    SharedMemory(const SharedMemory&) = delete;
    SharedMemory& operator=(const SharedMemory&) = delete;
    ~SharedMemory() = default;

    /// The block's name without the leading slash (kept after close(), as in CPython).
    const std::string& name() const noexcept { return name_; }
    /// Size of the data in bytes (0 once closed): the whole block, or for a guarded block the
    /// part before its lock trailer.
    std::size_t size() const noexcept {
        if (!probed_) probe();
        return size_;
    }
    /// The data (empty once closed).
    std::span<std::byte> buf() const noexcept { return mapping_.bytes().first(size()); }
    std::byte* data() const noexcept { return mapping_.bytes().data(); }
    /// Size of the whole mapping, trailer included.
    std::size_t mapped_size() const noexcept { return mapping_.size(); }

    /// Whether the block carries a lock (created with CreateOptions::guarded).
    bool guarded() const noexcept {
        if (!probed_) probe();
        return guard_ != nullptr;
    }
    /// The block's lock and condition; std::logic_error if it is not guarded.
    RobustMutex& mutex() const;
    RobustCondition& condition() const;
    bool is_open() const noexcept { return mapping_.valid(); }
    bool read_only() const noexcept { return read_only_; }
    /// Whether the block was created with CreateOptions::track.
    bool tracked() const noexcept { return tracked_; }

    /// Maps every page of the block into this process now, in one system call
    /// (MADV_POPULATE_WRITE, or _READ for a read-only mapping), instead of one page fault per
    /// page on first touch: worth it for a block this process will sweep, and costly for one it
    /// touches sparsely (a page never written is then allocated). A hint: kernels before 5.14
    /// ignore it.
    void prefault() const noexcept;

    /// Unmaps the block from this process; idempotent; never unlinks.
    void close() noexcept {
        mapping_.reset();
        size_ = 0;
        guard_ = nullptr;
        probed_ = true;
    }

    /// Removes the block from /dev/shm (see remove()); this object's mapping stays usable.
    void unlink() const { remove(name_); }

  private:
    SharedMemory(std::string name, detail::Mapping mapping, bool read_only, bool tracked,
                 detail::GuardTrailer* guard, bool probed) noexcept;
    // Looks for a lock trailer. Deferred until first needed: reading the block's last page would
    // fault it in, which an attach that never touches the data should not pay for.
    void probe() const noexcept;

    std::string name_;
    detail::Mapping mapping_;
    mutable std::size_t size_ = 0;
    mutable detail::GuardTrailer* guard_ = nullptr;
    mutable bool probed_ = true;
    bool read_only_ = false;
    bool tracked_ = false;
};

}  // namespace shmpool
