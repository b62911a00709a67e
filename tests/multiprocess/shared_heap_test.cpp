// SharedHeap across real processes: built in one, read in another at another address; a process
// SIGKILLed holding the allocation lock or the index lock (no deadlock, a clear error, readers
// still served); freezing; a full /dev/shm; blocks that are not heaps.
#include "shmpool/shm/shared_heap.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "posix/sys.hpp"
#include "shmpool/shm/error.hpp"
#include "test_support.hpp"

using shmpool::Access;
using shmpool::HeapFrozen;
using shmpool::HeapFull;
using shmpool::HeapInconsistent;
using shmpool::HeapState;
using shmpool::SharedHeap;
using shmpool::SharedMap;
using shmpool::SharedMemory;
using shmpool::SharedString;
using shmpool::SharedUnorderedMap;
using shmpool::SharedVector;
using shmpool::test::unique_name;

namespace {

using Vocabulary = SharedMap<SharedString, int>;

struct Heap {
    std::string name = unique_name();
    SharedHeap heap;
    explicit Heap(std::size_t bytes = std::size_t{1} << 20)
        : heap(SharedHeap::create(name, bytes)) {}
    ~Heap() {
        try {
            SharedMemory::remove(name);
        } catch (...) {
        }
    }
};

// Runs `body` in a forked child; returns its exit status as waitpid gives it. The child exits
// 0 if body returns true, 1 if false, 2 if it throws.
template <class Body>
int in_child(Body body) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        int code = 2;
        try {
            code = body() ? 0 : 1;
        } catch (...) {
        }
        ::_exit(code);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

void fill(SharedHeap& heap) {
    auto& vocab = heap.construct<Vocabulary>("vocab", heap.allocator());
    for (int i = 0; i < 1000; ++i)
        vocab.emplace(heap.string("word" + std::to_string(i)), i);
    auto& lines = heap.construct<SharedVector<SharedString>>("lines", heap.allocator());
    lines.push_back(heap.string("the first line"));
    lines.push_back(heap.string(std::string(300, 'x')));  // longer than the small-string buffer
    auto& ids =
        heap.construct<SharedUnorderedMap<SharedString, std::int64_t>>("ids", heap.allocator());
    ids.emplace(heap.string("answer"), 42);
}

bool reads_back(const SharedHeap& heap) {
    const auto* vocab = heap.find<Vocabulary>("vocab");
    const auto* lines = heap.find<SharedVector<SharedString>>("lines");
    const auto* ids = heap.find<SharedUnorderedMap<SharedString, std::int64_t>>("ids");
    if (vocab == nullptr || lines == nullptr || ids == nullptr) return false;
    const auto w = vocab->find(std::string_view("word777"));
    const auto a = ids->find(std::string_view("answer"));
    return vocab->size() == 1000 && w != vocab->end() && w->second == 777 && lines->size() == 2 &&
           (*lines)[0] == std::string_view("the first line") && (*lines)[1].size() == 300 &&
           a != ids->end() && a->second == 42 && heap.find<Vocabulary>("nothing") == nullptr;
}

// Forks a child that attaches the heap, takes a lock and dies of SIGKILL holding it: `which` is
// "allocator" (the allocation lock), "index" (naming an object whose constructor kills its
// process: the index is being changed) or "reader" (the index lock, only reading).
struct DiesWhileNamed {
    DiesWhileNamed() { ::raise(SIGKILL); }
};
pid_t die_holding(const std::string& name, std::string_view which) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        SharedHeap heap = SharedHeap::attach(name);
        if (which == "index") heap.construct<DiesWhileNamed>("doomed");
        // The locks Boost takes, reached through the header.
        auto* header = reinterpret_cast<shmpool::detail::HeapHeader*>(
            const_cast<std::byte*>(heap.block().data()));
        auto* lock = reinterpret_cast<shmpool::detail::HeapLock*>(
            reinterpret_cast<char*>(header) +
            (which == "reader" ? header->index_lock : header->allocator_lock));
        lock->lock();
        ::raise(SIGKILL);
        ::_exit(3);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    return pid;
}

TEST(SharedHeap, AMapBuiltInOneProcessIsReadInAnotherAtAnotherAddress) {
    Heap h;
    fill(h.heap);
    const std::byte* here = h.heap.block().data();
    const int status = in_child([&] {
        SharedHeap other = SharedHeap::attach(h.name);
        // The parent's mapping is still in this child: the new one lies elsewhere.
        return other.block().data() != here && reads_back(other);
    });
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_TRUE(reads_back(h.heap));
}

