// The machinery under SharedHeap: the header at the start of a heap's block, the robust mutexes
// plugged into Boost.Interprocess as its mutex family, and the segment types. Not for users.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <cstddef>
#include <cstdint>

#include "shmpool/shm/robust_mutex.hpp"

namespace shmpool::detail {

/// HeapHeader::state bits.
enum HeapStateBits : std::uint32_t {
    heap_frozen = 1U << 0,              // read-only from now on: no lock is taken, none may be
    heap_allocator_poisoned = 1U << 1,  // a process died holding the allocation lock
    heap_index_poisoned = 1U << 2,      // ... or the lock of the index of named objects
};

/// The first bytes of a heap's block; the Boost.Interprocess segment follows at header_bytes.
/// Pinned, built in place by the creator, which writes `magic` last (release): an attacher that
/// sees the magic sees the whole header and the segment manager.
struct HeapHeader {
    static constexpr std::uint64_t magic_value =
        0x3150414548504d53ULL;  // "SMPHEAP1", little-endian
    static constexpr std::uint32_t layout = 1;
    static constexpr std::size_t bytes = 512;  // the segment starts here, 64-byte aligned

    std::atomic<std::uint64_t> magic;
    std::uint32_t layout_version;
    std::uint32_t header_bytes;
    std::uint64_t segment_bytes;
    std::uint32_t boost_version;          // BOOST_VERSION of the creator
    std::uint32_t segment_manager_bytes;  // a fingerprint of the segment manager's layout
    std::atomic<std::uint32_t> state;     // HeapStateBits
    std::atomic<std::int32_t> dead_pid;   // the process that died holding a heap lock
    std::int64_t allocator_lock;          // offsets of the two locks from this header
    std::int64_t index_lock;
    char name[256];  // the block's name, for messages
};
static_assert(sizeof(HeapHeader) <= HeapHeader::bytes);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// The mutexes Boost.Interprocess takes inside a heap (its mutex family), over RobustMutex: a
/// holder's death poisons the heap (HeapHeader::state) instead of deadlocking it, and every later
/// lock throws HeapInconsistent naming the heap and the dead process. A frozen heap refuses to be
/// locked at all (HeapFrozen): its readers may map it read-only.
class HeapLock {
  public:
    enum class Kind : std::uint8_t { allocator, index };
    explicit HeapLock(Kind kind);
    HeapLock(const HeapLock&) = delete;
    HeapLock& operator=(const HeapLock&) = delete;

    void lock();
    bool try_lock();
    template <class TimePoint>
    bool timed_lock(const TimePoint& /*deadline*/) {
        lock();  // a heap lock is held for an allocation only; a robust wait never hangs
        return true;
    }
    void unlock();
    RobustMutex::State state() const noexcept { return mutex_.state(); }
    /// If the last holder died (the kernel marked the lock), poisons the heap now, as the next
    /// locker would. Needs a writable mapping.
    void poison_if_holder_died() noexcept;

  private:
    HeapHeader* header() noexcept;
    void acquired(LockResult result);
    void check_usable();

    RobustMutex mutex_;
    std::atomic<std::int32_t> owner_tid_{0};  // recursion: the thread holding it
    std::uint32_t depth_ = 0;
    std::int32_t holder_pid_ = 0;  // who holds it, kept after its death for the message
    std::int64_t to_header_ = 0;   // the header's address minus this one's (0: unknown)
    Kind kind_;
};

struct HeapAllocatorLock : HeapLock {
    HeapAllocatorLock() : HeapLock(Kind::allocator) {}
};
struct HeapIndexLock : HeapLock {
    HeapIndexLock() : HeapLock(Kind::index) {}
};
struct HeapMutexFamily {
    using mutex_type = HeapAllocatorLock;
    using recursive_mutex_type = HeapIndexLock;
};

using HeapAlgorithm = boost::interprocess::rbtree_best_fit<HeapMutexFamily>;
using HeapSegment =
    boost::interprocess::basic_managed_external_buffer<char, HeapAlgorithm,
                                                       boost::interprocess::iset_index>;
using HeapSegmentManager = HeapSegment::segment_manager;

/// The header of the heap whose segment this thread is creating (its locks find it so).
HeapHeader*& heap_under_construction() noexcept;

}  // namespace shmpool::detail
