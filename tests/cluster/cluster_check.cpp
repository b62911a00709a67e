// The cluster tier's test program: every API of the pool, run the same way on one machine and
// under mpirun with several nodes; it prints one line per check, which must not differ between
// the two (tests/cluster/run_cluster_tests.py compares them).
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "shmpool/cluster/cluster.hpp"
#include "shmpool/framework/pipeline.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"

namespace {

long square(long x) {
    return x * x;
}
SHMPOOL_TASK(square_task, square);

std::string tag(const std::string& s, int n) {
    return s + "#" + std::to_string(n);
}
SHMPOOL_TASK(tag_task, tag);

int fail_on_seven(int x) {
    if (x == 7) throw std::domain_error("seven");
    return x;
}
SHMPOOL_TASK(fail_on_seven_task, fail_on_seven);

// Reads a shared array (replicated on every node) and writes back its range, doubled.
void double_range(const std::string& name, std::size_t begin, std::size_t end) {
    auto& a = shmpool::SharedArray<double>::cached(name);
    for (std::size_t i = begin; i < end; ++i)
        a[i] = 2 * a[i] + 1;
}
SHMPOOL_TASK(double_range_task, double_range);

double sum_of(const std::string& name) {
    const auto& a = shmpool::SharedArray<double>::cached(name);
    return std::accumulate(a.begin(), a.end(), 0.0);
}
SHMPOOL_TASK(sum_of_task, sum_of);

// On node 2, the first item the node's workers see kills its worker (once per node, marked in a
// file named after the node's supervisor): that item is retried there.
long crash_once_on_node_two(long x) {
    if (shmpool::cluster::this_node() == 2) {
        const char* dir = std::getenv("CLUSTER_CHECK_MARKS");  // NOLINT(concurrency-mt-unsafe)
        const std::string mark = fmt::format("{}/crash-{}", dir ? dir : "/tmp", ::getppid());
        if (::access(mark.c_str(), F_OK) != 0) {
            if (std::FILE* f = std::fopen(mark.c_str(), "w")) {
                fmt::print(f, "{}", x);  // the item (input i is i): its WorkerEvent must say so
                std::fclose(f);
            }
            ::kill(::getpid(), SIGKILL);
        }
    }
    return x * x;
}
SHMPOOL_TASK(crash_once_task, crash_once_on_node_two);

long always_crash_on_node_two(long x) {
    if (shmpool::cluster::this_node() == 2) ::kill(::getpid(), SIGKILL);
    return x;
}
SHMPOOL_TASK(always_crash_task, always_crash_on_node_two);

// On node 2, kills the node's supervisor (the worker's parent) while the map runs.
long kill_my_node(long x) {
    if (shmpool::cluster::this_node() == 2) ::kill(::getppid(), SIGKILL);
    return x;
}
SHMPOOL_TASK(kill_my_node_task, kill_my_node);

// A pipeline's stages: a source of 0..1999, two parallel stages, a serial sink.
std::optional<long> count_to_2000(std::uint64_t sequence) {
    if (sequence >= 2000) return std::nullopt;
    return static_cast<long>(sequence);
}
SHMPOOL_TASK(count_task, count_to_2000);

long plus_three(long x) {
    return x + 3;
}
SHMPOOL_TASK(plus_three_task, plus_three);

#ifdef CLUSTER_CHECK_OTHER
long cube(long x) {
    return x * x * x;
}
SHMPOOL_TASK(cube_task, cube);  // a task the ranks running cluster_check do not have
#endif

std::uint64_t digest(const std::vector<long>& v) {
    std::uint64_t h = 1469598103934665603ull;
    for (long x : v) {
        h ^= static_cast<std::uint64_t>(x);
        h *= 1099511628211ull;
    }
    return h;
}

// Worker crashes on node 2: retried there, reported here with the node.
int crashes() {
    std::vector<shmpool::WorkerEvent> events;
    std::mutex mutex;
    shmpool::PoolStats stats;
    std::vector<long> input(200);
    std::iota(input.begin(), input.end(), 0L);
    std::uint64_t d = 0;
    {
        // Only the other nodes run chunks, so node 2 certainly gets some.
        shmpool::Pool pool({.workers = 1,
                            .on_worker_exit =
                                [&](const shmpool::WorkerEvent& e) {
                                    std::lock_guard lock(mutex);
                                    events.push_back(e);
                                },
                            .cluster = {.use_this_node = false}});
        d = digest(pool.map(crash_once_task, input, 1));
        try {
            (void)pool.map(always_crash_task, input, 1);
            fmt::print("always-crash: no error\n");
        } catch (const shmpool::WorkerCrashed& e) {
            fmt::print("always-crash: WorkerCrashed on node {}: {}\n", e.node(),
                       e.node() == 2 ? "named" : e.what());
        }
        stats = pool.stats();
        for (const shmpool::PoolStats& n : pool.node_stats())
            fmt::print("node stats: crashes {}\n", n.crashes);
    }
    fmt::print("map {:x} (expected {:x})\n", d, [&] {
        std::vector<long> squares;
        for (long x : input)
            squares.push_back(x * x);
        return digest(squares);
    }());
    std::size_t on_two = 0;
    for (const auto& e : events) {
        on_two += e.node == 2 && e.reason == shmpool::ExitReason::crashed;
        if (e.node == 2 && e.task == "crash_once_task" && e.item)
            fmt::print("crash_once event on node 2: item {}\n", *e.item);
    }
    fmt::print("crashes {} retries {} events on node 2: {}\n", stats.crashes, stats.retries,
               on_two);
    return 0;
}

// A node's supervisor killed mid-map: the job must end, promptly, naming the node.
int kill_node() {
    shmpool::Pool pool({.workers = 1});
    std::vector<long> input(1000, 1);
    fmt::print("mapping\n");
    std::fflush(stdout);
    pool.map(kill_my_node_task, input, 1);
    fmt::print("the map ended, which it must not\n");
    return 0;
}

// An idle pool: each rank reports its CPU over a quiet second (ranks other than 0 print it
// from their supervisor's process through /proc, read here).
int idle() {
    shmpool::Pool pool({.workers = 1});
    (void)pool.submit(square_task, 2L).get();
    fmt::print("idle {}\n", ::getpid());
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);  // the harness measures, then says go on
    return 0;
}

