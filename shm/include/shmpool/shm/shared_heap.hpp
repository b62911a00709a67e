// SharedHeap: a named, tracked shared-memory block holding a Boost.Interprocess heap, in which
// processes build maps, strings and vectors that other processes find by name and read in
// place (docs/shared-data.md).
//
// The block is a shmpool SharedMemory (shmpool's names, tracker and ownership rules, ENOSPC
// instead of SIGBUS when /dev/shm is full); a Boost.Interprocess segment manager runs over it,
// so the containers are Boost's (boost::container with an offset_ptr allocator: addresses may
// differ per process). What shmpool adds: its allocation locks are RobustMutexes, so a process
// that dies while allocating poisons the heap (HeapInconsistent on every later allocation,
// reads still allowed) instead of deadlocking everyone; and freeze(), after which the heap is
// read-only for good and its readers may map it read-only and look objects up without a lock.
//
// Ownership and lifetime: as SharedMemory (the destructor unmaps, never unlinks; the creator's
// tracker removes the block if the creator dies with it). Threads and processes: allocation and
// the index of named objects are locked; the containers themselves are not synchronised (build,
// then freeze and share; or guard them yourself).
#pragma once

#include <boost/container/map.hpp>
#include <boost/container/string.hpp>
#include <boost/container/vector.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/unordered_map.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmpool/shm/detail/heap_segment.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool {

/// Allocates in a SharedHeap; containers built with it may live in the heap.
template <class T>
using SharedAllocator = boost::interprocess::allocator<T, detail::HeapSegmentManager>;
using SharedString =
    boost::container::basic_string<char, std::char_traits<char>, SharedAllocator<char>>;
template <class T>
using SharedVector = boost::container::vector<T, SharedAllocator<T>>;
/// Ordered; std::less<> lets a lookup take a std::string_view for a SharedString key.
template <class K, class V, class Compare = std::less<>>
using SharedMap = boost::container::map<K, V, Compare, SharedAllocator<std::pair<const K, V>>>;
/// Hashes SharedString, std::string and std::string_view alike (heterogeneous lookup).
struct SharedStringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
    std::size_t operator()(const SharedString& s) const noexcept {
        return (*this)(std::string_view(s.data(), s.size()));
    }
};
template <class K, class V,
          class Hash =
              std::conditional_t<std::is_same_v<K, SharedString>, SharedStringHash, boost::hash<K>>,
          class Equal = std::equal_to<>>
using SharedUnorderedMap =
    boost::unordered_map<K, V, Hash, Equal, SharedAllocator<std::pair<const K, V>>>;

/// A process died holding one of a heap's allocation locks: what it was doing is half done.
/// Objects finished before stay readable (unless the index of names itself was being changed);
/// nothing more can be allocated or freed in the heap.
class HeapInconsistent : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};
/// The heap was frozen (SharedHeap::freeze()): nothing can be allocated, freed or named.
class HeapFrozen : public std::logic_error {
  public:
    using std::logic_error::logic_error;
};
/// The heap has no free run of memory big enough (the block is full; make it bigger).
class HeapFull : public std::bad_alloc {
  public:
    explicit HeapFull(std::string what) : what_(std::move(what)) {}
    const char* what() const noexcept override { return what_.c_str(); }

  private:
    std::string what_;
};

/// A heap's state as its header says.
enum class HeapState {
    writable,            ///< open for allocation
    frozen,              ///< read-only for good (freeze())
    inconsistent,        ///< a process died holding the allocation lock
    index_inconsistent,  ///< ... or the lock of the named objects' index: lookups are refused
};
std::string_view to_string(HeapState state) noexcept;

class SharedHeap {
  public:
    /// A named object as the index lists it.
    struct NamedObject {
        std::string name;
        std::size_t bytes = 0;  ///< what it takes in the heap (not what its containers own)
    };

    SharedHeap() noexcept = default;
    /// Creates a heap of `size` bytes (the block; a few hundred go to bookkeeping) with a random
    /// name, or named `name`. Throws what SharedMemory::create throws (ENOSPC with a hint,
    /// EEXIST, a bad name), std::invalid_argument if `size` cannot hold a heap.
    static SharedHeap create(std::size_t size, const CreateOptions& options = {});
    static SharedHeap create(std::string_view name, std::size_t size,
                             const CreateOptions& options = {});
    /// Attaches the heap `name`. Access::read_only needs a frozen heap (std::logic_error else).
    /// Throws what SharedMemory::attach throws, and CorruptedBlock if the block is not a heap or
    /// was laid out by an incompatible build (another Boost, another layout version).
    static SharedHeap attach(std::string_view name, Access access = Access::read_write);
    /// The heap `name` attached once per process and kept (for tasks, as SharedArray::cached):
    /// read-only if it is frozen. A block re-created under the same name is attached again.
    static SharedHeap& cached(std::string_view name);
    /// Whether `block` holds a heap (its header's magic): for tools.
    static bool is_heap(const SharedMemory& block) noexcept;

    SharedHeap(SharedHeap&&) noexcept = default;
    SharedHeap& operator=(SharedHeap&&) noexcept = default;
    ~SharedHeap() = default;

