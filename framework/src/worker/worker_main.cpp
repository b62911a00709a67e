// The worker side of the pool: shmpool::init in a worker process (exec'd, or forked by the pool's
// fork server, which init runs too). Attach the control block once, check it speaks this layout,
// attach the shared blocks, run the initializer, then take chunks from the slot until told to
// exit.
#include <fmt/format.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <typeinfo>

#include "parent/cluster_hook.hpp"
#include "pipeline/arena.hpp"
#include "posix/sys.hpp"
#include "protocol/bell.hpp"
#include "protocol/records.hpp"
#include "protocol/slot.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/shared_heap.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "worker/chunk_runner.hpp"
#include "worker/fork_server_main.hpp"

namespace shmpool::detail {
namespace {

// Exit statuses of a worker that could not take work; the parent reads the reason in the slot.
constexpr int exit_refused = 3;    // the block is not a control block of this layout
constexpr int exit_not_ready = 4;  // the shared blocks or the initializer failed

// The blocks shared with the pool ('/'-separated names): attached once, here, for good. A heap
// is attached as one (SharedHeap::cached: read-only if frozen), so that tasks find it there.
void attach_shared_blocks(std::string_view names, bool prefault) {
    while (!names.empty()) {
        const auto slash = names.find('/');  // '/' cannot appear in a block name
        const std::string_view name = names.substr(0, slash);
        const bool heap =
            SharedHeap::is_heap(SharedMemory::attach(name, {.access = Access::read_only}));
        const SharedMemory& block =
            heap ? SharedHeap::cached(name).block() : shmpool::shared_block(name);
        if (prefault) block.prefault();
        names = slash == std::string_view::npos ? std::string_view{} : names.substr(slash + 1);
    }
}

void run_initializer(const std::string& name) {
    const Invoker invoke = find_task(name);
    if (invoke == nullptr)
        throw std::logic_error(fmt::format("no task named '{}' in this worker", name));
    std::string ignored;
    Reader none(nullptr, 0);
    invoke(none, ignored);
}

// Runs at the top of main(), before the program starts any thread: getenv/unsetenv are safe here.
// NOLINTBEGIN(concurrency-mt-unsafe)
int worker_main() {
    const char* block_name = std::getenv("SHMPOOL_POOL");
    const char* index = std::getenv("SHMPOOL_WORKER");
    if (!block_name || !index) return 2;
    const auto w = static_cast<unsigned>(std::atoi(index));
    register_pipeline_step();    // any worker program can run pipeline stages
    check_task_registry();       // a worker_executable other than the parent's program
    ::unsetenv("SHMPOOL_ROLE");  // a worker's own children are not workers
    SharedMemory block = SharedMemory::attach(block_name);
    switch (check_control_block(block.data(), block.size(), w)) {
        case LayoutCheck::ok:
            break;
        case LayoutCheck::other_version: {
            // The prefix is the same in every version: say which one this program speaks.
            auto& prefix = *reinterpret_cast<ControlPrefix*>(block.data());
            prefix.refused_by.store(control_layout_version);
            fmt::print(stderr,
                       "shmpool worker: pool block '{}' has layout version {}, this "
                       "program speaks {}\n",
                       block_name, prefix.layout_version, control_layout_version);
            return exit_refused;
        }
        case LayoutCheck::not_a_pool:
        case LayoutCheck::no_such_slot:
            fmt::print(stderr, "shmpool worker: block '{}' is not a pool with a slot {}\n",
                       block_name, w);
            return exit_refused;
    }
    const ControlView view(block.data());
    WorkerSlot slot(view, w);
    Bell bell(view.header());
    slot.announce_attached(::getpid());
    // Tasks may use oneTBB: this worker's share of the cores, for its whole life.
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism,
                                std::max<std::uint32_t>(1, view.header().threads_per_worker));
    if (const char* shared = std::getenv("SHMPOOL_BLOCKS"); shared && *shared) {
        try {
            attach_shared_blocks(shared, view.header().prefault_shared_blocks != 0);
        } catch (...) {
            slot.report_start_failure(StartFailure::shared_blocks, current_error_payload());
            return exit_not_ready;
        }
    }
    const ControlHeader& h = view.header();
    if (const std::string init(h.initializer, strnlen(h.initializer, sizeof h.initializer));
        !init.empty()) {
        try {
            run_initializer(init);
        } catch (...) {
            slot.report_start_failure(StartFailure::initializer, current_error_payload());
            return exit_not_ready;
        }
    }
    slot.announce_ready(::getpid());
    bell.ring_from_worker();  // the pool's constructor waits for every worker
    const ChunkRules rules{.timeouts = h.timeouts != 0,
                           .parent = h.parent_pid,
                           .max_result_bytes = h.max_result_bytes};
    const bool measure = h.measure_busy != 0;
    for (;;) {
        const Work work = slot.wait_for_work(h.worker_spin_ns);
        if (work.state == SlotState::shutdown) return 0;
        if (!slot.claim(work.buffer, rules.timeouts)) continue;  // the parent took it back first
        run_chunk(slot, rules, measure ? monotonic_ns() : 0);
        bell.ring_from_worker();
    }
}
// NOLINTEND(concurrency-mt-unsafe)

}  // namespace
}  // namespace shmpool::detail

namespace shmpool {

SharedMemory& shared_block(std::string_view name) {
    static std::mutex mutex;
    static std::map<std::string, SharedMemory, std::less<>> blocks;  // kept for the process's life
    std::lock_guard lock(mutex);
    auto it = blocks.find(name);
    if (it == blocks.end())
        it = blocks.emplace(std::string(name), SharedMemory::attach(name)).first;
    return it->second;
}

void init(int argc, char** argv) noexcept {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): see worker_main
    const char* role_variable = std::getenv("SHMPOOL_ROLE");
    const std::string_view role = role_variable ? role_variable : "";
    if (role == "describe") {
        // For another language's pool (the Python package): what each task takes and returns.
        // Before any other work of the program, which then ends.
        int status = 0;
        try {
            detail::check_task_registry();
            const std::string text = detail::describe_tasks();
            status = std::fwrite(text.data(), 1, text.size(), stdout) == text.size() &&
                             std::fflush(stdout) == 0
                         ? 0
                         : 1;
        } catch (const std::exception& e) {
            fmt::print(stderr, "shmpool: error: {}\n", e.what());
            status = 1;
        }
        std::exit(status);  // NOLINT(concurrency-mt-unsafe): before the program starts threads
    }
    if (role == "fork_server") {
        // The server never returns from here; each worker it forks does, and goes on below as
        // an exec'd worker would.
        std::optional<int> server_status;
        try {
            server_status = detail::run_fork_server();
        } catch (const std::exception& e) {
            fmt::print(stderr, "shmpool fork server {}: {}\n", ::getpid(), e.what());
            server_status = 2;
        }
        if (server_status) std::exit(*server_status);  // NOLINT(concurrency-mt-unsafe)
    } else if (role != "worker") {
        // The user's program; on a node of a cluster job, the node's supervisor instead.
        if (detail::ClusterHook* cluster = detail::cluster_hook()) cluster->init(argc, argv);
        return;
    }
    int status = 2;
    try {
        status = detail::worker_main();
    } catch (const std::exception& e) {
        fmt::print(stderr, "shmpool worker {}: {}\n", ::getpid(), e.what());
    } catch (...) {
        fmt::print(stderr, "shmpool worker {}: unknown exception\n", ::getpid());
    }
    std::exit(status);  // NOLINT(concurrency-mt-unsafe): the worker is single-threaded
}

}  // namespace shmpool
