// Helpers shared by the shm layer's implementation files (not installed).
#pragma once

#include <string>
#include <string_view>

namespace shmpool::detail {

/// Throws std::system_error(error, generic_category) with `what` ("shm_open("x") failed" ...).
[[noreturn]] void throw_errno(int error, const std::string& what);

/// A fresh random block name: "psm_" + 8 lowercase hex digits from the kernel's secure source.
std::string random_block_name();

/// The name as passed to shm_open: one leading slash, then the validated name.
std::string os_name(std::string_view name);

/// The name without its optional leading slash, after validation.
std::string_view strip_name(std::string_view name);

}  // namespace shmpool::detail
