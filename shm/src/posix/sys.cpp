// The system-call seam of shmpool (see sys.hpp): EINTR retries and injected failures.
#include "posix/sys.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

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

// Retries a call that failed with EINTR, for the calls that tests cannot make fail.
template <class F>
auto retry_eintr(F f) noexcept {
    for (;;) {
        auto result = f();
        if (result == static_cast<decltype(f())>(-1) && errno == EINTR) continue;
        return result;
    }
}

int epoll_control(int epfd, int op, int fd, std::uint32_t events, std::uint64_t tag) noexcept {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    return retry(Call::epoll_ctl, [&] { return ::epoll_ctl(epfd, op, fd, &ev); });
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

void populate_for_read(void* address, std::size_t length) noexcept {
#ifdef MADV_POPULATE_READ
    (void)::madvise(address, length, MADV_POPULATE_READ);
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
    return retry(Call::pidfd_open,
                 [&] { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); });
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

int access(const char* path, int mode) noexcept {
    return ::access(path, mode);
}

int dup2(int from, int to) noexcept {
    return retry_eintr([&] { return ::dup2(from, to); });
}

int isatty(int fd) noexcept {
    return ::isatty(fd);
}

std::size_t page_size() noexcept {
    static const std::size_t size = [] {
        long n = ::sysconf(_SC_PAGESIZE);
        return n > 0 ? static_cast<std::size_t>(n) : std::size_t{4096};
    }();
    return size;
}

// --- Time and waiting ---------------------------------------------------------------------------

std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with a valid clock and address
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

timespec realtime_now() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

// Not FUTEX_PRIVATE_FLAG: the waiters and wakers are in different processes.
int futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
               const timespec* timeout) noexcept {
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
                  "the kernel reads the futex word through the atomic's address");
    // EINTR is not retried: the caller rechecks the word (a spurious wake-up), and a retry with
    // the same relative timeout would stretch the caller's deadline.
    if (injected(Call::futex_wait)) return -1;
    return static_cast<int>(::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT,
                                      expected, timeout, nullptr, 0));
}

int futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
    return static_cast<int>(::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE,
                                      count, nullptr, nullptr, 0));
}

// --- Processes and descriptors ------------------------------------------------------------------

int pipe(int fds[2]) noexcept {
    return retry(Call::pipe, [&] { return ::pipe2(fds, O_CLOEXEC); });
}

int eventfd() noexcept {
    return retry(Call::eventfd, [] { return ::eventfd(0, EFD_CLOEXEC); });
}

int epoll_create() noexcept {
    return retry(Call::epoll_create, [] { return ::epoll_create1(EPOLL_CLOEXEC); });
}

int epoll_add(int epfd, int fd, std::uint32_t events, std::uint64_t tag) noexcept {
    return epoll_control(epfd, EPOLL_CTL_ADD, fd, events, tag);
}

int epoll_modify(int epfd, int fd, std::uint32_t events, std::uint64_t tag) noexcept {
    return epoll_control(epfd, EPOLL_CTL_MOD, fd, events, tag);
}

int epoll_remove(int epfd, int fd) noexcept {
    return retry(Call::epoll_ctl, [&] { return ::epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr); });
}

int epoll_wait(int epfd, epoll_event* events, int max_events, int timeout_ms) noexcept {
    for (;;) {
        int n =
            injected(Call::epoll_wait) ? -1 : ::epoll_wait(epfd, events, max_events, timeout_ms);
        // Without a timeout nobody owns a deadline, so an interrupted wait simply goes on.
        if (n < 0 && errno == EINTR && timeout_ms < 0) continue;
        return n;
    }
}

int pidfd_send_signal(int pidfd, int sig) noexcept {
    return retry(Call::pidfd_send_signal, [&] {
        return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
    });
}

int kill(pid_t pid, int sig) noexcept {
    return ::kill(pid, sig);
}

pid_t thread_id() noexcept {
    return ::gettid();
}

pid_t process_id() noexcept {
    return ::getpid();
}

pid_t wait4(pid_t pid, int* status, struct rusage* usage) noexcept {
    return retry(Call::wait4, [&] { return ::wait4(pid, status, 0, usage); });
}

pid_t try_wait4(pid_t pid, int* status, struct rusage* usage) noexcept {
    return retry(Call::wait4, [&] { return ::wait4(pid, status, WNOHANG, usage); });
}

