// detail::GuardTrailer: the lock that a guarded block carries in its last 64 bytes.
//
// Why a trailer and not a companion block: one name, one lifetime. The lock is created, mapped,
// tracked and unlinked with its data, atomically, and nothing can pair a list with the wrong lock.
// CPython ignores bytes past a ShareableList's layout (and a buffer's user just reads fewer
// bytes), so a guarded block stays readable and writable by CPython, without the lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmpool/shm/robust_mutex.hpp"

namespace shmpool::detail {

struct alignas(64) GuardTrailer {
    static constexpr char magic_value[8] = {'S', 'H', 'M', 'P', 'G', 'R', 'D', '1'};
    char magic[8];            // written last: a reader never sees a half-built trailer as one
    std::uint64_t data_size;  // the user's bytes, from the start of the block
    RobustMutex mutex;
    RobustCondition condition;
};
static_assert(sizeof(GuardTrailer) == 64, "the trailer layout is shared between processes");
static_assert(std::is_standard_layout_v<GuardTrailer>,
              "the trailer layout is shared between processes");

constexpr std::size_t guarded_block_size(std::size_t data_size) noexcept {
    return (data_size + 63) / 64 * 64 + sizeof(GuardTrailer);
}

}  // namespace shmpool::detail
