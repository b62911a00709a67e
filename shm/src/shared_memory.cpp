// SharedMemory: create (reserving pages so a full /dev/shm is ENOSPC, not SIGBUS), attach, remove.
#include "shmpool/shm/shared_memory.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <cerrno>
#include <limits>
#include <stdexcept>

#include "internal.hpp"
#include "posix/sys.hpp"

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

}  // namespace

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
        size_block(fd.get(), bare, size, options.reserve);
        detail::Mapping mapping = map_block(fd.get(), bare, size, true);
        return SharedMemory(std::move(bare), std::move(mapping), false, options.track);
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
    return SharedMemory(std::move(bare), std::move(mapping), !writable, false);
}

void SharedMemory::remove(std::string_view name) {
    std::string path = detail::os_name(name);
    if (sys::shm_unlink(path.c_str()) != 0) {
        detail::throw_errno(errno, fmt::format("shm_unlink('{}') failed", path.substr(1)));
    }
}

}  // namespace shmpool
