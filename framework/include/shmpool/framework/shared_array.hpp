// SharedArray<T>: a fixed-size array of trivially copyable T in a SharedMemory block, passed to
// tasks by name (workers attach it once per task, or keep it) and never copied.
//
// Ownership as SharedMemory: move-only, the destructor unmaps, never unlinks; create() makes this
// process the block's tracked owner, so the block is removed if it dies.
#pragma once

#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

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
            throw std::invalid_argument("block '" + shm.name() + "' does not hold a whole number of elements");
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

private:
    explicit SharedArray(SharedMemory shm) : shm_(std::move(shm)) {}
    SharedMemory shm_;
};

}  // namespace shmpool
