// Laying out a control block, and what a worker checks before it trusts one.
#include "protocol/control_block.hpp"

#include <algorithm>
#include <cstring>

namespace shmpool::detail {

void format_control_block(std::byte* base, const ControlSettings& settings) noexcept {
    auto& h = *reinterpret_cast<ControlHeader*>(base);
    h.workers = settings.workers;
    h.slot_bytes = settings.slot_bytes;
    h.timeouts = settings.timeouts ? 1 : 0;
    h.threads_per_worker = settings.threads_per_worker;
    h.measure_busy = settings.measure_busy ? 1 : 0;
    h.worker_spin_ns = settings.worker_spin_ns;
    h.parent_pid = settings.parent_pid;
    h.max_result_bytes = settings.max_result_bytes;
    h.prefault_shared_blocks = settings.prefault_shared_blocks ? 1 : 0;
    const std::size_t n = std::min(settings.initializer.size(), sizeof h.initializer - 1);
    std::memcpy(h.initializer, settings.initializer.data(), n);
    h.prefix.layout_version = control_layout_version;
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(h.prefix.magic, control_magic, sizeof control_magic);
}

LayoutCheck check_control_block(const std::byte* base, std::size_t size, unsigned worker) noexcept {
    if (size < sizeof(ControlPrefix)) return LayoutCheck::not_a_pool;
    const auto& prefix = *reinterpret_cast<const ControlPrefix*>(base);
    if (std::memcmp(prefix.magic, control_magic, sizeof control_magic) != 0)
        return LayoutCheck::not_a_pool;
    if (prefix.layout_version != control_layout_version) return LayoutCheck::other_version;
    if (size < sizeof(ControlHeader)) return LayoutCheck::not_a_pool;
    const auto& h = *reinterpret_cast<const ControlHeader*>(base);
    if (worker >= h.workers || size < control_size(h.workers, h.slot_bytes))
        return LayoutCheck::no_such_slot;
    return LayoutCheck::ok;
}

}  // namespace shmpool::detail
