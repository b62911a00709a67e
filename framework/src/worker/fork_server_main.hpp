// The fork server's side (SHMPOOL_ROLE=fork_server): the loop that forks one worker per request
// of its pool, reaps them and reports how each ended.
#pragma once

#include <optional>

namespace shmpool::detail {

/// Runs the fork server of a pool until the pool closes its socket; returns the server's exit
/// status. In each worker it forks, it returns nothing instead, with the worker's environment and
/// stderr in place: the caller then runs the worker exactly as an exec'd worker would.
/// Throws std::system_error if the server cannot set itself up.
std::optional<int> run_fork_server();

}  // namespace shmpool::detail
