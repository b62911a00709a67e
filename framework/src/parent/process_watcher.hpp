// ProcessWatcher: a thread that turns the kernel's news about the workers into events for the
// supervisor: a pidfd that became readable (a death), a stderr pipe with data (relayed at once).
// Its descriptors (epoll set, stop eventfd) are RAII; the pidfds belong to the WorkerProcesses.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "parent/stderr_relay.hpp"
#include "posix/sys.hpp"

namespace shmpool::detail {

/// A worker process that ended: the slot it was in, and which of the slot's workers it was.
struct WorkerDeath {
    unsigned worker = 0;
    unsigned generation = 0;
};

class ProcessWatcher {
  public:
    /// `on_event` is called on the watcher thread after each batch of deaths (it rings the bell).
    explicit ProcessWatcher(std::function<void()> on_event);
    ~ProcessWatcher();
    ProcessWatcher(const ProcessWatcher&) = delete;
    ProcessWatcher& operator=(const ProcessWatcher&) = delete;

    /// Reports the death of worker `worker` of `generation` once its pidfd becomes readable.
    /// Throws std::system_error if the kernel refuses.
    void watch(unsigned worker, unsigned generation, int pidfd);
    /// Relays a worker's stderr pipe, each line prefixed with `prefix`.
    void relay(sys::FileDescriptor read_end, std::string prefix);
    /// The deaths seen since the last call.
    std::vector<WorkerDeath> take_deaths();
    void start();
    /// Stops the thread.
    void stop();
    /// Relays what the pipes of the (dead and reaped) workers still hold, and closes them.
    void drain_stderr() { relay_.drain(); }

  private:
    void run();
    std::function<void()> on_event_;
    sys::FileDescriptor epoll_;
    sys::FileDescriptor stop_;  // an eventfd: written once to stop the thread
    StderrRelay relay_;
    std::mutex deaths_mutex_;  // a leaf
    std::vector<WorkerDeath> deaths_;
    std::thread thread_;
};

}  // namespace shmpool::detail
