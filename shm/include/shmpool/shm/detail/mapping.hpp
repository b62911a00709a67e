// detail::Mapping: the RAII owner of one mmap'ed region (not for direct use).
#pragma once

#include <cstddef>
#include <span>
#include <utility>

namespace shmpool::detail {

/// Owns one shared mapping; move-only; munmap in the destructor.
class Mapping {
  public:
    Mapping() noexcept = default;
    Mapping(void* address, std::size_t size) noexcept : address_(address), size_(size) {}
    Mapping(Mapping&& other) noexcept
        : address_(std::exchange(other.address_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    Mapping& operator=(Mapping&& other) noexcept {
        if (this != &other) {
            reset();
            address_ = std::exchange(other.address_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() { reset(); }

    bool valid() const noexcept { return address_ != nullptr; }
    std::size_t size() const noexcept { return size_; }
    std::span<std::byte> bytes() const noexcept {
        return {static_cast<std::byte*>(address_), size_};
    }
    /// Unmaps (idempotent, never throws).
    void reset() noexcept;

  private:
    void* address_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace shmpool::detail