pid_t fork() noexcept {
    if (injected(Call::fork)) return -1;
    return ::fork();
}

int set_parent_death_signal(int sig) noexcept {
    return ::prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(sig), 0UL, 0UL, 0UL);
}

int set_own_process_group() noexcept {
    return ::setpgid(0, 0);
}

int set_timer_slack(unsigned long nanoseconds) noexcept {
    return ::prctl(PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0);
}

pid_t set_own_session() noexcept {
    return ::setsid();
}

int sigaction(int sig, const struct sigaction* action, struct sigaction* previous) noexcept {
    return ::sigaction(sig, action, previous);
}

int ignore_signal(int sig) noexcept {
    struct sigaction action {};
    action.sa_handler = SIG_IGN;
    sigemptyset(&action.sa_mask);
    return ::sigaction(sig, &action, nullptr);
}

int block_signals(const sigset_t& set) noexcept {
    // pthread_sigmask returns the error instead of setting errno.
    int err = ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    if (err == 0) return 0;
    errno = err;
    return -1;
}

int unblock_signals(const sigset_t& set) noexcept {
    int err = ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    if (err == 0) return 0;
    errno = err;
    return -1;
}

int signal_fd(const sigset_t& set) noexcept {
    return ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int set_close_on_exec(int fd, bool on) noexcept {
    return ::fcntl(fd, F_SETFD, on ? FD_CLOEXEC : 0);
}

// --- Sockets ------------------------------------------------------------------------------------

int unix_socket(bool nonblocking) noexcept {
    const int type = SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
    return retry(Call::socket, [&] { return ::socket(AF_UNIX, type, 0); });
}

int connect(int fd, const sockaddr* address, socklen_t length) noexcept {
    bool interrupted = false;
    for (;;) {
        int rc = injected(Call::connect) ? -1 : ::connect(fd, address, length);
        if (rc == 0) return 0;
        if (errno == EINTR) {
            interrupted = true;
            continue;
        }
        // An interrupted connect() may have gone on in the background and completed meanwhile.
        if (interrupted && errno == EISCONN) return 0;
        return rc;
    }
}

int bind(int fd, const sockaddr* address, socklen_t length) noexcept {
    return retry(Call::bind, [&] { return ::bind(fd, address, length); });
}

int listen(int fd, int backlog) noexcept {
    return retry(Call::listen, [&] { return ::listen(fd, backlog); });
}

int accept(int fd) noexcept {
    return retry(Call::accept,
                 [&] { return ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK); });
}

int peer_credentials(int fd, struct ucred* credentials) noexcept {
    socklen_t length = sizeof *credentials;
    return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, credentials, &length);
}

ssize_t send(int fd, const void* buffer, std::size_t length) noexcept {
    return retry(Call::send, [&] { return ::send(fd, buffer, length, MSG_NOSIGNAL); });
}

int poll_one(int fd, short events, int timeout_ms) noexcept {
    if (injected(Call::poll)) return -1;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, timeout_ms);
}

int poll(pollfd* fds, std::size_t count, int timeout_ms) noexcept {
    if (injected(Call::poll)) return -1;
    return ::poll(fds, static_cast<nfds_t>(count), timeout_ms);
}

// --- Messages with descriptors ------------------------------------------------------------------

int seqpacket_pair(int fds[2]) noexcept {
    return retry(Call::socketpair,
                 [&] { return ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds); });
}

ssize_t send_message(int socket, const void* buffer, std::size_t length, int fd) noexcept {
    iovec io{const_cast<void*>(buffer), length};
    msghdr msg{};
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (fd >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    return retry(Call::sendmsg, [&] { return ::sendmsg(socket, &msg, MSG_NOSIGNAL); });
}

ssize_t receive_message(int socket, void* buffer, std::size_t length, int* fd,
                        bool nonblocking) noexcept {
    *fd = -1;
    iovec io{buffer, length};
    msghdr msg{};
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    // Room for a few descriptors: a peer that sends more than one must not leak the rest here.
    alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const int flags = MSG_CMSG_CLOEXEC | (nonblocking ? MSG_DONTWAIT : 0);
    const ssize_t n = retry(Call::recvmsg, [&] { return ::recvmsg(socket, &msg, flags); });
    if (n < 0) return n;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int received = -1;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
            if (*fd < 0) {
                *fd = received;
            } else {
                ::close(received);
            }
        }
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}

}  // namespace shmpool::sys
