// SharedArray<T>: a fixed-size array of trivially copyable T in a SharedMemory block, passed to
// tasks by name (workers attach it once per task, or keep it) and never copied.
//
// Ownership as SharedMemory: move-only, the destructor unmaps, never unlinks; create() makes this
// process the block's tracked owner, so the block is removed if it dies.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "shmpool/shm/block_info.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool {

template <class T>
class SharedArray {
    static_assert(std::is_trivially_copyable_v<T>, "SharedArray holds trivially copyable types");

  public:
    SharedArray() = default;

    /// A new zero-filled array of `n` elements (n > 0); throws what SharedMemory::create throws.
    static SharedArray create(std::size_t n, const CreateOptions& options = {}) {
        if (n == 0) throw std::invalid_argument("SharedArray needs at least one element");
        return SharedArray(SharedMemory::create(n * sizeof(T), options));
    }
    /// The array in block `name`; std::invalid_argument if its size is not a multiple of sizeof(T).
    static SharedArray attach(std::string_view name, const AttachOptions& options = {}) {
        SharedMemory shm = SharedMemory::attach(name, options);
        if (shm.size() % sizeof(T) != 0) {
            throw std::invalid_argument("block '" + shm.name() +
                                        "' does not hold a whole number of elements");
        }
        return SharedArray(std::move(shm));
    }

    std::size_t size() const noexcept { return shm_.size() / sizeof(T); }
    T* data() const noexcept { return reinterpret_cast<T*>(shm_.data()); }
    std::span<T> span() const noexcept { return {data(), size()}; }
    T& operator[](std::size_t i) const noexcept { return data()[i]; }
    T* begin() const noexcept { return data(); }
    T* end() const noexcept { return data() + size(); }

    const std::string& name() const noexcept { return shm_.name(); }
    SharedMemory& shm() noexcept { return shm_; }
    void unlink() const { shm_.unlink(); }

    /// This process's long-lived attachment of block `name`: attached on first use, then kept,
    /// so a worker maps a big array once instead of once per task (and faults its pages once).
    /// A block unlinked and re-created under the same name is noticed (by inode) and re-attached.
    /// The reference stays valid until the next call for the same name finds a new block.
    static SharedArray& cached(std::string_view name) {
        static std::mutex mutex;
        static std::map<std::string, std::pair<std::uint64_t, SharedArray>, std::less<>> cache;
        std::uint64_t inode = block_inode(name);
        std::lock_guard lock(mutex);
        auto it = cache.find(name);
        if (it == cache.end() || it->second.first != inode) {
            it = cache.insert_or_assign(std::string(name), std::make_pair(inode, attach(name)))
                     .first;
        }
        return it->second.second;
    }

  private:
    // 0 if there is no such block (attach() then says why); one stat(), through the shm layer.
    static std::uint64_t block_inode(std::string_view name) {
        std::optional<BlockInfo> info = stat_block(name, {.inspect = false});
        return info ? info->inode : 0;
    }

    explicit SharedArray(SharedMemory shm) : shm_(std::move(shm)) {}
    SharedMemory shm_;
};

}  // namespace shmpool
