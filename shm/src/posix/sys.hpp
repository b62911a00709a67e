// The one seam between shmpool (both libraries, shm and framework) and the operating system.
//
// Every call into the kernel that can fail or block goes through here; only trivial ones that
// cannot fail (getpid, getppid, geteuid, _exit) are made directly. The header is internal: it is
// compiled into shmpool_shm once, and shmpool_framework reaches it at build time only.
//
// Each wrapper returns what the system call returns (-1 with errno set on failure; for
// posix_fallocate too, unlike the libc function) and retries EINTR where the call is restartable
// (never close(); a wait with a timeout returns EINTR to its caller, who owns the deadline). Tests
// make the next N calls of one wrapper fail with a chosen errno through inject_failure(), to
// exercise ENOSPC, EMFILE and EINTR paths without filling the machine.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

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
    // Waiting (EINTR is returned to the caller: see futex_wait).
    futex_wait,
    // Processes, descriptors and events (the pool's watcher, the tracker).
    pipe,
    eventfd,
    epoll_create,
    epoll_ctl,
    epoll_wait,
    pidfd_open,
    pidfd_send_signal,
    wait4,
    // Sockets (the tracker's client and server).
    socket,
    connect,
    bind,
    listen,
    accept,
    send,
    poll,
    // The pool's fork server: its socket pair, messages carrying descriptors, and the fork.
    socketpair,
    sendmsg,
    recvmsg,
    fork,
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
/// The same for a mapping that will only be read (MADV_POPULATE_READ).
void populate_for_read(void* address, std::size_t length) noexcept;
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
/// access(path, mode).
int access(const char* path, int mode) noexcept;
/// dup2(from, to), retrying EINTR.
int dup2(int from, int to) noexcept;
/// isatty(fd): 1 or 0.
int isatty(int fd) noexcept;
/// The size of a memory page.
std::size_t page_size() noexcept;

// --- Time and waiting -------------------------------------------------------------------------

/// CLOCK_MONOTONIC in nanoseconds: the clock every process of a machine shares.
std::uint64_t monotonic_ns() noexcept;
/// CLOCK_REALTIME as a timespec (what pthread_mutex_timedlock measures against).
timespec realtime_now() noexcept;
/// futex(FUTEX_WAIT) on a word shared between processes (never FUTEX_PRIVATE_FLAG): sleeps while
/// *word == expected, at most `timeout` (relative; null: no limit). 0 when woken, -1 with errno
/// (EAGAIN: the word had changed; ETIMEDOUT; EINTR, not retried: the caller rechecks the word).
int futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
               const timespec* timeout) noexcept;
/// futex(FUTEX_WAKE): wakes up to `count` waiters; how many it woke.
int futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;
/// A hint in a spin loop that this core is waiting (pause on x86, yield on ARM).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    asm volatile("yield" ::: "memory");
#endif
}

// --- Processes and descriptors ------------------------------------------------------------------

