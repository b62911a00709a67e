// detail::Mapping: unmaps through the system-call seam.
#include "shmpool/shm/detail/mapping.hpp"

#include "posix/sys.hpp"

namespace shmpool::detail {

void Mapping::reset() noexcept {
    if (address_ != nullptr) sys::munmap(address_, size_);
    address_ = nullptr;
    size_ = 0;
}

}  // namespace shmpool::detail
