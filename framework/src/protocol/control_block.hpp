// The pool's control block: the layout shared by the parent and its workers. With slot.hpp,
// records.hpp and bell.hpp it is the only code both sides include (docs/design/slot-protocol.md).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace shmpool::detail {

/// The first bytes of every version of the layout: a worker reads them to learn whether it speaks
/// this block's layout before it reads anything else.
constexpr char control_magic[8] = {'S', 'H', 'M', 'P', 'P', 'O', 'O', 'L'};
/// Bumped whenever anything after ControlPrefix changes: the header, the slot, the records.
/// Version 1 was the unversioned layout of shmpool 0.1 (no prefix). The tests build a worker
/// "of another shmpool" by overriding it.
#ifdef SHMPOOL_CONTROL_LAYOUT_VERSION_FOR_TESTS
constexpr std::uint32_t control_layout_version = SHMPOOL_CONTROL_LAYOUT_VERSION_FOR_TESTS;
#else
constexpr std::uint32_t control_layout_version = 3;
#endif

struct ControlPrefix {
    char magic[8];
    std::uint32_t layout_version;
    /// A worker of another layout version writes its own version here, then exits: the parent
    /// reports IncompatibleWorker instead of retrying it.
    std::atomic<std::uint32_t> refused_by;
};

/// The header, written once by the parent before any worker starts (but the bell words).
struct alignas(64) ControlHeader {
    ControlPrefix prefix;
    std::uint32_t workers;
    std::uint32_t slot_bytes;                // the request area, and the response area, per buffer
    std::atomic<std::uint32_t> parent_bell;  // bumped for the parent's threads; their futex
    std::atomic<std::uint32_t> parent_sleeping;  // parent threads in futex wait on the bell
    std::atomic<std::uint32_t> helpers;  // parent threads spinning in Future::get(), harvesting
    std::uint32_t timeouts;              // 1: workers stamp each item's start (a clock read each)
    std::uint32_t threads_per_worker;    // oneTBB parallelism allowed in each worker
    std::uint32_t measure_busy;          // 1: workers time each chunk (BufferHeader::chunk_busy_ns)
    std::uint64_t worker_spin_ns;        // how long an idle worker spins before it sleeps
    char initializer[128];               // task run once by each worker before it takes work
    std::int32_t parent_pid;             // blocks of big results are handed to this process
    std::uint32_t prefault_shared_blocks;  // 1: workers map every page of them at start
    std::uint64_t max_result_bytes;        // a bigger result fails its item (std::length_error)
};

/// One of a slot's two buffers: a chunk's state, its request and its response (double-buffered
/// slots: the parent queues the next chunk in one while the worker runs the other).
struct alignas(32) BufferHeader {
    std::atomic<std::uint32_t> state;           // SlotState
    std::atomic<std::uint32_t> completed;       // items of the chunk finished
    std::atomic<std::uint32_t> request_bytes;   // the chunk's request, in the request area
    std::atomic<std::uint32_t> response_bytes;  // written so far in the response area
    std::atomic<std::uint32_t> posted;          // the parent's post count: older chunks run first
    std::uint32_t unused;
    std::atomic<std::uint64_t> chunk_busy_ns;  // the worker's time on the chunk it published
};

/// One slot per worker: this header, then per buffer a request area and a response area.
struct alignas(64) SlotHeader {
    std::atomic<std::uint32_t> doorbell;         // bumped on every post and shutdown; the worker
                                                 // sleeps on it
    std::atomic<std::uint32_t> worker_sleeping;  // the worker is (about to be) in futex wait
    std::atomic<std::int32_t> attached_pid;      // the worker reached shmpool::init and attached
    std::atomic<std::int32_t> ready_pid;         // ... and is ready for work
    std::atomic<std::uint32_t> start_failure;    // StartFailure; its error in buffer 0's response
    std::uint32_t unused;
    std::atomic<std::uint64_t> item_started_ns;  // CLOCK_MONOTONIC, shared by all processes
    std::uint64_t reserved[4];
    BufferHeader buffers[2];
};

