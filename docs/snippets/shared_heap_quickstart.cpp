// The SharedHeap example of docs/shared-data.md, compiled and run by the test suite.
#include <fmt/format.h>

// [shared-heap-quickstart]
#include <shmpool/framework/pool.hpp>
#include <shmpool/shm/shared_heap.hpp>

// Containers in a heap: Boost's, with an allocator into the heap (addresses may differ per
// process; the containers hold offsets).
using Prices = shmpool::SharedMap<shmpool::SharedString, double>;
using Words = shmpool::SharedVector<shmpool::SharedString>;

// A task finds the objects by name in the heap, which its worker attached once, and reads them
// in place: nothing is copied into the task's arguments.
double total(const std::string& heap, std::size_t first, std::size_t count) {
    const auto& h = shmpool::SharedHeap::cached(heap);
    const auto& prices = *h.find<Prices>("prices");
    const auto& basket = *h.find<Words>("basket");
    double sum = 0;
    for (std::size_t i = first; i < first + count; ++i)
        sum += prices.find(basket[i])->second;
    return sum;
}
SHMPOOL_TASK(total_task, total);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process, this runs the worker and never returns

    // The parent builds: a tracked block of 1 MiB (removed by the tracker if this process dies).
    auto heap = shmpool::SharedHeap::create(1 << 20);
    auto& prices = heap.construct<Prices>("prices", heap.allocator());
    prices.emplace(heap.string("apple"), 0.5);
    prices.emplace(heap.string("bread"), 2.25);
    auto& basket = heap.construct<Words>("basket", heap.allocator());
    for (const char* item : {"apple", "bread", "apple", "apple"})
        basket.push_back(heap.string(item));
    heap.freeze();  // read-only for good: workers map it read-only and read without a lock

    shmpool::Pool pool({.workers = 2, .shared_blocks = {heap.name()}});
    std::vector<std::tuple<std::string, std::size_t, std::size_t>> halves{{heap.name(), 0, 2},
                                                                          {heap.name(), 2, 2}};
    double sum = 0;
    for (double part : pool.starmap(total_task, halves))
        sum += part;
    fmt::print("total: {}\n", sum);  // total: 3.75
    heap.unlink();
}
// [shared-heap-quickstart]
