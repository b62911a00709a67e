// Checking a pool's options and building its workers' environment.
#include "parent/pool_setup.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "protocol/control_block.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::detail {

// The options as the pool uses them; std::invalid_argument for what it cannot.
PoolOptions validated(PoolOptions o) {
    if (o.workers == 0) o.workers = std::max(1u, std::thread::hardware_concurrency());
    if (o.slot_bytes < 4096 || o.slot_bytes > (std::size_t{1} << 30))
        throw std::invalid_argument("PoolOptions::slot_bytes must be between 4 KiB and 1 GiB");
    // Slots lie back to back: a whole number of cache lines keeps every slot header aligned.
    o.slot_bytes = (o.slot_bytes + 63) / 64 * 64;
    if (o.max_result_bytes == 0)
        throw std::invalid_argument("PoolOptions::max_result_bytes must be at least 1");
    if (o.idle_spin.count() < 0) throw std::invalid_argument("PoolOptions::idle_spin is negative");
    if (o.max_start_failures == 0)
        throw std::invalid_argument("PoolOptions::max_start_failures must be at least 1");
    if (o.initializer.name.size() >= sizeof(ControlHeader::initializer))
        throw std::invalid_argument("PoolOptions::initializer: the task name is too long");
    for (const auto& var : o.environment) {
        if (var.find('=') == std::string::npos || var.front() == '=')
            throw std::invalid_argument(
                fmt::format("PoolOptions::environment: '{}' is not NAME=value", var));
    }
    for (const auto& name : o.shared_blocks)
        SharedMemory::validate_name(name);
    return o;
}

// What every worker of the pool gets in its environment, then the user's variables.
std::vector<std::string> worker_environment(const PoolOptions& o, const std::string& block) {
    std::string shared;  // '/' cannot appear in a block name
    for (const auto& name : o.shared_blocks) {
        if (!shared.empty()) shared += '/';
        shared += name.starts_with('/') ? name.substr(1) : name;
    }
    std::vector<std::string> env{"SHMPOOL_ROLE=worker", "SHMPOOL_POOL=" + block,
                                 "SHMPOOL_BLOCKS=" + shared};
    env.insert(env.end(), o.environment.begin(), o.environment.end());
    return env;
}

}  // namespace shmpool::detail
