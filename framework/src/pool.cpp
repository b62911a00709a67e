// Pool: the facade. It checks the options, lays out the control block, wires the parts
// (parent/) together, starts the workers and waits for them, and takes them down again.
#include "shmpool/framework/pool.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "parent/callback_queue.hpp"
#include "parent/cluster_hook.hpp"
#include "parent/job_queue.hpp"
#include "parent/placement.hpp"
#include "parent/pool_counters.hpp"
#include "parent/pool_link.hpp"
#include "parent/pool_setup.hpp"
#include "parent/process_watcher.hpp"
#include "parent/result_router.hpp"
#include "parent/slot_table.hpp"
#include "parent/supervisor.hpp"
#include "parent/worker_set.hpp"
#include "protocol/bell.hpp"
#include "protocol/control_block.hpp"
#include "shmpool/shm/tracker.hpp"

namespace shmpool {

struct Pool::Impl {
    explicit Impl(PoolOptions o)
        : requested_workers(o.workers),
          options(detail::validated(std::move(o))),
          callbacks(options) {}

    unsigned requested_workers;  // before validation: cluster nodes resolve a 0 themselves
    PoolOptions options;
    SharedMemory block;  // the control block, owned by this process (its tracker removes it)
    detail::ControlView view;
    detail::PoolCounters counters;
    detail::CallbackQueue callbacks;
    detail::JobQueue queue;
    detail::AffinityMemory affinity;  // where the ranges of recent index jobs ran
    detail::ResultRouter router{counters, callbacks};
    std::optional<detail::Bell> bell;
    std::optional<detail::ProcessWatcher> watcher;
    std::optional<detail::WorkerSet> workers;
    std::optional<detail::SlotTable> slots;
    std::optional<detail::Supervisor> supervisor;
    std::unique_ptr<detail::RemoteNodes> remote;  // cluster mode: the pool's other nodes
    std::shared_ptr<detail::PoolLink> link = std::make_shared<detail::PoolLink>();
    // join() and terminate() may race (a terminate from another thread while a join waits for
    // the queued work): the stop itself runs once, under stop_mutex.
    std::mutex stop_mutex;
    std::atomic<bool> joined{false};

    void wait_until_started();
    void attach_remote(detail::ClusterHook& cluster);
    void stop();
};

Pool::Pool(PoolOptions options) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only
    if (const char* role = std::getenv("SHMPOOL_ROLE"); role && std::string_view(role) == "worker")
        throw std::logic_error(
            "a pool worker tried to create a Pool: call shmpool::init(argc, argv) at the top of "
            "main()");
    detail::check_task_registry();
    impl_ = std::make_unique<Impl>(std::move(options));
    Impl& m = *impl_;
    const PoolOptions& o = m.options;
    const std::string executable = o.worker_executable.empty()
                                       ? std::filesystem::read_symlink("/proc/self/exe").string()
                                       : o.worker_executable;
    // Cluster mode: decided here, so that a coordinating-only rank 0 starts no worker.
    detail::ClusterHook* const cluster =
        o.cluster.mode == ClusterMode::off ? nullptr : detail::cluster_hook();
    const bool distributed = cluster != nullptr && cluster->active();
    if (o.cluster.mode == ClusterMode::required && !distributed)
        throw std::logic_error(
            "PoolOptions::cluster requires cluster mode: run the program under mpirun with more "
            "than one rank, linked with shmpool::cluster (docs/cluster.md)");
    const unsigned local_workers = distributed && !o.cluster.use_this_node ? 0 : o.workers;
    Tracker::ensure();
    m.block = SharedMemory::create(detail::control_size(local_workers, o.slot_bytes));
    detail::format_control_block(
        m.block.data(),
        {.workers = local_workers,
         .slot_bytes = static_cast<std::uint32_t>(o.slot_bytes),
         .timeouts = o.task_timeout.count() > 0,
         .threads_per_worker = o.threads_per_worker
                                   ? o.threads_per_worker
                                   : std::max(1u, std::thread::hardware_concurrency() / o.workers),
         .measure_busy = o.measure_busy,
         .worker_spin_ns = static_cast<std::uint64_t>(
             std::chrono::duration_cast<std::chrono::nanoseconds>(o.idle_spin).count()),
         .initializer = o.initializer.name,
         .parent_pid = ::getpid(),
         .max_result_bytes = o.max_result_bytes,
         .prefault_shared_blocks = o.prefault_shared_blocks});
    m.view = detail::ControlView(m.block.data());
    m.bell.emplace(m.view.header());
    m.watcher.emplace([&m] { m.bell->ring(); });
    m.workers.emplace(m.view, o,
                      detail::WorkerSet::Launch{
                          executable, detail::worker_environment(o, m.block.name()),
                          cluster ? cluster->private_environment() : std::vector<std::string>{}},
                      *m.watcher, m.counters);
    m.slots.emplace(m.view, o, *m.workers, m.router, m.counters);
    m.supervisor.emplace(detail::Supervisor::Parts{o, *m.bell, m.queue, *m.slots, *m.workers,
                                                   *m.watcher, m.router, m.callbacks});
    try {
        detail::SlotGuard guard(m.slots->lock());
        for (unsigned w = 0; w < local_workers; ++w) {
            m.workers->launch(w);
            m.slots->occupy(guard.proof(), w);
        }
    } catch (...) {
        m.workers->clear();
        m.block.unlink();
        throw;
    }
    m.watcher->start();
    // The supervisor replaces a worker that dies before it is ready, as it does later.
    m.supervisor->start();
    m.wait_until_started();
    if (distributed) m.attach_remote(*cluster);
    m.link->open(*m.supervisor, *m.bell);
}

