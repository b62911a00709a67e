// StageQueue: the items waiting for one pipeline stage (or the sink): in arrival order, or for a
// serial_in_order stage strictly by sequence number, with failed sequences skipped.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <vector>

namespace shmpool::detail {

class StageQueue {
  public:
    explicit StageQueue(bool in_order = false) : in_order_(in_order) {}

    bool in_order() const noexcept { return in_order_; }
    /// Items waiting.
    std::size_t depth() const noexcept { return ready_.size() + waiting_; }
    /// Token `token`, carrying sequence `sequence`, arrives.
    void put(std::uint32_t token, std::uint64_t sequence) {
        if (in_order_) {
            place(sequence, token);
            ++waiting_;
        } else {
            ready_.push_back(token);
        }
    }
    /// Sequence `sequence` will never arrive (it failed, or it is past a source's end).
    void skip(std::uint64_t sequence) {
        if (in_order_ && sequence >= next_) place(sequence, skipped);
    }
    /// Up to `limit` tokens the stage may run now: for serial_in_order, only the run of
    /// sequences due next.
    std::vector<std::uint32_t> take(std::size_t limit) {
        std::vector<std::uint32_t> out;
        if (!in_order_) {
            while (!ready_.empty() && out.size() < limit) {
                out.push_back(ready_.front());
                ready_.pop_front();
            }
            return out;
        }
        while (out.size() < limit) {
            const std::uint32_t v = pop_next();
            if (v == unknown) break;
            if (v != skipped) {
                out.push_back(v);
                --waiting_;
            }
        }
        return out;
    }

  private:
    static constexpr std::uint32_t unknown = UINT32_MAX;      // not arrived yet
    static constexpr std::uint32_t skipped = UINT32_MAX - 1;  // will never come

    std::uint32_t& at(std::size_t i) { return ring_[(head_ + i) & (ring_.size() - 1)]; }
    // A ring by sequence, ring_[(head_ + i) & mask] the token of sequence next_ + i, or unknown,
    // or skipped: no allocation and no tree per item.
    void place(std::uint64_t sequence, std::uint32_t what) {
        // A sequence already passed would wrap the offset into a huge allocation.
        if (sequence < next_)
            throw std::logic_error("pipeline: an in-order queue got a sequence it passed");
        const auto i = static_cast<std::size_t>(sequence - next_);
        if (i >= ring_.size()) {  // grow to a power of two, unrolled from the head
            std::vector<std::uint32_t> bigger(std::bit_ceil(i + 1), unknown);
            for (std::size_t k = 0; k < ring_.size(); ++k)
                bigger[k] = at(k);
            ring_.swap(bigger);
            head_ = 0;
        }
        at(i) = what;
    }
    // The entry of sequence next_, taken: unknown if it has not arrived.
    std::uint32_t pop_next() {
        const std::uint32_t v = at(0);
        if (v == unknown) return v;
        at(0) = unknown;
        head_ = (head_ + 1) & (ring_.size() - 1);
        ++next_;
        return v;
    }

    bool in_order_;
    std::deque<std::uint32_t> ready_;  // parallel and serial_out_of_order stages
    std::vector<std::uint32_t> ring_ = std::vector<std::uint32_t>(64, unknown);
    std::size_t head_ = 0;
    std::uint64_t next_ = 0;   // the next sequence due
    std::size_t waiting_ = 0;  // tokens in the ring
};

}  // namespace shmpool::detail
