// The map-job walk-through of docs/guide.md, compiled and run by the test suite.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <tuple>
#include <vector>

// [guide-map]
#include <shmpool/framework/errors.hpp>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>

// A result is any type shmpool::Codec knows: a struct of numbers travels as its bytes.
struct Moments {
    double sum = 0;
    double sum_sq = 0;
};

// Step 1, a reduction: each task reads a range of the shared samples and returns two numbers.
// Only the block's name and two indices travel; the samples stay where they are.
Moments moments(const std::string& samples, std::size_t begin, std::size_t end) {
    const auto& a = shmpool::SharedArray<double>::cached(samples);  // mapped once per worker
    Moments m;
    for (std::size_t i = begin; i < end; ++i) {
        m.sum += a[i];
        m.sum_sq += a[i] * a[i];
    }
    return m;
}
SHMPOOL_TASK(moments_task, moments);

// Step 2, in place: each task rewrites its own range, so no two tasks touch the same element.
void standardize(const std::string& samples, double mean, double sd, std::size_t begin,
                 std::size_t end) {
    auto& a = shmpool::SharedArray<double>::cached(samples);
    for (std::size_t i = begin; i < end; ++i)
        a[i] = (a[i] - mean) / sd;
}
SHMPOOL_TASK(standardize_task, standardize);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // a worker runs its loop here and never returns
    try {
        const std::size_t n = 4'000'000;
        // This process owns the block: if it exits without unlinking it (an exception, a
        // crash, a kill), the tracker removes it.
        auto samples = shmpool::SharedArray<double>::create(n);
        for (std::size_t i = 0; i < n; ++i)
            samples[i] = static_cast<double>(i % 1000) / 1000;

        shmpool::Pool pool({.workers = 2, .max_retries = 2});
        std::vector<std::tuple<std::string, std::size_t, std::size_t>> ranges;
        for (std::size_t b = 0; b < n; b += 250'000)
            ranges.emplace_back(samples.name(), b, std::min(n, b + 250'000));
        Moments total;
        for (const Moments& m : pool.starmap(moments_task, ranges)) {  // in input order
            total.sum += m.sum;
            total.sum_sq += m.sum_sq;
        }
        const double mean = total.sum / n;
        const double sd = std::sqrt(total.sum_sq / n - mean * mean);
        fmt::print("mean {:.4f} sd {:.4f}\n", mean, sd);

        pool.for_each_index(standardize_task, n, 0, samples.name(), mean, sd);
        fmt::print("samples[0] = {:.4f}\n", samples[0]);

        const shmpool::PoolStats stats = pool.stats();
        fmt::print("{} tasks, {} crashes, {} retries\n", stats.tasks_done, stats.crashes,
                   stats.retries);
        samples.unlink();                    // done with the data: free the memory now
    } catch (const shmpool::TaskError& e) {  // a task threw: which task, what type, what()
        fmt::print(stderr, "task failed: {}\n", e.what());
        return 1;
    } catch (const shmpool::WorkerCrashed& e) {  // an item killed its worker on every attempt
        fmt::print(stderr, "worker crashed: {}\n", e.what());
        return 1;
    } catch (const std::exception& e) {  // no memory, /dev/shm full, no worker could start...
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}
// [guide-map]
