// Benchmarks of the worker pool against its floors: a raw futex ping-pong between two processes
// (sleeping and spinning), and tbb::parallel_for in-process. CPython's Pool is timed by
// cpython_pool.py in the same `make bench` run; run_benchmarks.py prints the ratios.
#include <benchmark/benchmark.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_pipeline.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmpool/framework/pipeline.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"

namespace {

int nothing(int x) {
    return x;
}
SHMPOOL_TASK(nothing_task, nothing);

// A memory-bound kernel: a[i] = a[i] * 1.0001 + 1 over a range of a shared float64 array.
void scale(std::string array, std::size_t begin, std::size_t end) {
    auto& a = shmpool::SharedArray<double>::cached(array);
    double* p = a.data();
    for (std::size_t i = begin; i < end; ++i)
        p[i] = p[i] * 1.0001 + 1.0;
}
SHMPOOL_TASK(scale_task, scale);

int kill_self(int) {
    ::kill(::getpid(), SIGKILL);
    return 0;
}
SHMPOOL_TASK(kill_self_task, kill_self);

long bump(int x) {
    return static_cast<long>(x) + 1;
}
SHMPOOL_TASK(bump_task, bump);
void consume(long x) {
    static long total = 0;
    total += x;
}
SHMPOOL_TASK(consume_task, consume);

// A 64 MiB result, bigger than any slot: the task returns a copy of a string it holds, and the
// result travels in a block of its own.
constexpr std::size_t big_result_bytes = std::size_t{64} << 20;
std::string big_result(int /*x*/) {
    static const std::string held(big_result_bytes, 'r');
    return held;
}
SHMPOOL_TASK(big_result_task, big_result);

constexpr std::size_t gib_doubles = (std::size_t{1} << 30) / sizeof(double);

void pin(pid_t pid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(pid, sizeof set, &set);
}

void pool_submit_get(benchmark::State& state) {
    shmpool::Pool pool({.workers = 1});
    for (auto _ : state)
        benchmark::DoNotOptimize(pool.submit(nothing_task, 1).get());
}

// The same with every thread asleep first (a pause longer than any spin before each call).
void pool_submit_get_asleep(benchmark::State& state) {
    shmpool::Pool pool({.workers = 1});
    for (auto _ : state) {
        state.PauseTiming();
        std::this_thread::sleep_for(std::chrono::microseconds(300));  // every spinner falls asleep
        state.ResumeTiming();
        benchmark::DoNotOptimize(pool.submit(nothing_task, 1).get());
    }
}

void pool_map_chunksize_1(benchmark::State& state) {
    shmpool::Pool pool({.workers = 2});
    std::vector<int> items(20000);
    for (auto _ : state)
        benchmark::DoNotOptimize(pool.map(nothing_task, items, 1));
    state.SetItemsProcessed(state.iterations() * static_cast<long>(items.size()));
}

void pool_map_default_chunks(benchmark::State& state) {
    shmpool::Pool pool({.workers = 2});
    std::vector<int> items(1000000);
    for (auto _ : state)
        benchmark::DoNotOptimize(pool.map(nothing_task, items));
    state.SetItemsProcessed(state.iterations() * static_cast<long>(items.size()));
}

void pool_for_each_index_1gib(benchmark::State& state) {
    auto array = shmpool::SharedArray<double>::create(gib_doubles);
    shmpool::Pool pool({.workers = 2});
    pool.for_each_index(scale_task, array.size(), array.size() / 64,
                        array.name());  // warm the pages
    for (auto _ : state)
        pool.for_each_index(scale_task, array.size(), array.size() / 64, array.name());
    state.SetBytesProcessed(state.iterations() * static_cast<long>(array.size() * sizeof(double)) *
                            2);
    array.unlink();
}

void tbb_parallel_for_1gib(benchmark::State& state) {
    auto array = shmpool::SharedArray<double>::create(gib_doubles);
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, 2);
    double* p = array.data();
    auto body = [p](const tbb::blocked_range<std::size_t>& r) {
        for (std::size_t i = r.begin(); i < r.end(); ++i)
            p[i] = p[i] * 1.0001 + 1.0;
    };
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, array.size(), array.size() / 64), body);
    for (auto _ : state) {
        tbb::parallel_for(tbb::blocked_range<std::size_t>(0, array.size(), array.size() / 64),
                          body);
    }
    state.SetBytesProcessed(state.iterations() * static_cast<long>(array.size() * sizeof(double)) *
                            2);
    array.unlink();
}

