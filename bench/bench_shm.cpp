// Benchmarks of the shm layer: ShareableList get/set/create/attach, SharedMemory create/attach,
// and the same block operations as raw system calls (the floor). CPython's side is timed by
// cpython_shm.py in the same `make bench` run; run_benchmarks.py prints the ratios.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "shmpool/shm/robust_mutex.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/shared_heap.hpp"

using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;

namespace {

const std::string bench_name = "shmpool_bench_" + std::to_string(::getpid());
constexpr std::size_t block_size = 4096;

// The item of each type used by get/set: index into typed_list().
enum Item { int_item, float_item, bool_item, none_item, str_item, bytes_item };

std::vector<Value> typed_values() {
    return {123456789, 2.5, true, shmpool::none, "short text", shmpool::Bytes("raw bytes")};
}

void list_get(benchmark::State& state) {
    auto list = ShareableList::create(typed_values(), {.track = false});
    const auto index = state.range(0);
    for (auto _ : state) {
        Value v = list.get(index);
        benchmark::DoNotOptimize(v);
    }
    list.unlink();
    state.SetItemsProcessed(state.iterations());
}

void list_set(benchmark::State& state) {
    auto values = typed_values();
    auto list = ShareableList::create(values, {.track = false});
    const auto index = state.range(0);
    const Value v = values[static_cast<std::size_t>(index)];
    for (auto _ : state) {
        list.set(index, v);
        benchmark::ClobberMemory();
    }
    list.unlink();
    state.SetItemsProcessed(state.iterations());
}

std::vector<Value> mixed_1000() {
    std::vector<Value> items;
    for (int i = 0; i < 1000; ++i) {
        switch (i % 6) {
            case 0:
                items.emplace_back(i);
                break;
            case 1:
                items.emplace_back(i * 0.5);
                break;
            case 2:
                items.emplace_back(i % 2 == 0);
                break;
            case 3:
                items.emplace_back(shmpool::none);
                break;
            case 4:
                items.emplace_back(fmt::format("item {}", i));
                break;
            default:
                items.emplace_back(shmpool::Bytes(fmt::format("b{}", i)));
                break;
        }
    }
    return items;
}

void list_create_1000_mixed(benchmark::State& state) {
    const auto items = mixed_1000();
    for (auto _ : state) {
        auto list = ShareableList::create(bench_name, items);
        list.close();
        SharedMemory::remove(bench_name);
    }
}

void list_attach_1000_mixed(benchmark::State& state) {
    auto owner = ShareableList::create(bench_name, mixed_1000());
    for (auto _ : state) {
        auto list = ShareableList::attach(bench_name);
        benchmark::DoNotOptimize(list.size());
    }
    owner.unlink();
}

void shm_create_close_unlink(benchmark::State& state) {
    for (auto _ : state) {
        SharedMemory shm = SharedMemory::create(bench_name, block_size);
        shm.close();
        SharedMemory::remove(bench_name);
    }
}

void shm_attach_close(benchmark::State& state) {
    SharedMemory owner = SharedMemory::create(bench_name, block_size);
    for (auto _ : state) {
        SharedMemory shm = SharedMemory::attach(bench_name);
        benchmark::DoNotOptimize(shm.data());
    }
    owner.unlink();
}

// The floor: the system calls any implementation must make, with nothing else.
void raw_create_close_unlink(benchmark::State& state) {
    const std::string path = "/" + bench_name;
    for (auto _ : state) {
        int fd = ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || ::ftruncate(fd, block_size) != 0) state.SkipWithError("shm_open/ftruncate");
        void* p = ::mmap(nullptr, block_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        benchmark::DoNotOptimize(p);
        ::munmap(p, block_size);
        ::close(fd);
        ::shm_unlink(path.c_str());
    }
}

void raw_attach_close(benchmark::State& state) {
    SharedMemory owner = SharedMemory::create(bench_name, block_size);
    const std::string path = "/" + bench_name;
    for (auto _ : state) {
        int fd = ::shm_open(path.c_str(), O_RDWR, 0);
        struct stat st {};
        ::fstat(fd, &st);
        void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE,
                         MAP_SHARED, fd, 0);
        benchmark::DoNotOptimize(p);
        ::munmap(p, static_cast<std::size_t>(st.st_size));
        ::close(fd);
    }
    owner.unlink();
}

void shm_create_close_unlink_untracked(benchmark::State& state) {
    for (auto _ : state) {
        SharedMemory shm = SharedMemory::create(bench_name, block_size, {.track = false});
        shm.close();
        SharedMemory::remove(bench_name);
    }
}

// Uncontended lock + unlock: shmpool's RobustMutex in a guarded block...
void robust_mutex_lock_unlock(benchmark::State& state) {
    SharedMemory shm = SharedMemory::create(bench_name, 64, {.track = false, .guarded = true});
    shmpool::RobustMutex& m = shm.mutex();
    for (auto _ : state) {
        (void)m.lock();
        m.unlock();
    }
    shm.unlink();
}

