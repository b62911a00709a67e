// Test helpers: child processes via posix_spawn with bounded waits, and the /dev/shm leak check.
#include "test_support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <utility>

extern char** environ;

namespace shmpool::test {

std::string name_prefix() {
    return "shmpool_test_" + std::to_string(::getpid()) + "_";
}

std::string unique_name() {
    static std::atomic<int> counter{0};
    return name_prefix() + std::to_string(counter++);
}

Unlinker::~Unlinker() {
    for (const auto& name : names_) {
        std::error_code ec;
        std::filesystem::remove(std::filesystem::path("/dev/shm") / name,
                                ec);  // gone already: fine
    }
}

bool block_exists(const std::string& name) {
    return std::filesystem::exists(std::filesystem::path("/dev/shm") / name);
}

std::vector<std::string> list_shm_names() {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
        names.push_back(e.path().filename().string());
    }
    return names;
}

std::string chomp(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
        s.pop_back();
    return s;
}

std::string cli_path() {
    return SHMPOOL_TEST_CLI;
}
std::string helper_path() {
    return SHMPOOL_TEST_HELPER;
}
std::string python_path() {
    return SHMPOOL_TEST_PYTHON;
}
std::string pool_child_path() {
    return SHMPOOL_TEST_POOL_CHILD;
}
std::string other_layout_worker_path() {
    return SHMPOOL_TEST_OTHER_LAYOUT_WORKER;
}
std::string source_dir() {
    return SHMPOOL_TEST_SOURCE_DIR;
}

namespace {

struct Pipe {
    int fd[2] = {-1, -1};
    Pipe() {
        if (::pipe2(fd, O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "pipe2");
    }
    ~Pipe() {
        for (int f : fd) {
            if (f >= 0) ::close(f);
        }
    }
    void close_end(int i) {
        if (fd[i] >= 0) ::close(fd[i]);
        fd[i] = -1;
    }
};

// Starts argv with the pipes' ends as its stdin, stdout and stderr.
pid_t spawn(const std::vector<std::string>& argv, char** envp, Pipe& in, Pipe& out, Pipe& err) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in.fd[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out.fd[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err.fd[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawnp " + argv[0]);
    return pid;
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          std::chrono::milliseconds timeout) {
    Pipe in, out, err;
    pid_t pid = spawn(argv, environ, in, out, err);
    in.close_end(0);
    out.close_end(1);
    err.close_end(1);

    // Feed stdin (small inputs only), then read both outputs until EOF or the deadline.
    std::size_t written = 0;
    if (input.empty()) in.close_end(1);
    ProcessResult result;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.fd[0] >= 0 || err.fd[0] >= 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            result.timed_out = true;
            break;
        }
        pollfd fds[3] = {{out.fd[0], POLLIN, 0}, {err.fd[0], POLLIN, 0}, {in.fd[1], POLLOUT, 0}};
        int n = ::poll(fds, 3, static_cast<int>(left.count()));
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                char buf[65536];
                ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
                if (got > 0) {
                    (i == 0 ? result.out : result.err).append(buf, static_cast<std::size_t>(got));
                } else if (got == 0 || errno != EINTR) {
                    (i == 0 ? out : err).close_end(0);
                }
            }
        }
        if (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t put = ::write(in.fd[1], input.data() + written, input.size() - written);
            if (put > 0) written += static_cast<std::size_t>(put);
            if (put < 0 || written == input.size()) in.close_end(1);
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
    return result;
}

namespace {

int pidfd_open(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

bool poll_one(int fd, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count())));
        if (n < 0 && errno == EINTR) continue;
        return n > 0;
    }
}

}  // namespace

