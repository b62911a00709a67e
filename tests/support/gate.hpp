// Gate: a place in shared memory where processes announce that they arrived and wait until a
// test releases them. Tests use it instead of sleeping or timing a task: a worker raises the
// gate's arrival count and blocks; the test waits (bounded) for the arrival, acts (kills it,
// cancels it, ...), then releases. Every wait is a futex wait with a deadline.
//
// The start-up gate is one such gate that every pool worker of a test program passes before
// shmpool::init (pool_test_main.cpp calls at_worker_start()): while the test holds it, workers
// die as told (a signal, or an exit) or wait there, so tests can kill workers during start-up.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::test {

/// The gate's state, in its block.
struct GateState {
    std::atomic<std::int32_t> arrivals;   // processes that reached the gate
    std::atomic<std::int32_t> released;   // 1: everyone passes
    std::atomic<std::int32_t> pids[256];  // who arrived, in order (the first 256)
    // Start-up gate only: how many workers still die at start-up, and how.
    std::atomic<std::int32_t> deaths_left;
    std::atomic<std::int32_t> death_signal;  // a signal number, or 0 to exit with death_exit_code
    std::atomic<std::int32_t> death_exit_code;
    std::atomic<std::int32_t> hold;  // 1: workers that do not die wait at the gate
};

class Gate {
  public:
    /// Creates a gate (closed) in a new block `name`; it is unlinked when this Gate goes.
    static Gate create(const std::string& name);
    /// Attaches the gate in block `name` (in a worker).
    static Gate attach(const std::string& name);
    Gate(Gate&&) noexcept = default;
    Gate& operator=(Gate&&) noexcept = default;
    ~Gate();

    const std::string& name() const noexcept { return block_.name(); }
    GateState& state() const noexcept { return *reinterpret_cast<GateState*>(block_.data()); }

    /// Records this process's arrival (its pid) and wakes whoever waits for it.
    void arrive() const;
    /// Arrives, then waits until released (at most `timeout`); false on timeout.
    bool pass(std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;
    /// Waits until at least `n` processes arrived; false on timeout.
    bool wait_arrivals(int n, std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
    /// The pid of the k-th arrival (0-based).
    pid_t arrival(int k) const;
    /// Lets everyone through, now and later.
    void release() const;
    /// Closes the gate again (arrivals go on counting): later arrivals wait for the next release.
    void close() const { state().released.store(0); }

  private:
    Gate(SharedMemory block, bool owner) : block_(std::move(block)), owner_(owner) {}
    SharedMemory block_;
    bool owner_ = false;
};

/// The name of this test program's start-up gate: "shmpool_test_<pid>_startgate", so that the
/// workers (whose parent is the test program) find it and the leak check covers it.
std::string start_gate_name();

/// Called in every worker of a test program before shmpool::init (and in a pool's fork server,
/// which is exec'd as workers are; its forked workers never pass here): if the test program
/// holds a start-up gate, dies as it says or waits at it. Nothing when there is none or in the
/// parent.
void at_worker_start() noexcept;

}  // namespace shmpool::test
