// The shmpool CLI's subcommands, each a thin layer over the shm library's public API.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace shmpool::cli {

/// A failure to report as `shmpool: error: <what>` with exit status 1.
class CommandError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct NewListOptions {
    std::string name;
    bool guarded = false;
    bool own = false;  ///< stay alive as the tracked owner until stdin closes or a signal
};

void new_list(const std::string& json_text, const NewListOptions& options);
void show(const std::string& name, bool as_json, double lock_timeout);
void set(const std::string& name, const std::string& index_text, const std::string& json_text,
         double lock_timeout);
void rm(const std::vector<std::string>& names);
void ls(bool as_json);
void lock(const std::string& name, double lock_timeout);
void tracker(bool as_json);
void gc(bool dry_run);

/// How `shmpool run` launches a program across machines (docs/cluster.md).
struct RunOptions {
    std::vector<std::string> hosts;        ///< one node per host, rank 0 on the first
    unsigned local = 0;                    ///< instead: this many nodes on this machine
    std::vector<std::string> mpirun_args;  ///< more flags for mpirun
    bool dry_run = false;                  ///< print the command line, run nothing
};
/// The mpirun command line that runs `program` (and its arguments) as a cluster job.
std::vector<std::string> mpirun_command(const RunOptions& options,
                                        const std::vector<std::string>& program);
/// Replaces this process with that mpirun (or prints it); returns only on --dry-run.
void run_job(const RunOptions& options, const std::vector<std::string>& program);

/// Blocks SIGINT and SIGTERM (to be taken by wait_for_release()); call before starting threads.
void block_termination_signals();

}  // namespace shmpool::cli
