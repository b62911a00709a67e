// What a Pool is set up from: its options checked and completed, its workers' environment.
#pragma once

#include <string>
#include <vector>

#include "shmpool/framework/pool_options.hpp"

namespace shmpool::detail {

/// The options as the pool uses them (workers counted, slot_bytes rounded up to 64); throws
/// std::invalid_argument for what it cannot use, naming the option.
PoolOptions validated(PoolOptions options);

/// The pool's variables for every worker (its role, the control block, the shared blocks), then
/// the user's PoolOptions::environment.
std::vector<std::string> worker_environment(const PoolOptions& options,
                                            const std::string& control_block);

}  // namespace shmpool::detail
