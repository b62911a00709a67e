// The machinery under SharedHeap: the header at the start of a heap's block, the robust mutexes
// plugged into Boost.Interprocess as its mutex family, the allocator that never throws from a
// free, and the segment types. Not for users.
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
    heap_index_poisoned = 1U << 2,      // ... or while changing the index of named objects
};
constexpr std::uint32_t heap_poisoned = heap_allocator_poisoned | heap_index_poisoned;

/// The first bytes of a heap's block; the Boost.Interprocess segment follows at `bytes`, and
/// the segment manager (whose first member is the allocation lock) at its very start.
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
    // Set, under the index lock, while SharedHeap changes the index (construct, destroy): a
    // holder that dies then leaves it torn. A holder that dies while only reading it does not.
    std::atomic<std::uint32_t> index_changing;
    char name[256];  // the block's name, for messages
};
static_assert(sizeof(HeapHeader) <= HeapHeader::bytes);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// The mutexes Boost.Interprocess takes inside a heap (its mutex family), over RobustMutex,
/// recursive for the same thread (Boost's index lock must be). A holder's death poisons the heap
/// (HeapHeader::state) instead of deadlocking it, and every later lock throws HeapInconsistent
/// naming the heap and the dead process. A frozen heap refuses to be locked at all (HeapFrozen):
/// its readers may map it read-only. Boost calls lock(), try_lock() and unlock() only.
class HeapLock {
  public:
    enum class Kind : std::uint8_t { allocator, index };
    explicit HeapLock(Kind kind);
    HeapLock(const HeapLock&) = delete;
    HeapLock& operator=(const HeapLock&) = delete;

    void lock();
    bool try_lock();
    void unlock();
    RobustMutex::State state() const noexcept { return mutex_.state(); }
    /// If the last holder died (the kernel marked the lock), judges it now, as the next locker
    /// would. Needs a writable mapping.
    void poison_if_holder_died() noexcept;

  private:
    HeapHeader* header() noexcept;
    bool held_by_this_thread() const noexcept;
    void acquired(LockResult result);
    void check_usable();

    RobustMutex mutex_;
    std::uint32_t depth_ = 0;      // recursion, read by its holder only
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

/// Boost's best-fit allocator, whose frees never throw: in a frozen or poisoned heap the memory
/// of a free stays with the heap, since a free is mostly a container's destructor, and a
/// destructor that throws ends the program. No data member: Boost lays the segment out from
/// the size of its own class.
class HeapAlgorithm : public boost::interprocess::rbtree_best_fit<HeapMutexFamily> {
    using base = boost::interprocess::rbtree_best_fit<HeapMutexFamily>;

  public:
    using base::base;
    void deallocate(void* address) noexcept;
    void deallocate_many(multiallocation_chain& chain) noexcept;

  private:
    bool frees_allowed() const noexcept;
};

using HeapSegment =
    boost::interprocess::basic_managed_external_buffer<char, HeapAlgorithm,
                                                       boost::interprocess::iset_index>;
using HeapSegmentManager = HeapSegment::segment_manager;

/// The header of the heap whose segment this thread is creating (its locks find it so).
HeapHeader*& heap_under_construction() noexcept;

/// Marks the index as being changed for a scope (the caller holds the index lock).
class IndexChange {
  public:
    explicit IndexChange(HeapHeader& header) noexcept : header_(header) {
        header_.index_changing.store(1, std::memory_order_release);
    }
    IndexChange(const IndexChange&) = delete;
    IndexChange& operator=(const IndexChange&) = delete;
    ~IndexChange() { header_.index_changing.store(0, std::memory_order_release); }

  private:
    HeapHeader& header_;
};

}  // namespace shmpool::detail