// ...a bare pthread mutex with default attributes...
void pthread_mutex_lock_unlock(benchmark::State& state) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    for (auto _ : state) {
        pthread_mutex_lock(&m);
        pthread_mutex_unlock(&m);
    }
}

// ...and a bare robust, process-shared pthread mutex in shared memory.
void pthread_robust_mutex_lock_unlock(benchmark::State& state) {
    SharedMemory shm = SharedMemory::create(bench_name, 64, {.track = false});
    auto* m = reinterpret_cast<pthread_mutex_t*>(shm.data());
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &attr);
    for (auto _ : state) {
        pthread_mutex_lock(m);
        pthread_mutex_unlock(m);
    }
    shm.unlink();
}

// A SharedHeap's map against a std::map in this process's memory, with the same 1,000,000
// string keys ("w" + 7 digits) mapping to their number. The lookups go through a second,
// read-only mapping of the frozen heap at another address: what a worker of a pool sees.
constexpr std::uint32_t map_entries = 1'000'000;
using HeapMap = shmpool::SharedMap<shmpool::SharedString, std::uint32_t>;

std::string map_key(std::uint32_t i) {
    return fmt::format("w{:07}", i);
}
// The i-th key in a scattered order (a multiplicative hash modulo the entry count: a
// permutation). Both builds insert the keys in this order, without hints.
std::uint32_t scattered(std::uint32_t i) {
    return static_cast<std::uint32_t>((std::uint64_t{i} * 2654435761U) % map_entries);
}
// The keys looked up: the first 4096 in that order.
const std::vector<std::string>& lookup_keys() {
    static const std::vector<std::string> keys = [] {
        std::vector<std::string> k;
        for (std::uint32_t i = 0; i < 4096; ++i)
            k.push_back(map_key(scattered(i)));
        return k;
    }();
    return keys;
}
std::size_t heap_bytes_for_map() {
    return std::size_t{160} << 20;  // a node, a key and slack per entry
}
void fill_heap_map(shmpool::SharedHeap& heap, HeapMap& map) {
    for (std::uint32_t i = 0; i < map_entries; ++i)
        map.emplace(heap.string(map_key(scattered(i))), scattered(i));
}

void heap_map_lookup(benchmark::State& state) {
    auto heap = shmpool::SharedHeap::create(heap_bytes_for_map());
    fill_heap_map(heap, heap.construct<HeapMap>("map", heap.allocator()));
    heap.freeze();
    const auto reader = shmpool::SharedHeap::attach(heap.name(), shmpool::Access::read_only);
    const HeapMap& map = *reader.find<HeapMap>("map");
    const auto& keys = lookup_keys();
    std::size_t i = 0;
    for (auto _ : state) {
        const std::string& key = keys[i++ & 4095];
        benchmark::DoNotOptimize(map.find(std::string_view(key))->second);
    }
    heap.unlink();
}

void local_map_lookup(benchmark::State& state) {
    std::map<std::string, std::uint32_t, std::less<>> map;
    for (std::uint32_t i = 0; i < map_entries; ++i)
        map.emplace(map_key(scattered(i)), scattered(i));
    const auto& keys = lookup_keys();
    std::size_t i = 0;
    for (auto _ : state) {
        const std::string& key = keys[i++ & 4095];
        benchmark::DoNotOptimize(map.find(std::string_view(key))->second);
    }
}

void heap_map_build_1m(benchmark::State& state) {
    for (auto _ : state) {
        auto heap = shmpool::SharedHeap::create(heap_bytes_for_map());
        fill_heap_map(heap, heap.construct<HeapMap>("map", heap.allocator()));
        state.PauseTiming();
        heap.unlink();
        heap = {};
        state.ResumeTiming();
    }
}

void local_map_build_1m(benchmark::State& state) {
    for (auto _ : state) {
        std::map<std::string, std::uint32_t, std::less<>> map;
        for (std::uint32_t i = 0; i < map_entries; ++i)
            map.emplace(map_key(scattered(i)), scattered(i));
        benchmark::DoNotOptimize(map.size());
        state.PauseTiming();
        map = {};
        state.ResumeTiming();
    }
}

void item_args(benchmark::internal::Benchmark* b) {
    b->ArgName("item");
    for (int i = int_item; i <= bytes_item; ++i)
        b->Arg(i);
}

}  // namespace

BENCHMARK(list_get)->Apply(item_args);
BENCHMARK(list_set)->Apply(item_args);
BENCHMARK(list_create_1000_mixed);
BENCHMARK(list_attach_1000_mixed);
BENCHMARK(shm_create_close_unlink);
BENCHMARK(shm_create_close_unlink_untracked);
BENCHMARK(robust_mutex_lock_unlock);
BENCHMARK(pthread_mutex_lock_unlock);
BENCHMARK(pthread_robust_mutex_lock_unlock);
BENCHMARK(raw_create_close_unlink);
BENCHMARK(shm_attach_close);
BENCHMARK(raw_attach_close);

BENCHMARK(heap_map_lookup);
BENCHMARK(local_map_lookup);
BENCHMARK(heap_map_build_1m)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(local_map_build_1m)->Unit(benchmark::kMillisecond)->Iterations(3);

BENCHMARK_MAIN();