int run() {
    shmpool::Pool pool({.workers = 1});
    fmt::print("nodes {}\n", pool.nodes() > 1 ? "many" : "one");
    std::vector<long> input(2000);
    std::iota(input.begin(), input.end(), 0L);
    fmt::print("map {:x}\n", digest(pool.map(square_task, input)));
    fmt::print(
        "map1 {:x}\n",
        digest(pool.map(square_task, std::vector<long>(input.begin(), input.begin() + 300), 1)));
    fmt::print("submit {}\n", pool.submit(square_task, 12L).get());
    std::vector<std::tuple<std::string, int>> args{{"a", 1}, {"b", 2}, {"c", 3}};
    fmt::print("starmap {}\n", fmt::join(pool.starmap(tag_task, args), ","));
    long total = 0;
    for (long v : pool.imap(square_task, std::vector<long>{1, 2, 3, 4, 5}))
        total += v;
    fmt::print("imap {}\n", total);
    long unordered = 0;
    for (long v : pool.imap_unordered(square_task, std::vector<long>{1, 2, 3, 4, 5}, 1))
        unordered += v;
    fmt::print("imap_unordered {}\n", unordered);
    try {
        pool.map(fail_on_seven_task, std::vector<int>{1, 7, 9}, 1);
    } catch (const shmpool::TaskError& e) {
        fmt::print("task error {} {}\n", e.type(), e.message());
    }
    auto array = shmpool::SharedArray<double>::create(10000);
    for (std::size_t i = 0; i < array.size(); ++i)
        array[i] = static_cast<double>(i);
    {
        shmpool::Pool shared({.workers = 1,
                              .shared_blocks = {array.name()},
                              .cluster = {.writable_blocks = {{array.name(), sizeof(double)}}}});
        fmt::print("replica sum {}\n", shared.submit(sum_of_task, array.name()).get());
        shared.for_each_index(double_range_task, array.size(), 500, array.name());
    }
    fmt::print("for_each_index sum {}\n", std::accumulate(array.begin(), array.end(), 0.0));
    {
        // Two pools open at once over the same block: one replica per node, shared.
        shmpool::Pool a({.workers = 1, .shared_blocks = {array.name()}});
        shmpool::Pool b({.workers = 1, .shared_blocks = {array.name()}});
        const double sa = a.submit(sum_of_task, array.name()).get();
        const double sb = b.submit(sum_of_task, array.name()).get();
        fmt::print("two pools {} {}\n", sa, sb);
    }
    array.unlink();
    {
        std::size_t final_done = 0, final_total = 0;
        shmpool::Pool progress({.workers = 1, .on_progress = [&](const shmpool::Progress& p) {
                                    final_done = p.done;
                                    final_total = p.total;
                                }});
        (void)progress.map(square_task, input, 50);
        progress.close();
        progress.join();
        const shmpool::PoolStats all = progress.stats();
        std::size_t done = 0;
        for (const shmpool::PoolStats& n : progress.node_stats())
            done += n.tasks_done;
        fmt::print("progress {}/{}, node stats add up: {}\n", final_done, final_total,
                   done == all.tasks_done ? "yes" : fmt::format("{} of {}", done, all.tasks_done));
    }
    long pipeline_sum = 0;
    shmpool::Pipeline pipeline;
    pipeline.source(count_task)
        .stage(square_task, shmpool::StageMode::parallel, 1)
        .stage(plus_three_task, shmpool::StageMode::parallel, 1)
        .sink([&](long v) { pipeline_sum += v; });
    const shmpool::PipelineStats ps = pipeline.run();
    fmt::print("pipeline of two parallel stages {} ({} failures)\n", pipeline_sum,
               ps.failures.size());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    const std::string mode = argc > 1 ? argv[1] : "all";
    try {
        if (mode == "crashes") return crashes();
        if (mode == "kill-node") return kill_node();
        if (mode == "idle") return idle();
        return run();
    } catch (const std::exception& e) {
        fmt::print(stderr, "cluster_check: {}\n", e.what());
        return 1;
    }
}
