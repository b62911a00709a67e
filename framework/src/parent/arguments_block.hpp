// ArgumentsBlock: the block of one chunk's arguments too big for its request area, owned by the
// slot table while the chunk is in a slot (docs/design/slot-protocol.md, "Items bigger than the
// areas").
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::detail {

/// Move-only; removes the block (unlink and unmap) when destroyed or assigned over, so that the
/// block goes with the chunk leaving its slot and a retry posts a block of its own.
class ArgumentsBlock {
  public:
    /// Creates a tracked block named after this process and copies `length` bytes into it,
    /// all its pages mapped at once. Throws what SharedMemory::create throws (ENOSPC, ...).
    static ArgumentsBlock create(const char* bytes, std::size_t length);

    ArgumentsBlock(ArgumentsBlock&& other) noexcept = default;
    ArgumentsBlock& operator=(ArgumentsBlock&& other) noexcept {
        if (this != &other) {
            remove();
            block_ = std::move(other.block_);
        }
        return *this;
    }
    ArgumentsBlock(const ArgumentsBlock&) = delete;
    ArgumentsBlock& operator=(const ArgumentsBlock&) = delete;
    ~ArgumentsBlock() { remove(); }

    const std::string& name() const noexcept { return block_.name(); }

  private:
    explicit ArgumentsBlock(SharedMemory block) noexcept : block_(std::move(block)) {}
    void remove() noexcept;
    SharedMemory block_;
};

}  // namespace shmpool::detail
