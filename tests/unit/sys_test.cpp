// The system-call seam (shm/src/posix/sys.hpp) keeps its contract: which calls retry EINTR, which
// return it to the caller who owns a deadline, and that tests can make each one fail.
#include "posix/sys.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "test_support.hpp"

namespace sys = shmpool::sys;
using sys::Call;

namespace {

class SysTest : public ::testing::Test {
  protected:
    void TearDown() override { sys::clear_injected_failures(); }
};

// A listening socket on a path of its own, removed afterwards.
struct Listener {
    std::string path = "/tmp/" + shmpool::test::unique_name() + ".sock";
    sys::FileDescriptor fd{sys::unix_socket(false)};
    sockaddr_un address{};

    Listener() {
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
        EXPECT_EQ(sys::bind(fd.get(), addr(), sizeof address), 0) << std::strerror(errno);
        EXPECT_EQ(sys::listen(fd.get(), 4), 0) << std::strerror(errno);
    }
    ~Listener() { sys::unlink(path.c_str()); }
    const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&address); }
};

// A child that waits on a pipe until it is killed or the pipe closes.
pid_t start_sleeper(sys::FileDescriptor& keep_alive) {
    int fds[2];
    if (sys::pipe(fds) != 0) return -1;
    sys::FileDescriptor read_end(fds[0]);
    keep_alive = sys::FileDescriptor(fds[1]);
    pid_t pid = ::fork();
    if (pid == 0) {
        keep_alive.reset();  // only the parent's copy keeps the child waiting
        char c;
        (void)!sys::read(read_end.get(), &c, 1);
        ::_exit(0);
    }
    return pid;
}

}  // namespace

