// SharedMemory: create (reserving pages so a full /dev/shm is ENOSPC, not SIGBUS), attach, remove.
#include "shmpool/shm/shared_memory.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include "internal.hpp"
#include "posix/sys.hpp"
#include "registry.hpp"
#include "shmpool/shm/detail/guard_trailer.hpp"

namespace shmpool {
namespace {

// Below this size the free-space preflight is skipped: posix_fallocate reports ENOSPC itself,
// and a statvfs per small block would cost as much as the rest of create().
constexpr std::size_t preflight_threshold = std::size_t{1} << 20;

std::string human_bytes(unsigned long long n) {
    static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

[[noreturn]] void throw_no_space(int fd, const std::string& name, std::size_t size) {
    struct ::statvfs st {};
    std::string free_text = "unknown";
    if (sys::fstatvfs(fd, &st) == 0) {
        free_text = human_bytes(static_cast<unsigned long long>(st.f_bavail) * st.f_frsize);
    }
    detail::throw_errno(
        ENOSPC, fmt::format("cannot create shared memory block '{}' of {} ({} bytes): /dev/shm has "
                            "{} free; free space there, or enlarge it (docker run --shm-size=..., "
                            "or mount -o remount,size=... /dev/shm)",
                            name, human_bytes(size), size, free_text));
}

// Sizes the new block; on failure the caller unlinks it.
void size_block(int fd, const std::string& name, std::size_t size, bool reserve) {
    if (!reserve) {
        if (sys::ftruncate(fd, static_cast<off_t>(size)) != 0) {
            if (errno == ENOSPC || errno == EFBIG) throw_no_space(fd, name, size);
            detail::throw_errno(errno, fmt::format("ftruncate('{}', {}) failed", name, size));
        }
        return;
    }
    if (size >= preflight_threshold) {
        // Checking first keeps a request larger than what is free from allocating (and then
        // releasing) all of the free memory before it fails.
        struct ::statvfs st {};
        if (sys::fstatvfs(fd, &st) == 0 &&
            static_cast<unsigned long long>(st.f_bavail) * st.f_frsize < size) {
            throw_no_space(fd, name, size);
        }
    }
    if (sys::fallocate(fd, static_cast<off_t>(size)) != 0) {
        if (errno == ENOSPC || errno == EFBIG) throw_no_space(fd, name, size);
        detail::throw_errno(errno, fmt::format("posix_fallocate('{}', {}) failed", name, size));
    }
}

detail::Mapping map_block(int fd, const std::string& name, std::size_t size, bool writable) {
    int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    void* p = sys::mmap_shared(size, prot, fd);
    if (p == nullptr) {
        detail::throw_errno(errno, fmt::format("mmap('{}', {} bytes) failed", name, size));
    }
    return {p, size};
}

// Records this process as the block's owner in the registry (starting the tracker if needed).
void register_owner(int fd, const std::string& name, bool shared_lifetime) {
    struct ::stat st {};
    if (sys::fstat(fd, &st) != 0)
        detail::throw_errno(errno, fmt::format("fstat('{}') failed", name));
    detail::tracked_node().add(name, static_cast<std::uint64_t>(st.st_dev),
                               static_cast<std::uint64_t>(st.st_ino), detail::EntryKind::owner,
                               shared_lifetime ? detail::entry_refcounted : 0);
}

// Records this process as a user of a shared-lifetime block (under the registry lock, so that a
// cleanup cannot decide the block has no users while we join).
void register_user(int fd, const std::string& name) {
    struct ::stat st {};
    if (sys::fstat(fd, &st) != 0)
        detail::throw_errno(errno, fmt::format("fstat('{}') failed", name));
    detail::LocalNode& node = detail::tracked_node();
    detail::RegistryLock lock;
    bool shared = false;
    for (const auto& n : detail::read_nodes()) {
        for (const auto& e : n.entries) {
            shared |=
                e.name == name && e.ino == static_cast<std::uint64_t>(st.st_ino) && e.refcounted;
        }
    }
    if (!shared) {
        throw std::invalid_argument(fmt::format(
            "block '{}' was not created with shared_lifetime: it cannot be shared", name));
    }
    node.add(name, static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
             detail::EntryKind::user, detail::entry_refcounted);
}

// The block's lock trailer, if it carries a valid one.
detail::GuardTrailer* find_trailer(std::span<std::byte> block) noexcept {
    constexpr std::size_t t = sizeof(detail::GuardTrailer);
    if (block.size() < t || block.size() % 64 != 0) return nullptr;
    auto* trailer = reinterpret_cast<detail::GuardTrailer*>(block.data() + block.size() - t);
    if (std::memcmp(trailer->magic, detail::GuardTrailer::magic_value, 8) != 0) return nullptr;
    std::uint64_t data = trailer->data_size;
    if (data > block.size() - t || detail::guarded_block_size(data) != block.size()) return nullptr;
    return trailer;
}

}  // namespace

SharedMemory::SharedMemory(std::string name, detail::Mapping mapping, bool read_only, bool tracked,
                           detail::GuardTrailer* guard, bool probed) noexcept
    : name_(std::move(name)),
      mapping_(std::move(mapping)),
      size_(guard ? static_cast<std::size_t>(guard->data_size) : mapping_.size()),
      guard_(guard),
      probed_(probed),
      read_only_(read_only),
      tracked_(tracked) {
}

void SharedMemory::probe() const noexcept {
    guard_ = find_trailer(mapping_.bytes());
    size_ = guard_ ? static_cast<std::size_t>(guard_->data_size) : mapping_.size();
    probed_ = true;
}

RobustMutex& SharedMemory::mutex() const {
    if (!guarded()) {
        throw std::logic_error(
            fmt::format("shared memory block '{}' carries no lock (create it guarded)", name_));
    }
    return guard_->mutex;
}

RobustCondition& SharedMemory::condition() const {
    mutex();  // the same check
    return guard_->condition;
}

SharedMemory SharedMemory::create(std::size_t size, const CreateOptions& options) {
    // A collision with an existing name is retried with a new one, as CPython does.
    for (;;) {
        try {
            return create(detail::random_block_name(), size, options);
        } catch (const std::system_error& e) {
            if (e.code() != std::errc::file_exists) throw;
        }
    }
}

SharedMemory SharedMemory::create(std::string_view name, std::size_t size,
                                  const CreateOptions& options) {
    std::string path = detail::os_name(name);
    std::string bare = path.substr(1);
    if (size == 0) {
        throw std::invalid_argument(
            fmt::format("cannot create shared memory block '{}': size must be positive", bare));
    }
    if (size > static_cast<std::size_t>(std::numeric_limits<off_t>::max())) {
        throw std::invalid_argument(fmt::format(
            "cannot create shared memory block '{}': size {} is too large", bare, size));
    }
    sys::FileDescriptor fd(
        sys::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, static_cast<mode_t>(options.mode)));
    if (!fd.valid()) {
        detail::throw_errno(errno, fmt::format("shm_open('{}', create) failed", bare));
    }
    try {
        const std::size_t total = options.guarded ? detail::guarded_block_size(size) : size;
        size_block(fd.get(), bare, total, options.reserve);
        detail::Mapping mapping = map_block(fd.get(), bare, total, true);
        detail::GuardTrailer* trailer = nullptr;
        if (options.guarded) {
            std::byte* at = mapping.bytes().data() + total - sizeof(detail::GuardTrailer);
            trailer = new (at) detail::GuardTrailer{{}, size, {}, {}};
            std::atomic_thread_fence(std::memory_order_release);
            std::memcpy(trailer->magic, detail::GuardTrailer::magic_value, 8);
        }
        const bool tracked = options.track || options.shared_lifetime;
        if (tracked) register_owner(fd.get(), bare, options.shared_lifetime);
        return SharedMemory(std::move(bare), std::move(mapping), false, tracked, trailer, true);
    } catch (...) {
        // Nothing half-made is left behind: the new name is removed before the error propagates.
        sys::shm_unlink(path.c_str());
        throw;
    }
}

SharedMemory SharedMemory::attach(std::string_view name, const AttachOptions& options) {
    std::string path = detail::os_name(name);
    std::string bare = path.substr(1);
    bool writable = options.access == Access::read_write;
    sys::FileDescriptor fd(sys::shm_open(path.c_str(), writable ? O_RDWR : O_RDONLY, 0));
    if (!fd.valid()) detail::throw_errno(errno, fmt::format("shm_open('{}') failed", bare));
    struct ::stat st {};
    if (sys::fstat(fd.get(), &st) != 0) {
        detail::throw_errno(errno, fmt::format("fstat('{}') failed", bare));
    }
    if (st.st_size <= 0) {
        detail::throw_errno(
            EINVAL, fmt::format("shared memory block '{}' is empty and cannot be mapped", bare));
    }
    detail::Mapping mapping =
        map_block(fd.get(), bare, static_cast<std::size_t>(st.st_size), writable);
    if (options.share_lifetime) register_user(fd.get(), bare);
    return SharedMemory(std::move(bare), std::move(mapping), !writable, false, nullptr, false);
}

void SharedMemory::prefault() const noexcept {
    if (!is_open()) return;
    if (read_only_) {
        sys::populate_for_read(data(), mapped_size());
    } else {
        sys::populate_for_write(data(), mapped_size());
    }
}

void SharedMemory::remove(std::string_view name) {
    std::string path = detail::os_name(name);
    if (sys::shm_unlink(path.c_str()) != 0) {
        detail::throw_errno(errno, fmt::format("shm_unlink('{}') failed", path.substr(1)));
    }
    // Unlinking ends this process's ownership (or use) of the block.
    if (detail::LocalNode* node = detail::LocalNode::existing()) node->remove(path.substr(1));
}

}  // namespace shmpool