static_assert(std::is_standard_layout_v<ControlHeader> && std::is_standard_layout_v<SlotHeader> &&
                  std::is_standard_layout_v<BufferHeader>,
              "shared between processes: no hidden members");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
                  std::atomic<std::uint64_t>::is_always_lock_free,
              "futex words and counters must be lock-free to be shared");
// The layout in bytes (tests/framework/unit/control_block_layout_test.cpp checks the same).
static_assert(sizeof(ControlPrefix) == 16 && offsetof(ControlHeader, workers) == 16 &&
                  offsetof(ControlHeader, parent_bell) == 24 &&
                  offsetof(ControlHeader, worker_spin_ns) == 48 &&
                  offsetof(ControlHeader, initializer) == 56 &&
                  offsetof(ControlHeader, parent_pid) == 184 &&
                  offsetof(ControlHeader, max_result_bytes) == 192 && sizeof(ControlHeader) == 256,
              "the control header's layout is version 3's: bump control_layout_version");
static_assert(offsetof(SlotHeader, attached_pid) == 8 &&
                  offsetof(SlotHeader, item_started_ns) == 24 &&
                  offsetof(SlotHeader, buffers) == 64 && sizeof(BufferHeader) == 32 &&
                  offsetof(BufferHeader, posted) == 16 &&
                  offsetof(BufferHeader, chunk_busy_ns) == 24 && sizeof(SlotHeader) == 128,
              "the slot header's layout is version 3's: bump control_layout_version");

/// What the parent puts in the header.
struct ControlSettings {
    std::uint32_t workers = 1;
    std::uint32_t slot_bytes = 4096;
    bool timeouts = false;
    std::uint32_t threads_per_worker = 1;
    bool measure_busy = false;
    std::uint64_t worker_spin_ns = 0;
    std::string_view initializer;  // shorter than 128 bytes
    std::int32_t parent_pid = 0;
    std::uint64_t max_result_bytes = 0;
    bool prefault_shared_blocks = false;
};

/// Buffers per slot.
constexpr unsigned slot_buffers = 2;

constexpr std::size_t slot_stride(std::size_t slot_bytes) {
    return sizeof(SlotHeader) + std::size_t{2} * slot_buffers * slot_bytes;
}
constexpr std::size_t control_size(std::size_t workers, std::size_t slot_bytes) {
    return sizeof(ControlHeader) + workers * slot_stride(slot_bytes);
}

/// A mapped control block.
class ControlView {
  public:
    ControlView() = default;
    explicit ControlView(std::byte* base) noexcept : base_(base) {}
    ControlHeader& header() const noexcept { return *reinterpret_cast<ControlHeader*>(base_); }
    std::uint32_t workers() const noexcept { return header().workers; }
    std::uint32_t slot_bytes() const noexcept { return header().slot_bytes; }
    SlotHeader& slot(unsigned w) const noexcept {
        return *reinterpret_cast<SlotHeader*>(slot_base(w));
    }
    /// Buffer `b`'s areas: request, then response.
    std::byte* request(unsigned w, unsigned b = 0) const noexcept {
        return slot_base(w) + sizeof(SlotHeader) + std::size_t{2} * b * slot_bytes();
    }
    std::byte* response(unsigned w, unsigned b = 0) const noexcept {
        return request(w, b) + slot_bytes();
    }

  private:
    std::byte* slot_base(unsigned w) const noexcept {
        return base_ + sizeof(ControlHeader) + w * slot_stride(slot_bytes());
    }
    std::byte* base_ = nullptr;
};

/// Lays out a new control block of control_size(settings.workers, settings.slot_bytes) zeroed
/// bytes; the magic goes last, so that nobody reads a half-written header as a control block.
void format_control_block(std::byte* base, const ControlSettings& settings) noexcept;

/// What a worker finds at the start of the block it was told to attach.
enum class LayoutCheck { ok, not_a_pool, other_version, no_such_slot };
LayoutCheck check_control_block(const std::byte* base, std::size_t size, unsigned worker) noexcept;

}  // namespace shmpool::detail