// Opens the pool on the other nodes of the job; a node that cannot open it fails the pool.
void Pool::Impl::attach_remote(detail::ClusterHook& cluster) {
    try {
        remote = cluster.attach({options, requested_workers, *bell, queue, router, callbacks});
    } catch (...) {
        queue.terminate();
        workers->kill_all();
        bell->ring();
        stop();
        throw;
    }
    detail::SlotGuard guard(slots->lock());
    supervisor->attach_remote(guard.proof(), *remote);
}

// Ready when every worker has attached and published its pid; fails when the supervisor gave up
// on one (max_start_failures, an initializer that threw, an incompatible program).
void Pool::Impl::wait_until_started() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
        const std::uint32_t seen = bell->seen();
        if (workers->ready_to_start()) return;
        std::exception_ptr failed = workers->start_error();
        if (!failed && std::chrono::steady_clock::now() > deadline)
            failed = std::make_exception_ptr(std::runtime_error(
                fmt::format("pool workers ({}) did not start within 30 s", workers->executable())));
        if (failed) {
            queue.terminate();
            workers->kill_all();
            bell->ring();
            stop();
            std::rethrow_exception(failed);
        }
        const timespec backstop{0, 50'000'000};  // the deadline above is checked between waits
        bell->sleep(seen, &backstop);
    }
}

// After the queue is stopping: the supervisor ends once no worker is left; then the watcher,
// the workers' last words, and the block.
void Pool::Impl::stop() {
    std::lock_guard lock(stop_mutex);
    if (joined) return;
    link->close();
    bell->ring();
    supervisor->join();
    if (remote) remote->close();
    callbacks.stop();  // after delivering what the last rounds queued
    watcher->stop();
    workers->clear();
    watcher->drain_stderr();
    joined = true;
    try {
        block.unlink();
    } catch (const std::system_error&) {  // removed already (the tracker, after a crash of ours)
    }
    block.close();
}

Pool::~Pool() {
    if (!impl_) return;
    try {
        close();
        join();
    } catch (...) {
        terminate();
    }
}

