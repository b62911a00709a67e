// Supervisor: the thread that sequences the pool's parts, one round at a time (deaths, then
// harvest, dispatch, cancels, timeouts, shutdown), and the help that threads waiting in get()
// give it. Each round holds the slot lock; the callbacks its events call for run on their own
// thread (callback_queue.hpp).
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

#include "parent/callback_queue.hpp"
#include "parent/chunk_executor.hpp"
#include "parent/cluster_hook.hpp"
#include "parent/job_queue.hpp"
#include "parent/process_watcher.hpp"
#include "parent/result_router.hpp"
#include "parent/slot_table.hpp"
#include "parent/worker_set.hpp"
#include "protocol/bell.hpp"

namespace shmpool::detail {

class Supervisor {
  public:
    struct Parts {
        const PoolOptions& options;
        Bell& bell;
        JobQueue& queue;
        SlotTable& slots;
        WorkerSet& workers;
        ProcessWatcher& watcher;
        ResultRouter& router;
        CallbackQueue& callbacks;
    };
    explicit Supervisor(const Parts& parts);
    ~Supervisor() { join(); }
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    /// Adds a pool's other nodes (cluster mode), before work is submitted.
    void attach_remote(const SlotsLocked& locked, RemoteNodes& remote);
    void start();
    /// Waits for the thread, which ends once the pool is stopping, idle and without workers.
    void join();
    /// Dispatches queued chunks on the calling thread if nobody else is at the slots (the path
    /// of a submit that finds a free worker); whether the queue was emptied.
    bool dispatch_here();
    /// Harvests on the calling thread until `ready(context)` holds: spinning a while (finishing
    /// workers then need not wake anyone), then sleeping on the bell.
    void assist(bool (*ready)(const void*), const void* context);
    /// One harvest and dispatch on the calling thread if something finished and the slots are
    /// free; never blocks. Whether it did.
    bool help_once();

  private:
    struct Round {
        bool progress = false;
        bool finished = false;
        std::uint64_t next_deadline_ns = 0;
    };
    void run();
    Round round(const SlotsLocked& locked);
    bool handle_deaths(const SlotsLocked& locked);
    void give_up(const SlotsLocked& locked, const Departure& departure,
                 const std::exception_ptr& why);
    bool has_finished() const noexcept;

    Parts parts_;
    // Where chunks run: the local slot table; a cluster adds its nodes here.
    std::vector<ChunkExecutor*> executors_;
    RemoteNodes* remote_ = nullptr;
    std::thread thread_;
};

}  // namespace shmpool::detail
