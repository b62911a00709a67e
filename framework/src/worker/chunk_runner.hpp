// The worker's side of a chunk: decode the request, run the task on each item, write the
// results, publish the chunk as done.
#pragma once

#include <cstdint>
#include <string>
#include <typeinfo>

#include "protocol/slot.hpp"

namespace shmpool::detail {

/// The demangled name of an exception's type, for error payloads.
std::string type_name_of(const std::type_info& type);
/// The exception being handled, as an error payload (call it in a catch block).
std::string current_error_payload();

/// Runs the chunk the worker just claimed, then publishes it (results, errors, busy time).
/// `timeouts`: stamp each item's start; `started_ns`: when the chunk started (0 if unmeasured).
void run_chunk(WorkerSlot& slot, bool timeouts, std::uint64_t started_ns);

}  // namespace shmpool::detail