void detail::submit_job(Pool& pool, const std::string& task, JobItems items,
                        std::shared_ptr<ResultSink> sink, std::size_t chunksize) {
    Pool::Impl& m = *pool.impl_;
    auto job = std::make_shared<Job>();
    job->task = task;
    job->items = std::move(items);
    // Ranges go back to the workers that ran them last time (on this machine only: the nodes
    // of a cluster place their own shares).
    if (job->items.index_ranges && !m.remote && chunksize == 1)
        job->placement = m.affinity.placement_for(task, job->items.args, job->items.size());
    job->reports_progress = m.callbacks.wants_progress() && job->items.size() > 1;
    if (job->reports_progress) sink->expect_final_progress();
    sink->bind(m.link);
    job->sink = std::move(sink);
    if (const std::exception_ptr refused = m.queue.push(job, std::max<std::size_t>(1, chunksize))) {
        for (std::size_t i = 0; i < job->items.size(); ++i)
            job->sink->set_error(refused, i);
        if (job->reports_progress) job->sink->final_progress_delivered();
        return;
    }
    // Straight into a free slot when nobody else is at the slots: no hop through the supervisor,
    // which still learns of it when it must: queued work left, or a deadline to watch.
    const bool all_dispatched = m.supervisor->dispatch_here();
    if (!all_dispatched || m.options.task_timeout.count() > 0) m.bell->ring();
}

void Pool::close() {
    impl_->queue.close();
}

void Pool::join() {
    Impl& m = *impl_;
    if (m.joined) return;
    m.queue.wait_idle_then_stop();
    m.stop();
}

void Pool::terminate() {
    Impl& m = *impl_;
    {
        // Not while a join() from another thread is stopping the pool (then there is nothing
        // left to kill).
        std::lock_guard stopping(m.stop_mutex);
        if (m.joined) return;
        {
            // Queued work fails with PoolClosed; running work fails as its workers die.
            detail::SlotGuard guard(m.slots->lock());
            if (m.remote) m.remote->terminate(guard.proof());
            for (const detail::Chunk& chunk : m.queue.terminate()) {
                m.router.fail_all(guard.proof(), chunk, std::make_exception_ptr(PoolClosed()));
                m.queue.finish(chunk.size());
            }
        }
        m.workers->kill_all();
    }
    m.queue.wait_idle_then_stop();  // a join() waiting here too wakes up as well
    m.stop();
}

unsigned Pool::size() const noexcept {
    const unsigned here = impl_->view.workers();
    return impl_->remote ? here + impl_->remote->workers() : here;
}

unsigned Pool::nodes() const noexcept {
    return impl_->remote ? 1 + impl_->remote->nodes() : 1;
}

std::vector<PoolStats> Pool::node_stats() const {
    std::vector<PoolStats> out{impl_->counters.snapshot()};
    if (!impl_->remote) return out;
    // This machine's router counts every node's results: the others' are theirs.
    for (const PoolStats& n : impl_->remote->stats()) {
        out.front().tasks_done -= std::min(out.front().tasks_done, n.tasks_done);
        out.front().tasks_failed -= std::min(out.front().tasks_failed, n.tasks_failed);
        out.push_back(n);
    }
    return out;
}

std::vector<pid_t> Pool::worker_pids() const {
    return impl_->workers->pids();
}

PoolStats Pool::stats() const {
    PoolStats s = impl_->counters.snapshot();  // results and failures of every node
    if (!impl_->remote) return s;
    for (const PoolStats& n : impl_->remote->stats()) {
        s.retries += n.retries;
        s.crashes += n.crashes;
        s.respawns += n.respawns;
        s.start_failures += n.start_failures;
        s.timeouts += n.timeouts;
        s.cancelled += n.cancelled;
        s.recycled_tasks += n.recycled_tasks;
        s.recycled_memory += n.recycled_memory;
        s.reclaimed += n.reclaimed;
        s.stolen_ranges += n.stolen_ranges;
        s.busy_seconds += n.busy_seconds;
    }
    return s;
}

const std::string& Pool::control_block() const noexcept {
    return impl_->block.name();
}

}  // namespace shmpool
