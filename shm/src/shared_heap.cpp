// SharedHeap: the header, the robust heap locks, and validation of what is attached.
#include "shmpool/shm/shared_heap.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <boost/version.hpp>
#include <cstring>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include "posix/sys.hpp"
#include "shmpool/shm/block_info.hpp"
#include "shmpool/shm/error.hpp"

namespace shmpool {
namespace detail {

HeapHeader*& heap_under_construction() noexcept {
    thread_local HeapHeader* header = nullptr;
    return header;
}

namespace {

// The calling thread's and process's ids, cached (a lock is taken per allocation); a forked
// child must not keep its parent's (the lock would think the parent's thread holds it), so fork
// clears the cache of the thread that forked, the child's only thread.
thread_local pid_t cached_tid = 0;
std::atomic<pid_t> cached_pid{0};
void forget_ids() noexcept {
    static std::once_flag registered;
    std::call_once(registered, [] {
        ::pthread_atfork(nullptr, nullptr, [] {
            cached_tid = 0;
            cached_pid.store(0, std::memory_order_relaxed);
        });
    });
}
pid_t this_thread() noexcept {
    if (cached_tid == 0) {
        forget_ids();
        cached_tid = sys::thread_id();
    }
    return cached_tid;
}
pid_t this_process() noexcept {
    pid_t pid = cached_pid.load(std::memory_order_relaxed);
    if (pid == 0) {
        forget_ids();
        pid = sys::process_id();
        cached_pid.store(pid, std::memory_order_relaxed);
    }
    return pid;
}

// The lock-kind message part, for errors.
const char* what_it_guards(HeapLock::Kind kind) {
    return kind == HeapLock::Kind::allocator ? "allocating or freeing"
                                             : "changing the index of named objects";
}

}  // namespace

HeapLock::HeapLock(Kind kind) : kind_(kind) {
    // Boost builds the locks inside the segment manager while SharedHeap::create builds the
    // segment: the header is then known, and its distance is the same in every mapping.
    if (HeapHeader* h = heap_under_construction()) {
        to_header_ = reinterpret_cast<char*>(h) - reinterpret_cast<char*>(this);
        (kind == Kind::allocator ? h->allocator_lock : h->index_lock) = -to_header_;
    }
}

HeapHeader* HeapLock::header() noexcept {
    return to_header_ == 0
               ? nullptr
               : reinterpret_cast<HeapHeader*>(reinterpret_cast<char*>(this) + to_header_);
}

void HeapLock::check_usable() {
    const HeapHeader* h = header();
    if (h == nullptr) return;
    const std::uint32_t state = h->state.load(std::memory_order_acquire);
    if ((state & heap_frozen) != 0)
        throw HeapFrozen(
            fmt::format("heap '{}' is frozen: nothing can be allocated, freed or "
                        "named in it",
                        h->name));
    const std::uint32_t refused = kind_ == Kind::allocator
                                      ? (heap_allocator_poisoned | heap_index_poisoned)
                                      : heap_index_poisoned;
    if ((state & refused) != 0)
        throw HeapInconsistent(fmt::format(
            "heap '{}' is inconsistent: process {} died while {}; objects finished before may "
            "be read, nothing more allocated",
            h->name, h->dead_pid.load(),
            what_it_guards((state & heap_index_poisoned) != 0 ? Kind::index : Kind::allocator)));
}

bool HeapLock::held_by_this_thread() const noexcept {
    // The futex word's owner, which the kernel clears when its holder dies: a tid reused by a
    // later thread is never mistaken for the dead one.
    return mutex_.state().holder_tid == this_thread();
}

void HeapLock::acquired(LockResult result) {
    if (result == LockResult::owner_died) {
        HeapHeader* h = header();
        // A reader that died left nothing half done; a change to the index or an allocation
        // did: poison the heap for good, leave the mutex usable (readers of the index may still
        // need it), and refuse.
        const bool torn = kind_ == Kind::allocator || h == nullptr ||
                          h->index_changing.load(std::memory_order_acquire) != 0;
        if (!torn) {
            mutex_.make_consistent();
        } else {
            if (h != nullptr) {
                h->dead_pid.store(holder_pid_);
                h->state.fetch_or(
                    kind_ == Kind::allocator ? heap_allocator_poisoned : heap_index_poisoned,
                    std::memory_order_release);
                h->index_changing.store(0, std::memory_order_release);
            }
            mutex_.make_consistent();
            mutex_.unlock();
            check_usable();
            throw HeapInconsistent(fmt::format("a heap lock's holder (process {}) died while {}",
                                               holder_pid_, what_it_guards(kind_)));
        }
    }
    holder_pid_ = this_process();
    depth_ = 1;
}

void HeapLock::lock() {
    if (held_by_this_thread()) {
        ++depth_;  // Boost's index lock is recursive (a constructor may name objects)
        return;
    }
    check_usable();
    acquired(mutex_.lock());
}

bool HeapLock::try_lock() {
    if (held_by_this_thread()) {
        ++depth_;
        return true;
    }
    check_usable();
    const std::optional<LockResult> result = mutex_.try_lock();
    if (!result) return false;
    acquired(*result);
    return true;
}

void HeapLock::poison_if_holder_died() noexcept {
    if (!mutex_.state().owner_died) return;
    try {
        if (try_lock()) unlock();      // someone else took it first: it is theirs to judge
    } catch (const std::exception&) {  // HeapInconsistent: poisoned, as meant
    }
}

void HeapLock::unlock() {
    if (--depth_ > 0) return;
    mutex_.unlock();
}

bool HeapAlgorithm::frees_allowed() const noexcept {
    // The algorithm is the first base of the segment manager, at the start of the segment
    // (checked when the heap is created and attached).
    const auto* h = reinterpret_cast<const HeapHeader*>(reinterpret_cast<const char*>(this) -
                                                        HeapHeader::bytes);
    return (h->state.load(std::memory_order_acquire) & (heap_frozen | heap_poisoned)) == 0;
}

void HeapAlgorithm::deallocate(void* address) noexcept {
    if (!frees_allowed()) return;
    try {
        base::deallocate(address);
    } catch (...) {  // frozen or poisoned meanwhile: the memory stays with the heap
    }
}

void HeapAlgorithm::deallocate_many(multiallocation_chain& chain) noexcept {
    if (!frees_allowed()) return;
    try {
        base::deallocate_many(chain);
    } catch (...) {
    }
}

}  // namespace detail

using detail::HeapHeader;
using detail::HeapSegment;

std::string_view to_string(HeapState state) noexcept {
    switch (state) {
        case HeapState::writable:
            return "writable";
        case HeapState::frozen:
            return "frozen";
        case HeapState::inconsistent:
            return "inconsistent";
        case HeapState::index_inconsistent:
            return "index inconsistent";
    }
    return "unknown";
}

namespace {

constexpr std::uint32_t segment_manager_bytes =
    static_cast<std::uint32_t>(sizeof(detail::HeapSegmentManager));

// Why `block` cannot be read as a heap of this build, or nothing.
std::optional<std::string> refusal(const SharedMemory& block) {
    if (block.size() <= HeapHeader::bytes + segment_manager_bytes)
        return fmt::format("is {} bytes, too small for a heap", block.size());
    const auto& h = *reinterpret_cast<const HeapHeader*>(block.data());
    if (h.magic.load(std::memory_order_acquire) != HeapHeader::magic_value)
        return std::string("is not a shmpool heap (no heap header)");
    if (h.layout_version != HeapHeader::layout || h.header_bytes != HeapHeader::bytes)
        return fmt::format("has heap layout {}, this build reads layout {}", h.layout_version,
                           HeapHeader::layout);
    if (h.boost_version != BOOST_VERSION || h.segment_manager_bytes != segment_manager_bytes)
        return fmt::format(
            "was laid out by another build (Boost {}, a segment manager of {} bytes; this one: "
            "Boost {}, {} bytes)",
            h.boost_version, h.segment_manager_bytes, BOOST_VERSION, segment_manager_bytes);
    if (h.segment_bytes != block.size() - HeapHeader::bytes)
        return fmt::format("says its heap is {} bytes, but the block holds {}", h.segment_bytes,
                           block.size() - HeapHeader::bytes);
    // The locks are written through these offsets: they must be where this build puts them.
    const auto lock_end = static_cast<std::int64_t>(HeapHeader::bytes + segment_manager_bytes -
                                                    sizeof(detail::HeapLock));
    if (h.allocator_lock != static_cast<std::int64_t>(HeapHeader::bytes) ||
        h.index_lock <= h.allocator_lock || h.index_lock > lock_end ||
        h.index_lock % static_cast<std::int64_t>(alignof(detail::HeapLock)) != 0)
        return fmt::format("has its locks at offsets {} and {}, not where this build puts them",
                           h.allocator_lock, h.index_lock);
    return std::nullopt;
}

}  // namespace

SharedHeap SharedHeap::create(std::size_t size, const CreateOptions& options) {
    return create({}, size, options);
}

SharedHeap SharedHeap::create(std::string_view name, std::size_t size,
                              const CreateOptions& options) {
    if (options.guarded)
        throw std::invalid_argument(
            "a heap has locks of its own: CreateOptions::guarded is not "
            "for heaps");
    const std::size_t least = HeapHeader::bytes + 4096;
    if (size < least)
        throw std::invalid_argument(
            fmt::format("a heap needs at least {} bytes, {} were asked for", least, size));
    SharedMemory block = name.empty() ? SharedMemory::create(size, options)
                                      : SharedMemory::create(name, size, options);
    try {
        auto* h = new (block.data()) HeapHeader{};
        h->layout_version = HeapHeader::layout;
        h->header_bytes = HeapHeader::bytes;
        h->segment_bytes = size - HeapHeader::bytes;
        h->boost_version = BOOST_VERSION;
        h->segment_manager_bytes = segment_manager_bytes;
        const std::string& n = block.name();
        std::memcpy(h->name, n.data(), std::min(n.size(), sizeof h->name - 1));
        detail::heap_under_construction() = h;
        std::unique_ptr<HeapSegment> segment;
        try {
            segment =
                std::make_unique<HeapSegment>(boost::interprocess::create_only,
                                              block.data() + HeapHeader::bytes, h->segment_bytes);
        } catch (...) {
            detail::heap_under_construction() = nullptr;
            throw;
        }
        detail::heap_under_construction() = nullptr;
        // The allocator finds the header from its own address (HeapAlgorithm::frees_allowed).
        // (the segment manager at the segment's start, and the algorithm's first member, its
        // lock, there too: the algorithm is there).
        if (static_cast<void*>(segment->get_segment_manager()) !=
                static_cast<void*>(block.data() + HeapHeader::bytes) ||
            h->allocator_lock != static_cast<std::int64_t>(HeapHeader::bytes))
            throw std::logic_error(
                "this Boost lays a heap's segment out differently from what "
                "shmpool expects");
        h->magic.store(HeapHeader::magic_value, std::memory_order_release);
        return {std::move(block), std::move(segment)};
    } catch (...) {
        block.unlink();  // nothing half-made is left behind
        throw;
    }
}

SharedHeap SharedHeap::open(SharedMemory block) {
    if (std::optional<std::string> why = refusal(block))
        throw CorruptedBlock(errc::corrupted_block,
                             fmt::format("block '{}' {}", block.name(), *why));
    const auto& h = *reinterpret_cast<const HeapHeader*>(block.data());
    if (block.read_only() && (h.state.load() & detail::heap_frozen) == 0)
        throw std::logic_error(fmt::format(
            "heap '{}' is not frozen: only a frozen heap may be attached read-only (its locks "
            "are written)",
            block.name()));
    auto segment = std::make_unique<HeapSegment>(boost::interprocess::open_only,
                                                 block.data() + HeapHeader::bytes, h.segment_bytes);
    return {std::move(block), std::move(segment)};
}

SharedHeap SharedHeap::attach(std::string_view name, Access access) {
    return open(SharedMemory::attach(name, {.access = access}));
}

SharedHeap& SharedHeap::cached(std::string_view name) {
    static std::mutex mutex;
    static std::map<std::string, std::pair<std::uint64_t, SharedHeap>, std::less<>> cache;
    const std::optional<BlockInfo> info = stat_block(name, {.inspect = false});
    const std::uint64_t inode = info ? info->inode : 0;
    std::lock_guard lock(mutex);
    auto it = cache.find(name);
    if (it == cache.end() || it->second.first != inode) {
        // Read-only first: a frozen heap keeps that mapping; one still open is mapped again,
        // read-write (its locks are written).
        SharedMemory probe = SharedMemory::attach(name, {.access = Access::read_only});
        const bool frozen =
            is_heap(probe) && (reinterpret_cast<const HeapHeader*>(probe.data())->state.load() &
                               detail::heap_frozen) != 0;
        SharedHeap heap = frozen ? open(std::move(probe)) : attach(name);
        it =
            cache.insert_or_assign(std::string(name), std::make_pair(inode, std::move(heap))).first;
    }
    return it->second.second;
}

bool SharedHeap::is_heap(const SharedMemory& block) noexcept {
    return block.is_open() && !refusal(block).has_value();
}

HeapSegment& SharedHeap::segment() const {
    if (!segment_)
        throw std::logic_error("SharedHeap: no heap is open (default-constructed or moved from)");
    return *segment_;
}

HeapHeader& SharedHeap::header() const {
    segment();  // the check
    // The header is shared state, changed through the mutexes' and the state's atomics.
    return *reinterpret_cast<HeapHeader*>(const_cast<std::byte*>(block_.data()));  // NOLINT
}

void SharedHeap::check_writable(std::string_view object) const {
    const HeapState s = state();
    if (s == HeapState::writable) return;
    if (s == HeapState::frozen)
        throw HeapFrozen(
            fmt::format("heap '{}' is frozen: '{}' cannot be made or destroyed", name(), object));
    throw HeapInconsistent(fmt::format(
        "heap '{}' is inconsistent (process {} died holding its lock): '{}' cannot be made or "
        "destroyed",
        name(), dead_pid(), object));
}

void SharedHeap::throw_index_torn(std::string_view object) const {
    throw HeapInconsistent(fmt::format(
        "heap '{}': process {} died while changing the index of named objects; '{}' cannot be "
        "looked up",
        name(), dead_pid(), object));
}

void SharedHeap::freeze() {
    if (frozen()) return;
    check_writable("(freeze)");
    HeapHeader& h = header();
    auto* allocator_lock =
        reinterpret_cast<detail::HeapLock*>(reinterpret_cast<char*>(&h) + h.allocator_lock);
    // Under both locks, in Boost's order (index, then allocation): no naming and no allocation
    // is half done when the heap turns read-only.
    auto mark = [&] {
        std::lock_guard allocation(*allocator_lock);
        h.state.fetch_or(detail::heap_frozen, std::memory_order_release);
    };
    segment().get_segment_manager()->atomic_func(mark);
}

bool SharedHeap::frozen() const {
    return (header().state.load(std::memory_order_acquire) & detail::heap_frozen) != 0;
}

HeapState SharedHeap::state() const {
    HeapHeader& h = header();
    std::uint32_t s = h.state.load(std::memory_order_acquire);
    if ((s & (detail::heap_poisoned | detail::heap_frozen)) == 0 && !block_.read_only()) {
        // A holder that died is found by the next locker; a question about the state must not
        // wait for one.
        for (std::int64_t offset : {h.index_lock, h.allocator_lock})
            reinterpret_cast<detail::HeapLock*>(reinterpret_cast<char*>(&h) + offset)
                ->poison_if_holder_died();
        s = h.state.load(std::memory_order_acquire);
    }
    if ((s & detail::heap_index_poisoned) != 0) return HeapState::index_inconsistent;
    if ((s & detail::heap_allocator_poisoned) != 0) return HeapState::inconsistent;
    if ((s & detail::heap_frozen) != 0) return HeapState::frozen;
    return HeapState::writable;
}

pid_t SharedHeap::dead_pid() const {
    const HeapState s = state();
    return s == HeapState::inconsistent || s == HeapState::index_inconsistent
               ? header().dead_pid.load()
               : 0;
}

std::size_t SharedHeap::free_bytes() const {
    return segment().get_free_memory();  // a read of the algorithm's counter
}

std::vector<SharedHeap::NamedObject> SharedHeap::named_objects(
    std::chrono::milliseconds timeout) const {
    if (state() == HeapState::index_inconsistent)
        throw HeapInconsistent(fmt::format(
            "heap '{}': process {} died while changing the index of named objects; it cannot "
            "be listed",
            name(), dead_pid()));
    std::vector<NamedObject> out;
    auto list = [&] {
        auto* manager = segment().get_segment_manager();
        for (auto it = manager->named_begin(); it != manager->named_end(); ++it) {
            out.push_back({std::string(it->name(), it->name_length()),
                           it->m_val->get_block_header()->value_bytes()});
        }
    };
    if (frozen()) {
        list();
    } else {
        // A bounded wait: the index lock is held for an allocation, never for long, but a tool
        // must not hang on a process that stopped holding it.
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        auto pause = std::chrono::microseconds(1);
        while (!segment().get_segment_manager()->try_atomic_func(list)) {
            if (std::chrono::steady_clock::now() >= deadline) {
                const auto& h = header();
                const auto* lock = reinterpret_cast<const detail::HeapLock*>(
                    reinterpret_cast<const char*>(&h) + h.index_lock);
                throw std::runtime_error(
                    fmt::format("heap '{}': its index lock stayed held (by thread {}) for {} ms",
                                name(), lock->state().holder_tid, timeout.count()));
            }
            std::this_thread::sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::microseconds(1000));
        }
    }
    std::sort(out.begin(), out.end(),
              [](const NamedObject& a, const NamedObject& b) { return a.name < b.name; });
    return out;
}

void SharedHeap::throw_boost(std::string_view object,
                             const boost::interprocess::interprocess_exception& e) const {
    if (e.get_error_code() == boost::interprocess::already_exists_error)
        throw std::invalid_argument(
            fmt::format("heap '{}' has an object named '{}' already", name(), object));
    throw std::runtime_error(fmt::format("heap '{}', object '{}': {}", name(), object, e.what()));
}

void SharedHeap::throw_full(std::string_view object) const {
    throw HeapFull(
        fmt::format("heap '{}' has no room for '{}' ({} bytes free of {}): create it "
                    "bigger",
                    name(), object, free_bytes(), size()));
}

}  // namespace shmpool
