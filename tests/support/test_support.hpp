// Shared helpers of the test suite: unique block names, running child processes with a timeout,
// and the check that no test leaves a block in /dev/shm.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace shmpool::test {

/// A block name unique to this process and call: "shmpool_test_<pid>_<n>".
std::string unique_name();
/// The prefix every unique_name() of this process starts with.
std::string name_prefix();

/// Removes the named blocks when it goes out of scope, whatever a test did before failing.
class Unlinker {
  public:
    Unlinker(std::initializer_list<std::string> names) : names_(names) {}
    Unlinker(const Unlinker&) = delete;
    Unlinker& operator=(const Unlinker&) = delete;
    ~Unlinker();
    void add(const std::string& name) { names_.push_back(name); }

  private:
    std::vector<std::string> names_;
};

/// Polls `condition` (yielding between tries) until it holds or `limit` passes; whether it held.
/// For state another process's death changes asynchronously, where no gate can be placed.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::yield();
    }
    return true;
}

/// Whether /dev/shm/<name> exists.
bool block_exists(const std::string& name);
/// Names of the blocks in /dev/shm.
std::vector<std::string> list_shm_names();

struct ProcessResult {
    int exit_code = -1;      ///< exit status, or -1 if killed by a signal
    int signal = 0;          ///< terminating signal, or 0
    bool timed_out = false;  ///< killed by run_process after the timeout
    std::string out;
    std::string err;
};

/// Runs argv[0] (searched in PATH if it has no slash) with `input` on its stdin, collects both
/// outputs, and kills it (SIGKILL) if it runs longer than `timeout`.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// A running child process with pipes to its stdin, stdout and stderr.
class Child {
  public:
    /// Starts argv (env entries "K=V" are added to, or with "K=" removed from, this environment).
    explicit Child(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();  // kills (SIGKILL) and reaps a child still running

    pid_t pid() const noexcept { return pid_; }
    /// The next line of its stdout (without the newline); nothing on EOF or timeout.
    std::optional<std::string> read_line(
        std::chrono::milliseconds timeout = std::chrono::seconds(10));
    /// Everything left on its stderr until EOF (bounded).
    std::string read_stderr(std::chrono::milliseconds timeout = std::chrono::seconds(10));
    void close_stdin();
    void kill(int signal);
    /// Waits for it to exit; the raw wait status, or nothing on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  private:
    pid_t pid_ = -1;
    int pidfd_ = -1;
    int in_ = -1;
    int out_ = -1;
    int err_ = -1;
    std::string out_buffer_;
    bool reaped_ = false;
};

/// Waits until /dev/shm/<name> is gone (an inotify event, not polling); false on timeout.
bool wait_for_removal(const std::string& name, std::chrono::milliseconds timeout);

/// Waits until process `pid` has exited (pidfd); false on timeout.
bool wait_for_exit(pid_t pid, std::chrono::milliseconds timeout);

/// Points this process and its children at a runtime directory of their own
/// (SHMPOOL_RUNTIME_DIR), so that garbage collection in one test never sweeps up another test's
/// registry entries; removed when the test program ends. Call before any tracked operation.
void use_private_runtime_dir();

/// How long "promptly" may take: 100 ms, more under sanitizers.
std::chrono::milliseconds prompt();

/// The bound on a wait for something that must happen (a dead owner's block removed): a guard
/// against a hang, not a promise of speed. Timings belong in `make bench`, not in tests.
inline constexpr std::chrono::seconds hang_guard{30};

/// Paths handed down by CMake.
std::string cli_path();                  ///< build/bin/shmpool
std::string helper_path();               ///< build/bin/shm_child
std::string python_path();               ///< the CPython used for interop
std::string pool_child_path();           ///< build/bin/pool_child
std::string other_layout_worker_path();  ///< build/bin/other_layout_worker
std::string source_dir();                ///< the project's source tree

/// The gtest Environment that fails the run if a test left a block named by unique_name().
::testing::Environment* make_block_leak_check();

/// Removes trailing newlines.
std::string chomp(std::string s);

}  // namespace shmpool::test
