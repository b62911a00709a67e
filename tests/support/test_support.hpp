// Shared helpers of the test suite: unique block names, running child processes with a timeout,
// and the check that no test leaves a block in /dev/shm.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace shmpool::test {

/// A block name unique to this process and call: "shmpool_test_<pid>_<n>".
std::string unique_name();
/// The prefix every unique_name() of this process starts with.
std::string name_prefix();

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

/// Paths handed down by CMake.
std::string cli_path();     ///< build/bin/shmpool
std::string helper_path();  ///< build/bin/shm_child
std::string python_path();  ///< the CPython used for interop
std::string source_dir();   ///< the project's source tree

/// Removes trailing newlines.
std::string chomp(std::string s);

}  // namespace shmpool::test
