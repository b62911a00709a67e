// ArgumentsBlock: creating, filling and removing the block of a chunk's big arguments.
#include "parent/arguments_block.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace shmpool::detail {

ArgumentsBlock ArgumentsBlock::create(const char* bytes, std::size_t length) {
    static std::atomic<unsigned> counter{0};
    // The pool's pid in the name: its blocks are told from other pools' (tests count them).
    ArgumentsBlock owned(SharedMemory::create(
        fmt::format("shmpool_a_{}_{}", ::getpid(), counter.fetch_add(1)), length));
    owned.block_.prefault();  // one call instead of a page fault per page of the copy
    std::memcpy(owned.block_.data(), bytes, length);
    return owned;
}

void ArgumentsBlock::remove() noexcept {
    if (!block_.is_open()) return;
    try {
        block_.unlink();
    } catch (...) {  // gone already: nothing to leak
    }
    block_.close();
}

}  // namespace shmpool::detail
