// Test helpers: child processes via posix_spawn with bounded waits, and the /dev/shm leak check.
#include "test_support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

extern char** environ;

namespace shmpool::test {

std::string name_prefix() {
    return "shmpool_test_" + std::to_string(::getpid()) + "_";
}

std::string unique_name() {
    static std::atomic<int> counter{0};
    return name_prefix() + std::to_string(counter++);
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

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          std::chrono::milliseconds timeout) {
    Pipe in, out, err;
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
    int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawnp " + argv[0]);
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
    }
};

}  // namespace
}  // namespace shmpool::test

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(new shmpool::test::BlockLeakCheck);
    return RUN_ALL_TESTS();
}
