// The pool example of README.md and docs/pool.md, compiled and run by the test suite.
#include <fmt/format.h>

// [pool-quickstart]
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>

// Tasks are plain functions, registered under a name the workers know them by.
long collatz_steps(long n) {
    long steps = 0;
    for (; n != 1; ++steps)
        n = n % 2 ? 3 * n + 1 : n / 2;
    return steps;
}
SHMPOOL_TASK(collatz_task, collatz_steps);

// Big data stays in shared memory: the task gets the array's name and a range of indices.
void halve(const std::string& array, std::size_t begin, std::size_t end) {
    auto& a = shmpool::SharedArray<double>::cached(array);  // attached once per worker
    for (std::size_t i = begin; i < end; ++i)
        a[i] /= 2;
}
SHMPOOL_TASK(halve_task, halve);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process, this runs the worker and never returns

    shmpool::Pool pool({.workers = 2, .max_retries = 1});
    std::vector<long> numbers{27, 97, 871};
    std::vector<long> steps = pool.map(collatz_task, numbers);  // in input order
    fmt::print("steps: {}\n", fmt::join(steps, " "));           // steps: 111 118 178

    auto array = shmpool::SharedArray<double>::create(1'000'000);
    for (auto& x : array)
        x = 1.0;
    pool.for_each_index(halve_task, array.size(), 0, array.name());
    fmt::print("array[0] = {}\n", array[0]);  // array[0] = 0.5
    array.unlink();
}
// [pool-quickstart]
