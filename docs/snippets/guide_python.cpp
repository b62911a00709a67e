// The C++ half of the Python walk-through of docs/guide.md (guide_python.py runs it).
#include <cstdio>
#include <exception>
#include <numeric>
#include <stdexcept>
#include <string>

// [guide-python-cpp]
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <shmpool/shm/shareable_list.hpp>

// Runs in a worker: squares a range of the float64 values in place.
void square(const std::string& block, std::size_t begin, std::size_t end) {
    auto* values = reinterpret_cast<double*>(shmpool::shared_block(block).data());
    for (std::size_t i = begin; i < end; ++i)
        values[i] *= values[i];
}
SHMPOOL_TASK(square_task, square);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    if (argc != 2) {
        std::fprintf(stderr, "usage: guide_python JOB_LIST_NAME\n");
        return 2;
    }
    try {
        // Attaching is not owning: Python created both blocks and unlinks them.
        auto job = shmpool::ShareableList::attach(argv[1]);  // [block, count, status, sum]
        const std::string block = job.get(0).get<std::string>();
        const auto n = static_cast<std::size_t>(job.get(1).get<std::int64_t>());
        auto values = shmpool::SharedArray<double>::attach(block);  // numpy's buffer, as is
        if (n > values.size())
            throw std::invalid_argument("block " + block + " holds fewer than " +
                                        std::to_string(n));

        shmpool::Pool pool({.workers = 2, .shared_blocks = {block}});  // each worker maps it once
        pool.for_each_index(square_task, n, 0, block);

        job[3] = std::accumulate(values.begin(), values.begin() + n, 0.0);
        job[2] = "done";                 // fits: CPython sized the slot for "pending"
    } catch (const std::exception& e) {  // bad input: one line, exit status 1
        std::fprintf(stderr, "guide_python: error: %s\n", e.what());
        return 1;
    }
}
// [guide-python-cpp]