TEST(SharedHeap, NamedObjectsAreListedWithTheirSizesAndFreeSpaceShrinks) {
    Heap h;
    const std::size_t before = h.heap.free_bytes();
    fill(h.heap);
    EXPECT_LT(h.heap.free_bytes(), before);
    const auto objects = h.heap.named_objects();
    ASSERT_EQ(objects.size(), 3u);
    EXPECT_EQ(objects[0].name, "ids");
    EXPECT_EQ(objects[1].name, "lines");
    EXPECT_EQ(objects[2].name, "vocab");
    EXPECT_EQ(objects[2].bytes, sizeof(Vocabulary));
    EXPECT_TRUE(h.heap.destroy<Vocabulary>("vocab"));
    EXPECT_FALSE(h.heap.destroy<Vocabulary>("vocab"));
    EXPECT_EQ(h.heap.named_objects().size(), 2u);
}

TEST(SharedHeap, ATakenNameAndAFullHeapAreClearErrors) {
    Heap h(std::size_t{64} << 10);
    h.heap.construct<int>("n", 1);
    try {
        h.heap.construct<int>("n", 2);
        ADD_FAILURE() << "a second 'n' was made";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("'n'"), std::string::npos) << e.what();
    }
    try {
        h.heap.construct<std::array<char, 1 << 20>>("huge");
        ADD_FAILURE() << "1 MiB fitted a 64 KiB heap";
    } catch (const HeapFull& e) {
        EXPECT_NE(std::string(e.what()).find(h.name), std::string::npos) << e.what();
    }
    EXPECT_EQ(*h.heap.find<int>("n"), 1);
    EXPECT_EQ(h.heap.state(), HeapState::writable);
}

TEST(SharedHeap, AProcessKilledHoldingTheAllocationLockPoisonsTheHeapWithoutADeadlock) {
    Heap h;
    fill(h.heap);
    const pid_t dead = die_holding(h.name, "allocator");
    // Asking is enough to find the death (nobody has locked since); no wait, the robust lock
    // tells at once.
    EXPECT_EQ(h.heap.state(), HeapState::inconsistent);
    EXPECT_EQ(h.heap.dead_pid(), dead);
    try {
        h.heap.construct<int>("after", 1);
        ADD_FAILURE() << "allocated in a poisoned heap";
    } catch (const HeapInconsistent& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(h.name), std::string::npos) << what;
        EXPECT_NE(what.find(std::to_string(dead)), std::string::npos) << what;
    }
    EXPECT_EQ(h.heap.state(), HeapState::inconsistent);
    EXPECT_EQ(h.heap.dead_pid(), dead);
    EXPECT_THROW(h.heap.construct<int>("again", 1), HeapInconsistent);  // for good
    // Readers are still served: lookups, the list, another process attaching.
    EXPECT_TRUE(reads_back(h.heap));
    EXPECT_EQ(h.heap.named_objects().size(), 3u);
    const int status = in_child([&] {
        SharedHeap other = SharedHeap::attach(h.name);
        return other.state() == HeapState::inconsistent && reads_back(other);
    });
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(SharedHeap, AProcessKilledWhileNamingAnObjectRefusesLookupsToo) {
    Heap h;
    fill(h.heap);
    const pid_t dead = die_holding(h.name, "index");
    EXPECT_EQ(h.heap.state(), HeapState::index_inconsistent);
    EXPECT_THROW(h.heap.find<Vocabulary>("vocab"), HeapInconsistent);
    EXPECT_EQ(h.heap.dead_pid(), dead);
    EXPECT_THROW(h.heap.named_objects(), HeapInconsistent);
    EXPECT_THROW(h.heap.construct<int>("after", 1), HeapInconsistent);
}

TEST(SharedHeap, AReaderKilledHoldingTheIndexLockLeavesTheHeapWritable) {
    // A worker killed in the middle of a lookup (a timeout, say) changed nothing: the heap goes
    // on as before, for lookups and allocations alike.
    Heap h;
    fill(h.heap);
    die_holding(h.name, "reader");
    EXPECT_EQ(h.heap.state(), HeapState::writable);
    EXPECT_TRUE(reads_back(h.heap));
    EXPECT_EQ(h.heap.construct<int>("after", 7), 7);
    EXPECT_EQ(h.heap.named_objects().size(), 4u);
}