// The raw floor of for_each_index: two forked processes, each sweeping a fixed half of the same
// shared block with the same kernel, started and awaited through futexes. Their warm-up sweep
// faults their page tables in, so the timed sweeps are what the pool does at best.
void raw_two_processes_halves_1gib(benchmark::State& state) {
    auto array = shmpool::SharedArray<double>::create(gib_doubles);
    auto* words = static_cast<std::atomic<std::uint32_t>*>(
        ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    auto* go = &words[0];     // the round to run; UINT32_MAX: exit
    auto* done = &words[16];  // halves finished, over all rounds
    const std::size_t half = array.size() / 2;
    std::array<pid_t, 2> children{};
    for (std::size_t c = 0; c < 2; ++c) {
        children[c] = ::fork();
        if (children[c] != 0) continue;
        double* p = array.data() + c * half;
        for (std::uint32_t seen = 0;; ++seen) {
            while (go->load(std::memory_order_acquire) == seen)
                ::syscall(SYS_futex, go, FUTEX_WAIT, seen, nullptr, nullptr, 0);
            if (go->load() == UINT32_MAX) ::_exit(0);
            for (std::size_t i = 0; i < half; ++i)
                p[i] = p[i] * 1.0001 + 1.0;
            done->fetch_add(1, std::memory_order_release);
            ::syscall(SYS_futex, done, FUTEX_WAKE, 1, nullptr, nullptr, 0);
        }
    }
    std::uint32_t round = 0;
    auto sweep = [&] {
        go->store(++round, std::memory_order_release);
        ::syscall(SYS_futex, go, FUTEX_WAKE, 2, nullptr, nullptr, 0);
        for (std::uint32_t d; (d = done->load(std::memory_order_acquire)) != 2 * round;)
            ::syscall(SYS_futex, done, FUTEX_WAIT, d, nullptr, nullptr, 0);
    };
    sweep();  // the warm-up: each process faults its half in
    for (auto _ : state)
        sweep();
    go->store(UINT32_MAX);
    ::syscall(SYS_futex, go, FUTEX_WAKE, 2, nullptr, nullptr, 0);
    for (pid_t child : children)
        ::waitpid(child, nullptr, 0);
    ::munmap(words, 4096);
    state.SetBytesProcessed(state.iterations() * static_cast<long>(array.size() * sizeof(double)) *
                            2);
    array.unlink();
}

// From a worker's SIGKILL (the task kills its own worker) to WorkerCrashed in get(): the
// death noticed (pidfd), the slot resolved, the failure delivered. The replacement's start-up
// is not timed.
void pool_crash_surfaced(benchmark::State& state) {
    shmpool::Pool pool({.workers = 2, .max_retries = 0});
    for (auto _ : state) {
        auto t0 = std::chrono::steady_clock::now();
        try {
            pool.submit(kill_self_task, 0).get();
        } catch (const shmpool::WorkerCrashed&) {
        }
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        pool.map(nothing_task, std::vector<int>(8, 0), 1);  // both workers up again (not timed)
    }
}

// Three trivial stages, as tbb::parallel_pipeline's canonical shape: a serial source (here, in
// the parent), a parallel transform (2 workers), a serial_in_order sink (a worker). With the
// default options (argument 0) and with max_tokens = 1024, which was once needed to go fast.
constexpr int pipeline_items = 200000;

void pipeline_3_stages(benchmark::State& state) {
    for (auto _ : state) {
        shmpool::Pipeline p({.max_tokens = static_cast<std::size_t>(state.range(0))});
        p.source([i = 0]() mutable -> std::optional<int> {
             if (i == pipeline_items) return std::nullopt;
             return i++;
         })
            .stage(bump_task, shmpool::StageMode::parallel, 2)
            .stage(consume_task, shmpool::StageMode::serial_in_order);
        benchmark::DoNotOptimize(p.run());
    }
    state.SetItemsProcessed(state.iterations() * pipeline_items);
}

void tbb_pipeline_3_stages(benchmark::State& state) {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, 3);
    for (auto _ : state) {
        int i = 0;
        long total = 0;
        tbb::parallel_pipeline(
            1024, tbb::make_filter<void, int>(tbb::filter_mode::serial_in_order,
                                              [&](tbb::flow_control& fc) {
                                                  if (i == pipeline_items) fc.stop();
                                                  return i++;
                                              }) &
                      tbb::make_filter<int, long>(tbb::filter_mode::parallel,
                                                  [](int x) { return static_cast<long>(x) + 1; }) &
                      tbb::make_filter<long, void>(tbb::filter_mode::serial_in_order,
                                                   [&](long x) { total += x; }));
        benchmark::DoNotOptimize(total);
    }
    state.SetItemsProcessed(state.iterations() * pipeline_items);
}

