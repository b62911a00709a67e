// Cluster mode's figures, run by `make bench` under mpirun with three ranks, each with a
// /dev/shm of its own: a remote round trip, maps over every node, a shared block replicated.
// Rank 0 prints one JSON object; bench/bench_mpi_floor.cpp measures the floors with the same flags.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <vector>

#include "shmpool/cluster/cluster.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"

namespace {

int nothing(int x) {
    return x;
}
SHMPOOL_TASK(nothing_task, nothing);

using Clock = std::chrono::steady_clock;

double ns_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

// The best of three: the VM is noisy, and the floor is measured the same way.
template <class F>
double best_of_three(F f) {
    double best = 1e300;
    for (int r = 0; r < 3; ++r)
        best = std::min(best, f());
    return best;
}

int run() {
    if (!shmpool::cluster::active()) {
        fmt::print(stderr, "bench_cluster: run it under mpirun with 3 ranks\n");
        return 2;
    }
    // A round trip to another node: this machine's workers left out.
    double remote_rt = 0;
    {
        shmpool::Pool pool({.workers = 1, .cluster = {.use_this_node = false}});
        for (int i = 0; i < 200; ++i)  // warm up
            (void)pool.submit(nothing_task, i).get();
        remote_rt = best_of_three([&] {
            const auto t0 = Clock::now();
            for (int i = 0; i < 2000; ++i)
                (void)pool.submit(nothing_task, i).get();
            return ns_since(t0) / 2000;
        });
    }
    double map_1 = 0, map_default = 0;
    {
        shmpool::Pool pool({.workers = 1});
        std::vector<int> small(20000);
        std::iota(small.begin(), small.end(), 0);
        std::vector<int> big(1'000'000);
        std::iota(big.begin(), big.end(), 0);
        (void)pool.map(nothing_task, small, 1);
        map_1 = best_of_three([&] {
            const auto t0 = Clock::now();
            (void)pool.map(nothing_task, small, 1);
            return ns_since(t0) / static_cast<double>(small.size());
        });
        map_default = best_of_three([&] {
            const auto t0 = Clock::now();
            (void)pool.map(nothing_task, big);
            return ns_since(t0) / static_cast<double>(big.size());
        });
    }
    // Replication: opening a pool with a 64 MiB shared block, less opening one without.
    auto block = shmpool::SharedArray<char>::create(std::size_t{64} << 20);
    std::fill(block.begin(), block.end(), 'x');
    auto open_ns = [&](bool with_block) {
        return best_of_three([&] {
            const auto t0 = Clock::now();
            shmpool::PoolOptions o{.workers = 1};
            if (with_block) o.shared_blocks = {block.name()};
            shmpool::Pool pool(o);
            return ns_since(t0);
        });
    };
    const double without = open_ns(false);
    const double with = open_ns(true);
    const double replication =
        static_cast<double>(block.size()) / std::max(1.0, with - without) * 1e9;
    block.unlink();
    fmt::print(
        "{{\"cluster_remote_submit_get_ns\": {:.1f}, \"cluster_map_chunksize_1_ns\": {:.1f}, "
        "\"cluster_map_default_chunks_ns\": {:.2f}, \"cluster_replication_bytes_per_s\": "
        "{:.1f}}}\n",
        remote_rt, map_1, map_default, replication);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    try {
        return run();
    } catch (const std::exception& e) {
        fmt::print(stderr, "bench_cluster: {}\n", e.what());
        return 1;
    }
}
