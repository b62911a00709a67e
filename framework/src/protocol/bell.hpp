// The parent's bell, in the control block's header: every state change the parent must see (a
// chunk done, a worker ready, a death, a result delivered) bumps it, and the parent's threads
// sleep on it as a futex. Workers skip the wake-up while a parent thread is spinning (helping).
#pragma once

#include <cstdint>
#include <ctime>

#include "protocol/control_block.hpp"

namespace shmpool::detail {

class Bell {
  public:
    explicit Bell(ControlHeader& header) noexcept : h_(&header) {}
    /// The bell's count now: sleep() returns at once once it has moved past this.
    std::uint32_t seen() const noexcept { return h_->parent_bell.load(std::memory_order_seq_cst); }
    /// From the parent's own threads: bump, and wake every sleeper.
    void ring() noexcept;
    /// From a worker: bump, and wake the sleepers unless a parent thread is spinning on the slots
    /// (it harvests, and rings for the supervisor when it stops).
    void ring_from_worker() noexcept;
    /// Sleeps until the bell moves past `seen` (or `timeout`, relative; null: no limit).
    void sleep(std::uint32_t seen, const timespec* timeout) noexcept;

    /// A parent thread spinning on the slots (Future::get helping), for as long as it lives.
    class Helping {
      public:
        explicit Helping(Bell& bell) noexcept : h_(bell.h_) { h_->helpers.fetch_add(1); }
        ~Helping() { h_->helpers.fetch_sub(1); }
        Helping(const Helping&) = delete;
        Helping& operator=(const Helping&) = delete;

      private:
        ControlHeader* h_;
    };

  private:
    ControlHeader* h_;
};

}  // namespace shmpool::detail