    /// Builds a T named `name` from `args` (an allocator() argument, for a container). T's
    /// constructor runs under the heap's index lock: keep it short (build a container empty,
    /// fill it after), and never wait in it for another process that uses the heap. Throws
    /// std::invalid_argument if the name is taken, HeapFull, HeapFrozen, HeapInconsistent.
    template <class T, class... Args>
    T& construct(std::string_view name, Args&&... args) {
        const std::string key(name);
        T* made = nullptr;
        change_index(name, [&] {
            made = segment().template construct<T>(key.c_str())(std::forward<Args>(args)...);
        });
        return *made;
    }
    /// The object named `name`, or nullptr. Lock-free in a frozen heap. Throws HeapInconsistent
    /// if the index itself may be torn.
    template <class T>
    T* find(std::string_view name) const {
        const std::string key(name);
        if (state() == HeapState::index_inconsistent) throw_index_torn(name);
        if (frozen()) return segment().template find_no_lock<T>(key.c_str()).first;
        std::pair<T*, std::size_t> found{nullptr, 0};
        translate(name, [&] { found = segment().template find<T>(key.c_str()); });
        return found.first;
    }
    /// Destroys the object named `name`; false if there is none. Throws HeapFrozen,
    /// HeapInconsistent.
    template <class T>
    bool destroy(std::string_view name) {
        const std::string key(name);
        bool destroyed = false;
        change_index(name, [&] { destroyed = segment().template destroy<T>(key.c_str()); });
        return destroyed;
    }
    /// An allocator into this heap, for the containers built in it.
    SharedAllocator<char> allocator() const { return {segment().get_segment_manager()}; }
    /// A SharedString in this heap holding `s`.
    SharedString string(std::string_view s) const { return {s.data(), s.size(), allocator()}; }

    /// Read-only from now on, in every process: allocation, naming and destruction throw
    /// HeapFrozen, frees are ignored (the memory stays with the heap), lookups take no lock, and
    /// attachers may map it Access::read_only. Waits for an allocation under way. Nothing if
    /// frozen already; throws HeapInconsistent if a lock holder died.
    void freeze();
    /// What the header says; a lock holder that died is found here too, without waiting for the
    /// next locker.
    HeapState state() const;
    /// Frozen (also when inconsistent since).
    bool frozen() const;
    /// The process that died holding a heap lock (state() inconsistent), else 0.
    pid_t dead_pid() const;
    /// Free bytes left for allocation, and the heap's whole size (the block's).
    std::size_t free_bytes() const;
    std::size_t size() const noexcept { return block_.size(); }
    /// The named objects, sorted by name, read under the index lock (none in a frozen heap),
    /// waiting for it at most `timeout`. Throws HeapInconsistent if the index may be torn,
    /// std::runtime_error naming the holder if the lock stays taken.
    std::vector<NamedObject> named_objects(
        std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

    const std::string& name() const noexcept { return block_.name(); }
    bool is_open() const noexcept { return block_.is_open(); }
    const SharedMemory& block() const noexcept { return block_; }
    /// Removes the block from /dev/shm (see SharedMemory::unlink()).
    void unlink() { block_.unlink(); }
    /// The Boost.Interprocess segment, for what this class does not wrap (its named constructions
    /// do not mark the index as being changed: a death there is not detected). Throws
    /// std::logic_error on an empty SharedHeap, as every member above does.
    detail::HeapSegment& segment() const;

  private:
    SharedHeap(SharedMemory block, std::unique_ptr<detail::HeapSegment> segment)
        : block_(std::move(block)), segment_(std::move(segment)) {}
    // Checks `block` and opens the heap in it.
    static SharedHeap open(SharedMemory block);
    detail::HeapHeader& header() const;
    // Runs f under the index lock, the index marked as being changed (a death there poisons it).
    template <class F>
    void change_index(std::string_view object, F&& f) {
        check_writable(object);
        auto changing = [&] {
            detail::IndexChange mark(header());
            std::forward<F>(f)();
        };
        translate(object, [&] { segment().get_segment_manager()->atomic_func(changing); });
    }
    // Runs f, turning Boost's errors into ours and naming the object in the heap's.
    template <class F>
    void translate(std::string_view object, F&& f) const {
        try {
            std::forward<F>(f)();
        } catch (const boost::interprocess::bad_alloc&) {
            throw_full(object);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw_boost(object, e);
        } catch (const HeapInconsistent& e) {
            throw HeapInconsistent(std::string(e.what()) + " (object '" + std::string(object) +
                                   "')");
        } catch (const HeapFrozen& e) {
            throw HeapFrozen(std::string(e.what()) + " (object '" + std::string(object) + "')");
        }
    }
    void check_writable(std::string_view object) const;
    [[noreturn]] void throw_index_torn(std::string_view object) const;
    [[noreturn]] void throw_full(std::string_view object) const;
    [[noreturn]] void throw_boost(std::string_view object,
                                  const boost::interprocess::interprocess_exception& e) const;

    SharedMemory block_;
    std::unique_ptr<detail::HeapSegment> segment_;  // Boost's handle on the mapping
};

}  // namespace shmpool
