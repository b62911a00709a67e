// Error types of the shm layer, and the mapping from Python's exceptions to them.
//
// Operations that mirror CPython throw standard exceptions:
//   FileNotFoundError, FileExistsError, PermissionError, OSError
//                          -> std::system_error with the errno (std::generic_category())
//   ValueError (bad name, size, value) -> std::invalid_argument
//   ValueError (value does not fit its slot) -> std::length_error
//   IndexError              -> std::out_of_range
// Domain failures that CPython has no name for use shmpool::errc in shmpool::error_category(),
// thrown as shmpool::CorruptedBlock (a std::system_error). Every message names the block.
#pragma once

#include <string>
#include <system_error>

namespace shmpool {

/// Domain error codes of shmpool (category "shmpool").
enum class errc {
    corrupted_block = 1,  ///< a block's contents are not a valid ShareableList layout
    invalid_utf8,         ///< a str item holds bytes that are not UTF-8
};

}  // namespace shmpool

template <>
struct std::is_error_code_enum<shmpool::errc> : std::true_type {};

namespace shmpool {

/// The category of shmpool::errc codes.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

/// A block whose contents cannot be read as what the caller asked for (a ShareableList whose
/// header is out of range, an unknown format or transform code, a str that is not UTF-8).
/// Never thrown for bad arguments; only for bad shared data.
class CorruptedBlock : public std::system_error {
  public:
    CorruptedBlock(errc code, const std::string& what)
        : std::system_error(make_error_code(code), what) {}
};

}  // namespace shmpool