/// pipe2(fds, O_CLOEXEC).
int pipe(int fds[2]) noexcept;
/// eventfd(0, EFD_CLOEXEC).
int eventfd() noexcept;
/// epoll_create1(EPOLL_CLOEXEC).
int epoll_create() noexcept;
/// epoll_ctl(epfd, EPOLL_CTL_ADD / MOD / DEL, fd) with `events` and a 64-bit tag.
int epoll_add(int epfd, int fd, std::uint32_t events, std::uint64_t tag) noexcept;
int epoll_modify(int epfd, int fd, std::uint32_t events, std::uint64_t tag) noexcept;
int epoll_remove(int epfd, int fd) noexcept;
/// epoll_wait; EINTR is returned (-1), not retried, when there is a timeout.
int epoll_wait(int epfd, epoll_event* events, int max_events, int timeout_ms) noexcept;
/// pidfd_send_signal(pidfd, sig): a signal that can never reach a recycled pid.
int pidfd_send_signal(int pidfd, int sig) noexcept;
/// kill(pid, sig), for the rare process without a pidfd.
int kill(pid_t pid, int sig) noexcept;
/// The calling thread's id (gettid), unique across the processes of the machine.
pid_t thread_id() noexcept;
/// The calling process's id (getpid).
pid_t process_id() noexcept;
/// wait4(pid, status, 0, usage), retrying EINTR.
pid_t wait4(pid_t pid, int* status, struct rusage* usage) noexcept;
/// wait4(pid, status, WNOHANG, usage), retrying EINTR: 0 while the child runs.
pid_t try_wait4(pid_t pid, int* status, struct rusage* usage) noexcept;
/// fork(). Only a single-threaded process may call it (the pool's fork server): the child of a
/// multithreaded one inherits locks held by threads it does not have.
pid_t fork() noexcept;
/// In a child between fork and exec: die with `sig` when the parent's thread does
/// (PR_SET_PDEATHSIG), and lead a process group of its own (setpgid(0, 0)).
int set_parent_death_signal(int sig) noexcept;
int set_own_process_group() noexcept;
/// PR_SET_TIMERSLACK for the calling thread: how late a timed sleep may end (the kernel's
/// default, 50 µs, is most of a short poll's interval).
int set_timer_slack(unsigned long nanoseconds) noexcept;
/// setsid(): a session of its own.
pid_t set_own_session() noexcept;
/// sigaction(sig, action, previous).
int sigaction(int sig, const struct sigaction* action, struct sigaction* previous) noexcept;
/// Ignores `sig` in this process (SIG_IGN).
int ignore_signal(int sig) noexcept;
/// Blocks the signals of `set` in the calling thread (pthread_sigmask(SIG_BLOCK)).
int block_signals(const sigset_t& set) noexcept;
/// Unblocks the signals of `set` in the calling thread (pthread_sigmask(SIG_UNBLOCK)).
int unblock_signals(const sigset_t& set) noexcept;
/// signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK).
int signal_fd(const sigset_t& set) noexcept;
/// Sets or clears FD_CLOEXEC on `fd` (fcntl(F_SETFD)): cleared, a descriptor survives exec.
int set_close_on_exec(int fd, bool on) noexcept;

// --- Sockets (the tracker) ----------------------------------------------------------------------

/// socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC [| SOCK_NONBLOCK], 0).
int unix_socket(bool nonblocking) noexcept;
/// connect(), retrying EINTR.
int connect(int fd, const sockaddr* address, socklen_t length) noexcept;
int bind(int fd, const sockaddr* address, socklen_t length) noexcept;
int listen(int fd, int backlog) noexcept;
/// accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK), retrying EINTR.
int accept(int fd) noexcept;
/// The credentials of a connected UNIX socket's peer (SO_PEERCRED).
int peer_credentials(int fd, struct ucred* credentials) noexcept;
/// send(fd, buffer, length, MSG_NOSIGNAL), retrying EINTR.
ssize_t send(int fd, const void* buffer, std::size_t length) noexcept;
/// poll() on one descriptor for `events`, at most timeout_ms; EINTR returned, not retried.
int poll_one(int fd, short events, int timeout_ms) noexcept;
/// poll() on `count` descriptors; EINTR returned, not retried (the caller owns the deadline).
int poll(pollfd* fds, std::size_t count, int timeout_ms) noexcept;

// --- Messages with descriptors (the pool's fork server) -----------------------------------------

/// socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC): two connected ends that keep message
/// boundaries, one message per send.
int seqpacket_pair(int fds[2]) noexcept;
/// sendmsg() of one message, with descriptor `fd` attached (SCM_RIGHTS) unless it is -1;
/// MSG_NOSIGNAL (a closed peer is EPIPE, not SIGPIPE), retrying EINTR.
ssize_t send_message(int socket, const void* buffer, std::size_t length, int fd) noexcept;
/// recvmsg() of one message into `buffer`; the descriptor it carried (close-on-exec) goes to
/// `*fd`, -1 if none (extra ones are closed). 0 when the peer closed its end; -1 with EMSGSIZE
/// for a message longer than `length` (the rest is lost). `nonblocking`: -1 with EAGAIN when
/// nothing is waiting. Retries EINTR.
ssize_t receive_message(int socket, void* buffer, std::size_t length, int* fd,
                        bool nonblocking = false) noexcept;

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