TEST_F(SysTest, EveryWrapperWithACallFailsAsInjected) {
    int fds[2];
    sys::inject_failure(Call::pipe, EMFILE);
    EXPECT_EQ(sys::pipe(fds), -1);
    EXPECT_EQ(errno, EMFILE);
    sys::inject_failure(Call::eventfd, EMFILE);
    EXPECT_EQ(sys::eventfd(), -1);
    EXPECT_EQ(errno, EMFILE);
    sys::inject_failure(Call::epoll_create, ENFILE);
    EXPECT_EQ(sys::epoll_create(), -1);
    EXPECT_EQ(errno, ENFILE);
    sys::inject_failure(Call::epoll_ctl, ENOMEM, 3);
    EXPECT_EQ(sys::epoll_add(0, 0, EPOLLIN, 0), -1);
    EXPECT_EQ(sys::epoll_modify(0, 0, EPOLLIN, 0), -1);
    EXPECT_EQ(sys::epoll_remove(0, 0), -1);
    EXPECT_EQ(errno, ENOMEM);
    epoll_event event{};
    sys::inject_failure(Call::epoll_wait, EBADF);
    EXPECT_EQ(sys::epoll_wait(0, &event, 1, -1), -1);
    EXPECT_EQ(errno, EBADF);
    sys::inject_failure(Call::pidfd_open, EMFILE);
    EXPECT_EQ(sys::pidfd_open(::getpid()), -1);
    EXPECT_EQ(errno, EMFILE);
    sys::inject_failure(Call::pidfd_send_signal, EPERM);
    EXPECT_EQ(sys::pidfd_send_signal(0, 0), -1);
    EXPECT_EQ(errno, EPERM);
    sys::inject_failure(Call::wait4, ECHILD);
    EXPECT_EQ(sys::wait4(-1, nullptr, nullptr), -1);
    EXPECT_EQ(errno, ECHILD);
    sys::inject_failure(Call::socket, EMFILE);
    EXPECT_EQ(sys::unix_socket(true), -1);
    EXPECT_EQ(errno, EMFILE);
    sys::inject_failure(Call::connect, ECONNREFUSED);
    EXPECT_EQ(sys::connect(0, nullptr, 0), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
    sys::inject_failure(Call::bind, EADDRINUSE);
    EXPECT_EQ(sys::bind(0, nullptr, 0), -1);
    EXPECT_EQ(errno, EADDRINUSE);
    sys::inject_failure(Call::listen, EOPNOTSUPP);
    EXPECT_EQ(sys::listen(0, 1), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    sys::inject_failure(Call::accept, EMFILE);
    EXPECT_EQ(sys::accept(0), -1);
    EXPECT_EQ(errno, EMFILE);
    sys::inject_failure(Call::send, EPIPE);
    EXPECT_EQ(sys::send(0, "x", 1), -1);
    EXPECT_EQ(errno, EPIPE);
    sys::inject_failure(Call::poll, ENOMEM);
    EXPECT_EQ(sys::poll_one(0, POLLIN, 0), -1);
    EXPECT_EQ(errno, ENOMEM);
    std::atomic<std::uint32_t> word{0};
    sys::inject_failure(Call::futex_wait, EINTR);
    EXPECT_EQ(sys::futex_wait(&word, 0, nullptr), -1);
    EXPECT_EQ(errno, EINTR);
    sys::inject_failure(Call::socketpair, EMFILE);
    EXPECT_EQ(sys::seqpacket_pair(fds), -1);
    EXPECT_EQ(errno, EMFILE);
    sys::inject_failure(Call::sendmsg, EPIPE);
    EXPECT_EQ(sys::send_message(0, "x", 1, -1), -1);
    EXPECT_EQ(errno, EPIPE);
    int received = 7;
    char byte = 0;
    sys::inject_failure(Call::recvmsg, ECONNRESET);
    EXPECT_EQ(sys::receive_message(0, &byte, 1, &received), -1);
    EXPECT_EQ(errno, ECONNRESET);
    EXPECT_EQ(received, -1);
    sys::inject_failure(Call::fork, EAGAIN);
    EXPECT_EQ(sys::fork(), -1);
    EXPECT_EQ(errno, EAGAIN);
    pollfd none{-1, POLLIN, 0};
    sys::inject_failure(Call::poll, ENOMEM);
    EXPECT_EQ(sys::poll(&none, 1, 0), -1);
    EXPECT_EQ(errno, ENOMEM);
}

// The fork server's channel: whole messages, a descriptor riding along (and arriving
// close-on-exec), EOF when the peer goes, and a message too long for the buffer refused whole.
TEST_F(SysTest, ASeqpacketPairCarriesWholeMessagesAndDescriptors) {
    int pair[2];
    ASSERT_EQ(sys::seqpacket_pair(pair), 0) << std::strerror(errno);
    sys::FileDescriptor a(pair[0]);
    sys::FileDescriptor b(pair[1]);
    int pipe_fds[2];
    ASSERT_EQ(sys::pipe(pipe_fds), 0);
    sys::FileDescriptor read_end(pipe_fds[0]);
    sys::FileDescriptor write_end(pipe_fds[1]);
    sys::inject_failure(Call::sendmsg, EINTR, 2);  // retried by the seam
    ASSERT_EQ(sys::send_message(a.get(), "hello", 5, write_end.get()), 5);
    ASSERT_EQ(sys::send_message(a.get(), "world!", 6, -1), 6);
    write_end.reset();  // the copy that travelled is the only writer left
    char buffer[16] = {};
    int fd = -1;
    ASSERT_EQ(sys::receive_message(b.get(), buffer, sizeof buffer, &fd), 5);
    EXPECT_EQ(std::string(buffer, 5), "hello");
    ASSERT_GE(fd, 0);
    sys::FileDescriptor travelled(fd);
    EXPECT_EQ(::fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    ASSERT_EQ(sys::write(travelled.get(), "z", 1), 1);
    char z = 0;
    ASSERT_EQ(sys::read(read_end.get(), &z, 1), 1);
    EXPECT_EQ(z, 'z');
    EXPECT_EQ(sys::receive_message(b.get(), buffer, 3, &fd), -1) << "6 bytes into 3";
    EXPECT_EQ(errno, EMSGSIZE);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(sys::receive_message(b.get(), buffer, sizeof buffer, &fd, true), -1);
    EXPECT_EQ(errno, EAGAIN);
    a.reset();
    EXPECT_EQ(sys::receive_message(b.get(), buffer, sizeof buffer, &fd), 0) << "EOF";
    ASSERT_EQ(sys::set_close_on_exec(travelled.get(), false), 0);
    EXPECT_EQ(::fcntl(travelled.get(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST_F(SysTest, AWaitWithoutATimeoutRetriesEintrAndOneWithATimeoutReturnsIt) {
    sys::FileDescriptor epoll(sys::epoll_create());
    sys::FileDescriptor event(sys::eventfd());
    ASSERT_TRUE(epoll.valid() && event.valid());
    ASSERT_EQ(sys::epoll_add(epoll.get(), event.get(), EPOLLIN, 0x1234'5678'9abcULL), 0);
    std::uint64_t one = 1;
    ASSERT_EQ(sys::write(event.get(), &one, sizeof one), 8);
    epoll_event ready{};
    sys::inject_failure(Call::epoll_wait, EINTR, 3);
    ASSERT_EQ(sys::epoll_wait(epoll.get(), &ready, 1, -1), 1);
    EXPECT_EQ(ready.data.u64, 0x1234'5678'9abcULL) << "the tag comes back whole";
    sys::inject_failure(Call::epoll_wait, EINTR);
    EXPECT_EQ(sys::epoll_wait(epoll.get(), &ready, 1, 1000), -1);
    EXPECT_EQ(errno, EINTR);
    sys::inject_failure(Call::poll, EINTR);
    EXPECT_EQ(sys::poll_one(event.get(), POLLIN, -1), -1) << "poll_one never retries";
    EXPECT_EQ(errno, EINTR);
    EXPECT_EQ(sys::poll_one(event.get(), POLLIN, -1), 1);
    ASSERT_EQ(sys::epoll_modify(epoll.get(), event.get(), EPOLLOUT, 7), 0);
    ASSERT_EQ(sys::epoll_remove(epoll.get(), event.get()), 0);
}

TEST_F(SysTest, AFutexWaitReturnsEveryEarlyEndToItsCaller) {
    std::atomic<std::uint32_t> word{1};
    EXPECT_EQ(sys::futex_wait(&word, 0, nullptr), -1);
    EXPECT_EQ(errno, EAGAIN) << "the word had changed";
    timespec no_time{0, 1};
    EXPECT_EQ(sys::futex_wait(&word, 1, &no_time), -1);
    EXPECT_EQ(errno, ETIMEDOUT);
    sys::inject_failure(Call::futex_wait, EINTR);
    EXPECT_EQ(sys::futex_wait(&word, 1, nullptr), -1) << "EINTR is not retried";
    EXPECT_EQ(errno, EINTR);
    EXPECT_EQ(sys::futex_wake(&word, 1), 0) << "nobody was waiting";
}

TEST_F(SysTest, SocketCallsRetryEintr) {
    Listener listener;
    sys::FileDescriptor client(sys::unix_socket(false));
    ASSERT_TRUE(client.valid());
    sys::inject_failure(Call::connect, EINTR, 3);
    ASSERT_EQ(sys::connect(client.get(), listener.addr(), sizeof listener.address), 0)
        << std::strerror(errno);
    sys::inject_failure(Call::accept, EINTR, 2);
    sys::FileDescriptor server(sys::accept(listener.fd.get()));
    ASSERT_TRUE(server.valid()) << std::strerror(errno);
    ucred peer{};
    ASSERT_EQ(sys::peer_credentials(server.get(), &peer), 0);
    EXPECT_EQ(peer.pid, ::getpid());
    EXPECT_EQ(peer.uid, ::geteuid());
    sys::inject_failure(Call::send, EINTR, 2);
    EXPECT_EQ(sys::send(client.get(), "ping", 4), 4);
    char buf[8] = {};
    EXPECT_EQ(sys::read(server.get(), buf, sizeof buf), 4);
    EXPECT_STREQ(buf, "ping");
    client.reset();
    EXPECT_EQ(sys::send(server.get(), "x", 1), -1) << "no SIGPIPE: an error instead";
    EXPECT_EQ(errno, EPIPE);
}

TEST_F(SysTest, AProcessIsSignalledThroughItsPidfdAndReapedDespiteEintr) {
    sys::FileDescriptor keep_alive;
    pid_t pid = start_sleeper(keep_alive);
    ASSERT_GT(pid, 0);
    sys::FileDescriptor pidfd(sys::pidfd_open(pid));
    ASSERT_TRUE(pidfd.valid()) << std::strerror(errno);
    ASSERT_EQ(sys::pidfd_send_signal(pidfd.get(), SIGKILL), 0) << std::strerror(errno);
    int status = 0;
    sys::inject_failure(Call::wait4, EINTR, 2);
    ASSERT_EQ(sys::wait4(pid, &status, nullptr), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

TEST_F(SysTest, ClocksAndPagesAreWhatTheKernelSays) {
    std::uint64_t before = sys::monotonic_ns();
    EXPECT_GE(sys::monotonic_ns(), before);
    EXPECT_GT(sys::realtime_now().tv_sec, 1'600'000'000);  // after 2020
    std::size_t page = sys::page_size();
    EXPECT_GE(page, 4096u);
    EXPECT_EQ(page & (page - 1), 0u);
    EXPECT_EQ(sys::access("/dev/null", F_OK), 0);
    EXPECT_EQ(sys::access("/nonexistent/shmpool", F_OK), -1);
    EXPECT_EQ(errno, ENOENT);
    sys::FileDescriptor devnull(sys::open("/dev/null", O_RDONLY));
    EXPECT_EQ(sys::isatty(devnull.get()), 0);
}
