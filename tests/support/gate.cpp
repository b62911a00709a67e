// Gate: arrivals and release through futexes on a shared block, every wait bounded.
#include "gate.hpp"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <new>

namespace shmpool::test {
namespace {

using Clock = std::chrono::steady_clock;

// Shared (not private) futexes: the waiters are in other processes.
void futex_wait(std::atomic<std::int32_t>& word, std::int32_t expected,
                std::chrono::nanoseconds timeout) {
    timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                static_cast<long>(timeout.count() % 1'000'000'000)};
    ::syscall(SYS_futex, reinterpret_cast<std::int32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr,
              0);
}

void futex_wake_all(std::atomic<std::int32_t>& word) {
    ::syscall(SYS_futex, reinterpret_cast<std::int32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr,
              nullptr, 0);
}

// Waits until `done()` holds, sleeping on `word` between checks; false at the deadline.
template <class Done>
bool wait_on(std::atomic<std::int32_t>& word, Done done, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        const std::int32_t seen = word.load();
        if (done()) return true;
        const auto left = deadline - Clock::now();
        if (left <= Clock::duration::zero()) return false;
        futex_wait(word, seen, left);
    }
}

}  // namespace

Gate Gate::create(const std::string& name) {
    SharedMemory block = SharedMemory::create(name, sizeof(GateState));
    new (block.data()) GateState{};  // zeroed: closed, nobody arrived
    return Gate(std::move(block), true);
}

Gate Gate::attach(const std::string& name) {
    return Gate(SharedMemory::attach(name), false);
}

Gate::~Gate() {
    if (owner_ && block_.is_open()) {
        release();  // nobody stays stuck behind a test that failed
        try {
            block_.unlink();
        } catch (const std::exception&) {  // gone already
        }
    }
}

void Gate::arrive() const {
    GateState& s = state();
    const std::int32_t index = s.arrivals.fetch_add(1);  // each arrival its own pid entry
    if (index < 256) s.pids[index].store(static_cast<std::int32_t>(::getpid()));
    futex_wake_all(s.arrivals);
}

bool Gate::pass(std::chrono::milliseconds timeout) const {
    arrive();
    GateState& s = state();
    return wait_on(
        s.released, [&] { return s.released.load() != 0; }, timeout);
}

bool Gate::wait_arrivals(int n, std::chrono::milliseconds timeout) const {
    GateState& s = state();
    // The pid is stored just after the count moves: wait for both.
    return wait_on(
        s.arrivals,
        [&] { return s.arrivals.load() >= n && (n == 0 || n > 256 || s.pids[n - 1].load() != 0); },
        timeout);
}

pid_t Gate::arrival(int k) const {
    return k < 256 ? state().pids[k].load() : 0;
}

void Gate::release() const {
    state().released.store(1);
    futex_wake_all(state().released);
}

std::string start_gate_name() {
    return "shmpool_test_" + std::to_string(::getpid()) + "_startgate";
}

void at_worker_start() noexcept {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before main() starts any thread
    const char* role = std::getenv("SHMPOOL_ROLE");
    // A pool's fork server passes here too (its workers, forked from it, do not).
    if (role == nullptr ||
        (std::string_view(role) != "worker" && std::string_view(role) != "fork_server"))
        return;
    const std::string name = "shmpool_test_" + std::to_string(::getppid()) + "_startgate";
    if (::access(("/dev/shm/" + name).c_str(), F_OK) != 0) return;  // no gate: the usual case
    try {
        Gate gate = Gate::attach(name);
        GateState& s = gate.state();
        if (s.deaths_left.fetch_sub(1) > 0) {
            if (const int sig = s.death_signal.load(); sig != 0) {
                ::signal(sig, SIG_DFL);  // die of it, whatever a sanitizer installed
                ::raise(sig);
            }
            ::_exit(s.death_exit_code.load());
        }
        if (s.hold.load() != 0) gate.pass();
    } catch (const std::exception&) {  // the test removed it meanwhile: start normally
    }
}

}  // namespace shmpool::test
