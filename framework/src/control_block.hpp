// The pool's control block: one slot per worker, shared by the parent and its workers.
//
// A slot carries one chunk at a time. Its state word is the handshake (and the worker's futex):
// free -> queued (parent wrote a request) -> running (worker claimed it) -> done (worker wrote all
// results) -> free (parent harvested them); shutdown tells the worker to exit. Only the parent
// moves free->queued, done->free and ->shutdown; only the worker moves queued->running->done. When
// a worker dies, the parent alone resolves its slot, so dispatch can never race with death.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmpool/framework/task.hpp"  // monotonic_ns

namespace shmpool::detail {

enum SlotState : std::uint32_t {
    slot_free = 0,
    slot_queued = 1,
    slot_running = 2,
    slot_done = 3,
    slot_shutdown = 4
};

// Result records in a slot's response area: [u8 kind][u32 length][bytes].
enum RecordKind : std::uint8_t { record_value = 0, record_error = 1 };

struct alignas(64) SlotHeader {
    std::atomic<std::uint32_t> state;
    std::atomic<std::uint32_t> worker_sleeping;  // the worker is (about to be) in futex wait
    std::atomic<std::uint32_t> completed;        // result records written for this chunk
    std::atomic<std::uint32_t> request_bytes;
    std::atomic<std::uint32_t> response_bytes;
    std::atomic<std::int32_t> worker_pid;
    std::atomic<std::uint64_t> item_started_ns;  // CLOCK_MONOTONIC, shared by all processes
    std::atomic<std::uint64_t> chunk_id;
    std::atomic<std::uint64_t> chunk_busy_ns;  // the worker's time on the chunk it marked done
    std::atomic<std::uint32_t>
        init_failed;  // the initializer threw: its error is in the response area
    std::atomic<std::int32_t> attached_pid;  // the worker reached shmpool::init and attached
};

struct alignas(64) ControlHeader {
    char magic[8];
    std::uint32_t workers;
    std::uint32_t slot_bytes;
    std::atomic<std::uint32_t> parent_bell;  // bumped for the supervisor; its futex
    std::atomic<std::uint32_t> parent_sleeping;
    std::atomic<std::uint32_t> helpers;  // parent threads spinning in Future::get(), harvesting
    std::uint32_t timeouts;            // 1: workers stamp each item's start (a clock read per item)
    char initializer[128];             // task run once by each worker before it takes work, or ""
    std::uint32_t threads_per_worker;  // oneTBB parallelism allowed in each worker
    std::uint64_t worker_spin_ns;      // how long an idle worker spins before it sleeps
    std::uint32_t measure_busy;        // 1: workers time each chunk (chunk_busy_ns)
};

static_assert(std::is_standard_layout_v<SlotHeader> && std::is_standard_layout_v<ControlHeader>,
              "shared between processes");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
                  std::atomic<std::uint64_t>::is_always_lock_free,
              "futex words and counters must be lock-free to be shared");

constexpr char control_magic[8] = {'S', 'H', 'M', 'P', 'P', 'O', 'O', 'L'};

constexpr std::size_t slot_stride(std::size_t slot_bytes) {
    return sizeof(SlotHeader) + 2 * slot_bytes;
}
constexpr std::size_t control_size(std::size_t workers, std::size_t slot_bytes) {
    return sizeof(ControlHeader) + workers * slot_stride(slot_bytes);
}

/// A view of a mapped control block.
struct ControlView {
    std::byte* base = nullptr;
    ControlHeader* header() const { return reinterpret_cast<ControlHeader*>(base); }
    std::byte* slot_base(unsigned w) const {
        return base + sizeof(ControlHeader) + w * slot_stride(header()->slot_bytes);
    }
    SlotHeader* slot(unsigned w) const { return reinterpret_cast<SlotHeader*>(slot_base(w)); }
    std::byte* request(unsigned w) const { return slot_base(w) + sizeof(SlotHeader); }
    std::byte* response(unsigned w) const { return request(w) + header()->slot_bytes; }
};

/// futex(2) on a shared word.
long futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                const struct timespec* timeout) noexcept;
long futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;

/// The worker's main loop (shmpool::init in a worker process); returns the exit status.
int worker_main();

}  // namespace shmpool::detail
