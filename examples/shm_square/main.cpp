// shm_square: squares, in place and in worker processes, the float64 values at the start of an
// existing shared-memory block, such as the buffer of a numpy array in CPython's SharedMemory.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <shmpool/framework/pool.hpp>
#include <shmpool/shm/shared_memory.hpp>
#include <stdexcept>
#include <string>

namespace {

// Runs in a worker. The worker attached the block once at start-up (PoolOptions::shared_blocks),
// so shared_block() is a lookup here, not an mmap per range.
void square_range(std::string block, std::size_t begin, std::size_t end) {
    shmpool::SharedMemory& shm = shmpool::shared_block(block);
    // The parent checked the size, but a block removed and re-created under the same name since
    // then could be smaller: fail the task rather than write past the mapping.
    if (end > shm.size() / sizeof(double)) {
        throw std::out_of_range(fmt::format("block '{}' holds {} bytes, too few for value {}",
                                            block, shm.size(), end - 1));
    }
    auto* values = reinterpret_cast<double*>(shm.data());
    for (std::size_t i = begin; i < end; ++i)
        values[i] *= values[i];
}
SHMPOOL_TASK(square_task, square_range);

// Every failure is one line on stderr and exit status 1.
int fail(const std::string& message) {
    std::fflush(stdout);
    fmt::print(stderr, "shm_square: error: {}\n", message);
    return 1;
}

int run(int argc, char** argv) {
    CLI::App app{"Square float64 values in place in an existing shared-memory block", "shm_square"};
    std::string name;
    std::int64_t count = 0;  // signed, so that a negative count gets our message, not CLI11's
    unsigned workers = 0;
    app.add_option("--name", name, "the block, named as CPython names it (psm_1a2b3c4d)")
        ->required();
    app.add_option("--count", count, "how many float64 values, from the block's start")->required();
    app.add_option("--workers", workers, "worker processes (0: one per core)")
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        return fail(e.what());
    }
    if (count < 0) return fail(fmt::format("--count must not be negative (got {})", count));

    try {
        // Attaching is not owning: default AttachOptions register nothing with the tracker, so
        // the block outlives this process and stays its creator's to unlink.
        shmpool::SharedMemory block = shmpool::SharedMemory::attach(name);
        const std::size_t n = static_cast<std::size_t>(count);
        if (n > block.size() / sizeof(double)) {
            return fail(
                fmt::format("block '{}' holds {} bytes ({} float64 values), fewer than "
                            "--count {}",
                            block.name(), block.size(), block.size() / sizeof(double), n));
        }
        // Checked before any worker starts: on bad input nothing touches the block.
        shmpool::Pool pool({.workers = workers, .shared_blocks = {block.name()}});
        pool.for_each_index(square_task, n, 0, block.name());
        fmt::print("squared {} values in {} with {} workers\n", n, block.name(), pool.size());
    } catch (const std::exception& e) {
        return fail(e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process, this runs the worker and never returns
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // what run() does not handle itself: a bug, or no memory
        std::fprintf(stderr, "shm_square: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "shm_square: error: unknown exception\n");
    }
    return 1;
}