Child::Child(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    Pipe in, out, err;
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e) {
        std::string entry = *e;
        bool overridden = false;
        for (const auto& o : env)
            overridden |= entry.rfind(o.substr(0, o.find('=') + 1), 0) == 0;
        if (!overridden) envs.push_back(entry);
    }
    for (const auto& o : env) {
        if (o.back() != '=') envs.push_back(o);
    }
    std::vector<char*> envp;
    for (auto& e : envs)
        envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_ = spawn(argv, envp.data(), in, out, err);
    pidfd_ = pidfd_open(pid_);
    in_ = std::exchange(in.fd[1], -1);
    out_ = std::exchange(out.fd[0], -1);
    err_ = std::exchange(err.fd[0], -1);
}

Child::~Child() {
    if (!reaped_) {
        ::kill(pid_, SIGKILL);
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
    for (int fd : {pidfd_, in_, out_, err_}) {
        if (fd >= 0) ::close(fd);
    }
}

std::optional<std::string> Child::read_line(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (auto nl = out_buffer_.find('\n'); nl != std::string::npos) {
            std::string line = out_buffer_.substr(0, nl);
            out_buffer_.erase(0, nl + 1);
            return line;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !poll_one(out_, left)) return std::nullopt;
        char buf[4096];
        ssize_t n = ::read(out_, buf, sizeof buf);
        if (n <= 0) return std::nullopt;
        out_buffer_.append(buf, static_cast<std::size_t>(n));
    }
}

std::string Child::read_stderr(std::chrono::milliseconds timeout) {
    std::string all;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !poll_one(err_, left)) return all;
        char buf[4096];
        ssize_t n = ::read(err_, buf, sizeof buf);
        if (n <= 0) return all;
        all.append(buf, static_cast<std::size_t>(n));
    }
}

void Child::close_stdin() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
}

void Child::kill(int signal) {
    ::kill(pid_, signal);
}

std::optional<int> Child::wait(std::chrono::milliseconds timeout) {
    if (!poll_one(pidfd_, timeout)) return std::nullopt;
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return status;
}

bool wait_for_removal(const std::string& name, std::chrono::milliseconds timeout) {
    int fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "inotify_init1");
    ::inotify_add_watch(fd, "/dev/shm", IN_DELETE);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool gone = !block_exists(name);  // checked after the watch is set: no event can be missed
    while (!gone) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !poll_one(fd, left)) break;
        alignas(inotify_event) char buf[8192];
        ssize_t n = ::read(fd, buf, sizeof buf);
        for (ssize_t off = 0; off < n;) {
            auto* ev = reinterpret_cast<inotify_event*>(buf + off);
            if (ev->len > 0 && name == ev->name) gone = true;
            off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        }
    }
    ::close(fd);
    return gone;
}

bool wait_for_exit(pid_t pid, std::chrono::milliseconds timeout) {
    int fd = pidfd_open(pid);
    if (fd < 0) return errno == ESRCH;
    bool exited = poll_one(fd, timeout);
    ::close(fd);
    return exited;
}

namespace {
std::string private_runtime_dir;
}

void use_private_runtime_dir() {
    private_runtime_dir = "/dev/shm/.shmpool-test-" + std::to_string(::getpid());
    ::setenv("SHMPOOL_RUNTIME_DIR", private_runtime_dir.c_str(), 1);
}

std::chrono::milliseconds prompt() {
#ifdef SHMPOOL_TEST_SANITIZED
    return std::chrono::milliseconds(1000);
#else
    return std::chrono::milliseconds(100);
#endif
}

// Fails the run if this process's tests left a block behind (and removes it so that one failing
// test does not fail the next run too).
class BlockLeakCheck : public ::testing::Environment {
  public:
    void TearDown() override {
        std::string prefix = name_prefix();
        std::vector<std::string> leaked;
        for (const auto& name : list_shm_names()) {
            if (name.rfind(prefix, 0) == 0) leaked.push_back(name);
        }
        for (const auto& name : leaked) {
            ADD_FAILURE() << "test block left in /dev/shm: " << name;
            std::filesystem::remove(std::filesystem::path("/dev/shm") / name);
        }
        if (!private_runtime_dir.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(private_runtime_dir, ec);
        }
    }
};

::testing::Environment* make_block_leak_check() {
    return new BlockLeakCheck;
}

}  // namespace shmpool::test