void pool_result_64mib(benchmark::State& state) {
    shmpool::Pool pool({.workers = 1});
    (void)pool.submit(big_result_task, 0).get();  // the worker's string is built once, before
    for (auto _ : state) {
        std::string r = pool.submit(big_result_task, 0).get();
        benchmark::DoNotOptimize(r.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * big_result_bytes));
}

// The floor: one memcpy of 64 MiB between buffers already faulted in.
void memcpy_64mib(benchmark::State& state) {
    std::vector<char> from(big_result_bytes, 'r');
    std::vector<char> to(big_result_bytes, 0);
    for (auto _ : state) {
        std::memcpy(to.data(), from.data(), big_result_bytes);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * big_result_bytes));
}

// Start-up: from the constructor's call until both workers are attached and ready (the
// constructor returns then). Shutdown is timed separately.
void pool_startup_2_workers(benchmark::State& state) {
    const std::size_t slot_bytes = static_cast<std::size_t>(state.range(0)) << 10;
    for (auto _ : state) {
        auto t0 = std::chrono::steady_clock::now();
        std::optional<shmpool::Pool> pool;
        pool.emplace(shmpool::PoolOptions{.workers = 2, .slot_bytes = slot_bytes});
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        pool.reset();
    }
}

// The start methods (PoolOptions::start_method), range(0): 0 = exec, 1 = fork_server.
shmpool::StartMethod start_method(const benchmark::State& state) {
    return state.range(0) == 0 ? shmpool::StartMethod::exec : shmpool::StartMethod::fork_server;
}

// Start-up to the first result: the constructor (range(1) workers ready), then one submit→get.
void pool_startup_first_result(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(1));
    for (auto _ : state) {
        auto t0 = std::chrono::steady_clock::now();
        std::optional<shmpool::Pool> pool;
        pool.emplace(shmpool::PoolOptions{.workers = workers, .start_method = start_method(state)});
        benchmark::DoNotOptimize(pool->submit(nothing_task, 1).get());
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        pool.reset();
    }
}

