// PoolLink: what a Future holds to reach its pool (to wake it, and to help harvest while it
// waits). The pool sets it once started and clears it before it goes; it then waits until no
// thread is still inside it through a link (close_links()).
#pragma once

#include <atomic>

#include "parent/supervisor.hpp"
#include "protocol/bell.hpp"

namespace shmpool::detail {

struct PoolLink {
    std::atomic<Supervisor*> supervisor{nullptr};
    std::atomic<Bell*> bell{nullptr};
    mutable std::atomic<int> users{0};  // threads inside the pool through this link

    void open(Supervisor& s, Bell& b) noexcept {
        bell.store(&b);
        supervisor.store(&s);
    }
    /// From now on a link reaches nothing; returns once nobody is inside any more.
    void close() noexcept;
};

}  // namespace shmpool::detail
