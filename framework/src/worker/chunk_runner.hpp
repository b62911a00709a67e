// The worker's side of a chunk: decode the request, run the task on each item, write the
// results, publish the chunk as done.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <typeinfo>

#include "protocol/slot.hpp"

namespace shmpool::detail {

/// The demangled name of an exception's type, for error payloads.
std::string type_name_of(const std::type_info& type);
/// The exception being handled, as an error payload (call it in a catch block).
std::string current_error_payload();

/// What the pool's header tells a worker about running chunks.
struct ChunkRules {
    bool timeouts = false;  // stamp each item's start
    pid_t parent = 0;       // blocks of big results are handed to this process
    std::uint64_t max_result_bytes = 0;
};

/// Runs the chunk the worker just claimed, then publishes it (results, errors, busy time).
/// `started_ns`: when the chunk started (0 if unmeasured).
void run_chunk(WorkerSlot& slot, const ChunkRules& rules, std::uint64_t started_ns);

}  // namespace shmpool::detail
