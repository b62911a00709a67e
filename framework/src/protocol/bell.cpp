// The bell's futex protocol: sequentially consistent counters on both sides, so that a sleeper
// never misses a ring (it registers, rechecks the count, then waits on the old value).
#include "protocol/bell.hpp"

#include <climits>

#include "posix/sys.hpp"

namespace shmpool::detail {

void Bell::ring() noexcept {
    h_->parent_bell.fetch_add(1, std::memory_order_seq_cst);
    if (h_->parent_sleeping.load(std::memory_order_seq_cst))
        sys::futex_wake(&h_->parent_bell, INT_MAX);
}

void Bell::ring_from_worker() noexcept {
    h_->parent_bell.fetch_add(1, std::memory_order_seq_cst);
    if (h_->parent_sleeping.load(std::memory_order_seq_cst) &&
        h_->helpers.load(std::memory_order_seq_cst) == 0) {
        sys::futex_wake(&h_->parent_bell, INT_MAX);  // the supervisor, and callers in get()
    }
}

void Bell::sleep(std::uint32_t seen, const timespec* timeout) noexcept {
    h_->parent_sleeping.fetch_add(1, std::memory_order_seq_cst);
    if (h_->parent_bell.load(std::memory_order_seq_cst) == seen)
        sys::futex_wait(&h_->parent_bell, seen, timeout);
    h_->parent_sleeping.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace shmpool::detail
