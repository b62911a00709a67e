// The one seam between shmpool's shm layer and the operating system.
//
// Each wrapper returns what the system call returns (-1 with errno set on failure; for
// posix_fallocate too, unlike the libc function) and retries EINTR where the call is restartable
// (never close()). Tests make the next N calls of one wrapper fail with a chosen errno through
// inject_failure(), to exercise ENOSPC, EMFILE and EINTR paths without filling the machine.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <cstddef>

namespace shmpool::sys {

enum class Call {
    shm_open,
    shm_unlink,
    fstat,
    ftruncate,
    fallocate,
    fstatvfs,
    mmap,
    getrandom,
    open,
    count
};

/// Makes the next `times` calls of `call` fail with `error` (EINTR failures are retried, so they
/// exercise the retry loop). Not thread-safe against concurrent calls of the same wrapper.
void inject_failure(Call call, int error, int times = 1) noexcept;
/// Clears all pending injected failures.
void clear_injected_failures() noexcept;

int shm_open(const char* name, int flags, mode_t mode) noexcept;
int shm_unlink(const char* name) noexcept;
int fstat(int fd, struct ::stat* st) noexcept;
int stat(const char* path, struct ::stat* st) noexcept;
int ftruncate(int fd, off_t length) noexcept;
int fallocate(int fd, off_t length) noexcept;
int fstatvfs(int fd, struct ::statvfs* st) noexcept;
/// mmap(nullptr, length, prot, MAP_SHARED, fd, 0); nullptr (not MAP_FAILED) on failure.
void* mmap_shared(std::size_t length, int prot, int fd) noexcept;
int munmap(void* address, std::size_t length) noexcept;
/// Pre-faults a writable mapping (MADV_POPULATE_WRITE) so that filling it takes no page faults;
/// a hint only: kernels before 5.14 refuse it and nothing else changes.
void populate_for_write(void* address, std::size_t length) noexcept;
int close(int fd) noexcept;
/// Fills the buffer from the kernel's secure random source; -1 with errno on failure.
int getrandom(void* buffer, std::size_t length) noexcept;

// Files of the registry (always O_CLOEXEC).
int open(const char* path, int flags, mode_t mode = 0) noexcept;
int mkdir(const char* path, mode_t mode) noexcept;
int lstat(const char* path, struct ::stat* st) noexcept;
int unlink(const char* path) noexcept;
/// posix_fallocate(fd, 0, length): grows a file, never shrinks it.
int grow_file(int fd, off_t length) noexcept;
/// flock(fd, LOCK_EX), waiting.
int lock_exclusive(int fd) noexcept;
/// Takes an OFD write lock on the whole file without waiting (held until the description closes).
int ofd_lock(int fd) noexcept;
/// Whether some other open file description holds a lock on the file: 1 yes, 0 no, -1 error.
int ofd_locked(int fd) noexcept;
/// A pidfd for `pid` (Linux 5.3), -1 with errno on failure.
int pidfd_open(pid_t pid) noexcept;
/// Reads/writes, retrying EINTR (partial transfers are returned as is).
ssize_t read(int fd, void* buffer, std::size_t length) noexcept;
ssize_t write(int fd, const void* buffer, std::size_t length) noexcept;

/// Owns one file descriptor; move-only; closes in the destructor.
class FileDescriptor {
  public:
    FileDescriptor() noexcept = default;
    explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
    FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.release()) {}
    FileDescriptor& operator=(FileDescriptor&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = other.release();
        }
        return *this;
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    ~FileDescriptor() { reset(); }

    int get() const noexcept { return fd_; }
    bool valid() const noexcept { return fd_ >= 0; }
    int release() noexcept {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset() noexcept {
        if (fd_ >= 0) sys::close(fd_);
        fd_ = -1;
    }

  private:
    int fd_ = -1;
};

}  // namespace shmpool::sys
