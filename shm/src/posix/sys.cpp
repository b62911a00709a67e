// The system-call seam of the shm layer (see sys.hpp): EINTR retries and injected failures.
#include "posix/sys.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace shmpool::sys {
namespace {

struct Injection {
    std::atomic<int> times{0};
    int error = 0;
};
Injection injections[static_cast<int>(Call::count)];
// One relaxed load per call when nothing is injected, which is always outside the tests.
std::atomic<bool> any_injection{false};

bool injected(Call call) noexcept {
    if (!any_injection.load(std::memory_order_relaxed)) return false;
    Injection& inj = injections[static_cast<int>(call)];
    int left = inj.times.load(std::memory_order_relaxed);
    if (left <= 0) return false;
    inj.times.store(left - 1, std::memory_order_relaxed);
    errno = inj.error;
    return true;
}

// Retries a call that failed with EINTR; an injected failure counts as one attempt.
template <class F>
auto retry(Call call, F f) noexcept {
    for (;;) {
        decltype(f()) result;
        if (injected(call)) {
            result = static_cast<decltype(f())>(-1);
        } else {
            result = f();
        }
        if (result == static_cast<decltype(f())>(-1) && errno == EINTR) continue;
        return result;
    }
}

}  // namespace

void inject_failure(Call call, int error, int times) noexcept {
    Injection& inj = injections[static_cast<int>(call)];
    inj.error = error;
    inj.times.store(times, std::memory_order_relaxed);
    any_injection.store(true, std::memory_order_relaxed);
}

void clear_injected_failures() noexcept {
    for (auto& inj : injections)
        inj.times.store(0, std::memory_order_relaxed);
    any_injection.store(false, std::memory_order_relaxed);
}

int shm_open(const char* name, int flags, mode_t mode) noexcept {
    return retry(Call::shm_open, [&] { return ::shm_open(name, flags | O_CLOEXEC, mode); });
}

int shm_unlink(const char* name) noexcept {
    return retry(Call::shm_unlink, [&] { return ::shm_unlink(name); });
}

int fstat(int fd, struct ::stat* st) noexcept {
    return retry(Call::fstat, [&] { return ::fstat(fd, st); });
}

int stat(const char* path, struct ::stat* st) noexcept {
    return retry(Call::fstat, [&] { return ::stat(path, st); });
}

int ftruncate(int fd, off_t length) noexcept {
    return retry(Call::ftruncate, [&] { return ::ftruncate(fd, length); });
}

int fallocate(int fd, off_t length) noexcept {
    return retry(Call::fallocate, [&] {
        // posix_fallocate returns the error instead of setting errno.
        int err = ::posix_fallocate(fd, 0, length);
        if (err == 0) return 0;
        errno = err;
        return -1;
    });
}

int fstatvfs(int fd, struct ::statvfs* st) noexcept {
    return retry(Call::fstatvfs, [&] { return ::fstatvfs(fd, st); });
}

void* mmap_shared(std::size_t length, int prot, int fd) noexcept {
    if (injected(Call::mmap)) return nullptr;
    void* p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
}

int munmap(void* address, std::size_t length) noexcept {
    return ::munmap(address, length);
}

void populate_for_write(void* address, std::size_t length) noexcept {
#ifdef MADV_POPULATE_WRITE
    (void)::madvise(address, length, MADV_POPULATE_WRITE);
#else
    (void)address;
    (void)length;
#endif
}

// Never retried: on Linux the descriptor is released even when close() reports EINTR.
int close(int fd) noexcept {
    return ::close(fd);
}

int getrandom(void* buffer, std::size_t length) noexcept {
    auto* out = static_cast<unsigned char*>(buffer);
    while (length > 0) {
        ssize_t n = retry(Call::getrandom, [&] { return ::getrandom(out, length, 0); });
        if (n < 0) return -1;
        out += n;
        length -= static_cast<std::size_t>(n);
    }
    return 0;
}

int open(const char* path, int flags, mode_t mode) noexcept {
    return retry(Call::open, [&] { return ::open(path, flags | O_CLOEXEC, mode); });
}

int mkdir(const char* path, mode_t mode) noexcept {
    return ::mkdir(path, mode);
}

int lstat(const char* path, struct ::stat* st) noexcept {
    return ::lstat(path, st);
}

int unlink(const char* path) noexcept {
    return ::unlink(path);
}

int grow_file(int fd, off_t length) noexcept {
    int err = 0;
    do {
        err = ::posix_fallocate(fd, 0, length);
    } while (err == EINTR);
    if (err == 0) return 0;
    errno = err;
    return -1;
}

int lock_exclusive(int fd) noexcept {
    int rc = 0;
    do {
        rc = ::flock(fd, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    return rc;
}

int ofd_lock(int fd) noexcept {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return ::fcntl(fd, F_OFD_SETLK, &fl);
}

int ofd_locked(int fd) noexcept {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return -1;
    return fl.l_type == F_UNLCK ? 0 : 1;
}

int pidfd_open(pid_t pid) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

ssize_t read(int fd, void* buffer, std::size_t length) noexcept {
    ssize_t n = 0;
    do {
        n = ::read(fd, buffer, length);
    } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t write(int fd, const void* buffer, std::size_t length) noexcept {
    ssize_t n = 0;
    do {
        n = ::write(fd, buffer, length);
    } while (n < 0 && errno == EINTR);
    return n;
}

}  // namespace shmpool::sys