// Respawn: from a worker's SIGKILL (sent from here) to a result from its replacement. With one
// worker, the task waits for the replacement to be ready: death noticed, the slot resolved, a new
// worker started and attached, one round trip.
void pool_respawn(benchmark::State& state) {
    shmpool::Pool pool({.workers = 1, .start_method = start_method(state)});
    pool.submit(nothing_task, 1).get();
    for (auto _ : state) {
        const pid_t victim = pool.worker_pids()[0];
        auto t0 = std::chrono::steady_clock::now();
        ::kill(victim, SIGKILL);
        benchmark::DoNotOptimize(pool.submit(nothing_task, 1).get());
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

// The floor of both: this program spawned range(0) times, each run ending at the top of main()
// (dynamic loading and static initialisation, nothing else), and waited for.
void spawn_floor(benchmark::State& state) {
    const std::string self = "/proc/self/exe";
    char* argv[] = {const_cast<char*>(self.c_str()), nullptr};
    std::vector<std::string> env_strings{"SHMPOOL_BENCH_EXIT_AT_ONCE=1"};
    for (char** e = environ; *e; ++e)
        env_strings.emplace_back(*e);
    std::vector<char*> env;
    for (auto& e : env_strings)
        env.push_back(e.data());
    env.push_back(nullptr);
    for (auto _ : state) {
        auto t0 = std::chrono::steady_clock::now();
        std::vector<pid_t> pids(static_cast<std::size_t>(state.range(0)));
        for (pid_t& pid : pids)
            ::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, env.data());
        for (pid_t pid : pids)
            ::waitpid(pid, nullptr, 0);
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

void pool_shutdown_2_workers(benchmark::State& state) {
    for (auto _ : state) {
        std::optional<shmpool::Pool> pool;
        pool.emplace(shmpool::PoolOptions{.workers = 2});
        auto t0 = std::chrono::steady_clock::now();
        pool.reset();
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

// The floor: one round trip between two processes over futexes in shared memory.
// range(0): 0 = both sleep (futex wait/wake each way), 1 = both spin; range(1): 1 = same core.
void raw_futex_ping_pong(benchmark::State& state) {
    const bool spin = state.range(0) == 1;
    const bool same_core = state.range(1) == 1;
    auto* words = static_cast<std::atomic<std::uint32_t>*>(
        ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    auto* ping = &words[0];
    auto* pong = &words[16];
    auto wait = [spin](std::atomic<std::uint32_t>* w, std::uint32_t old) {
        while (w->load(std::memory_order_acquire) == old) {
            if (!spin) ::syscall(SYS_futex, w, FUTEX_WAIT, old, nullptr, nullptr, 0);
        }
    };
    auto wake = [spin](std::atomic<std::uint32_t>* w) {
        w->fetch_add(1, std::memory_order_release);
        if (!spin) ::syscall(SYS_futex, w, FUTEX_WAKE, 1, nullptr, nullptr, 0);
    };
    pin(0, 0);
    pid_t child = ::fork();
    if (child == 0) {
        pin(0, same_core ? 0 : 1);
        for (std::uint32_t seen = 0;; ++seen) {
            wait(ping, seen);
            if (ping->load() == UINT32_MAX) ::_exit(0);
            wake(pong);
        }
    }
    std::uint32_t seen = 0;
    const bool idle_first =
        state.range(2) == 1;  // as pool_submit_get_asleep: 2 ms idle before each
    for (auto _ : state) {
        if (idle_first) {
            state.PauseTiming();
            std::this_thread::sleep_for(std::chrono::microseconds(300));
            state.ResumeTiming();
        }
        wake(ping);
        wait(pong, seen++);
    }
    ping->store(UINT32_MAX);
    ::syscall(SYS_futex, ping, FUTEX_WAKE, 1, nullptr, nullptr, 0);
    ::waitpid(child, nullptr, 0);
    ::munmap(words, 4096);
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; ++c)
        CPU_SET(c, &all);
    ::sched_setaffinity(0, sizeof all, &all);
}

}  // namespace

BENCHMARK(pool_submit_get)->UseRealTime();
BENCHMARK(pool_submit_get_asleep)->UseRealTime()->Iterations(300);
BENCHMARK(raw_futex_ping_pong)->Args({0, 0, 0})->Args({0, 1, 0})->Args({1, 0, 0})->UseRealTime();
BENCHMARK(raw_futex_ping_pong)->Args({0, 0, 1})->UseRealTime()->Iterations(300);
BENCHMARK(pool_map_chunksize_1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pool_map_default_chunks)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pool_for_each_index_1gib)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK(tbb_parallel_for_1gib)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK(raw_two_processes_halves_1gib)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);
BENCHMARK(pool_crash_surfaced)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(50);
BENCHMARK(pipeline_3_stages)
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);
BENCHMARK(tbb_pipeline_3_stages)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK(pool_startup_2_workers)->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pool_result_64mib)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK(memcpy_64mib)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK(pool_shutdown_2_workers)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pool_startup_first_result)
    ->Args({0, 2})
    ->Args({1, 2})
    ->Args({0, 8})
    ->Args({1, 8})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(pool_respawn)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(spawn_floor)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before any thread
    if (std::getenv("SHMPOOL_BENCH_EXIT_AT_ONCE") != nullptr) return 0;  // spawn_floor's runs
    shmpool::init(argc, argv);
    ::benchmark::Initialize(&argc, argv);
    ::benchmark::RunSpecifiedBenchmarks();
    ::benchmark::Shutdown();
}