TEST(SharedHeap, FreesAfterAPoisoningOrAFreezeAreIgnoredNeverThrown) {
    // A container that owns heap memory and is destroyed after the heap turned inconsistent or
    // frozen: its destructor frees, and a free that threw would end the program.
    Heap h;
    std::optional<SharedString> held(h.heap.string(std::string(200, 'p')));  // heap memory
    auto& vector = h.heap.construct<SharedVector<SharedString>>("v", h.heap.allocator());
    vector.push_back(h.heap.string(std::string(200, 'q')));
    die_holding(h.name, "allocator");
    held.reset();    // a free in a poisoned heap: the memory stays with the heap
    vector.clear();  // the same inside a container
    EXPECT_EQ(h.heap.state(), HeapState::inconsistent);
    EXPECT_THROW(h.heap.destroy<SharedVector<SharedString>>("v"), HeapInconsistent);
    EXPECT_THROW(h.heap.freeze(), HeapInconsistent);

    Heap frozen;
    std::optional<SharedString> kept(frozen.heap.string(std::string(200, 'r')));
    frozen.heap.freeze();
    frozen.heap.freeze();  // twice: nothing more
    const std::size_t free = frozen.heap.free_bytes();
    kept.reset();
    EXPECT_EQ(frozen.heap.free_bytes(), free);
    EXPECT_THROW(frozen.heap.destroy<int>("x"), HeapFrozen);
}

TEST(SharedHeap, AnEmptyHeapObjectIsALogicErrorNotACrash) {
    SharedHeap empty;
    EXPECT_FALSE(empty.is_open());
    EXPECT_THROW(empty.state(), std::logic_error);
    EXPECT_THROW(empty.find<int>("x"), std::logic_error);
    EXPECT_THROW(empty.construct<int>("x", 1), std::logic_error);
}

TEST(SharedHeap, AFrozenHeapIsReadLockFreeThroughAReadOnlyMapping) {
    Heap h;
    fill(h.heap);
    EXPECT_THROW(SharedHeap::attach(h.name, Access::read_only), std::logic_error);
    h.heap.freeze();
    EXPECT_EQ(h.heap.state(), HeapState::frozen);
    EXPECT_THROW(h.heap.construct<int>("late", 1), HeapFrozen);
    auto& vocab = *h.heap.find<Vocabulary>("vocab");
    EXPECT_THROW(vocab.emplace(h.heap.string("new"), 1), HeapFrozen);  // a container's allocation
    EXPECT_EQ(vocab.size(), 1000u);
    const int status = in_child([&] {
        SharedHeap reader = SharedHeap::attach(h.name, Access::read_only);
        return reader.block().read_only() && reads_back(reader) &&
               reader.named_objects().size() == 3;
    });
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_TRUE(SharedHeap::cached(h.name).block().read_only());
}

TEST(SharedHeap, AFullDevShmIsAnErrorAtCreationAndNothingIsLeft) {
    const std::string name = unique_name();
    shmpool::sys::inject_failure(shmpool::sys::Call::fallocate, ENOSPC);
    try {
        SharedHeap::create(name, 1 << 20);
        ADD_FAILURE() << "created on a full /dev/shm";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOSPC);
    }
    shmpool::sys::clear_injected_failures();
    EXPECT_THROW(SharedMemory::attach(name), std::system_error);
}

TEST(SharedHeap, ABlockThatIsNotAHeapOrOfAnotherLayoutIsRefused) {
    const std::string name = unique_name();
    {
        SharedMemory raw = SharedMemory::create(name, std::size_t{64} << 10);
        std::memset(raw.data(), 0x5a, raw.size());
        EXPECT_FALSE(SharedHeap::is_heap(raw));
    }
    try {
        SharedHeap::attach(name);
        ADD_FAILURE() << "random bytes attached as a heap";
    } catch (const shmpool::CorruptedBlock& e) {
        EXPECT_NE(std::string(e.what()).find("not a shmpool heap"), std::string::npos) << e.what();
    }
    SharedMemory::remove(name);
    {
        SharedMemory small = SharedMemory::create(name, 100);
        EXPECT_THROW(SharedHeap::attach(name), shmpool::CorruptedBlock);
    }
    SharedMemory::remove(name);
    Heap h;
    EXPECT_TRUE(SharedHeap::is_heap(h.heap.block()));
    {
        SharedMemory block = SharedMemory::attach(h.name);
        auto* header = reinterpret_cast<shmpool::detail::HeapHeader*>(block.data());
        header->boost_version = 107000;  // as if an older build wrote it
    }
    try {
        SharedHeap::attach(h.name);
        ADD_FAILURE() << "a heap of another build attached";
    } catch (const shmpool::CorruptedBlock& e) {
        EXPECT_NE(std::string(e.what()).find("another build"), std::string::npos) << e.what();
    }
}

TEST(SharedHeap, BadSizesAndOptionsAreRefusedBeforeAnythingIsCreated) {
    const std::string name = unique_name();
    EXPECT_THROW(SharedHeap::create(name, 100), std::invalid_argument);
    EXPECT_THROW(SharedHeap::create(name, 1 << 20, {.guarded = true}), std::invalid_argument);
    EXPECT_THROW(SharedMemory::attach(name), std::system_error);
}

}  // namespace
