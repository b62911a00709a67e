// Tasks shared by the framework's multiprocess tests: plain work, every way to fail, and gated
// tasks that stop at a Gate (gate.hpp) until the test releases them, so that a test knows a task
// is running, or still queued, without using its duration as a clock.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "shmpool/shm/shared_heap.hpp"

namespace shmpool::test::tasks {

inline int square(int x) {
    return x * x;
}
SHMPOOL_TASK(square_task, square);

inline long twice(long x) {
    return 2 * x;
}
SHMPOOL_TASK(twice_task, twice);

inline std::string shout(const std::string& s, int times) {
    std::string out;
    for (int i = 0; i < times; ++i)
        out += s + "!";
    return out;
}
SHMPOOL_TASK(shout_task, shout);

inline std::size_t length_of(const std::string& s) {
    return s.size();
}
SHMPOOL_TASK(length_of_task, length_of);

/// A trivially copyable item far bigger than a packed chunk carries (task_entry.hpp).
struct BigRecord {
    std::array<std::int32_t, 8192> values;  // 32 KiB
};
inline BigRecord bumped(const BigRecord& r) {
    BigRecord out = r;
    for (auto& v : out.values)
        ++v;
    return out;
}
SHMPOOL_TASK(bumped_task, bumped);

/// The length of `s`; SIGKILLs its worker instead when `s` is longer than `die_above`.
inline std::size_t length_or_die(const std::string& s, std::size_t die_above) {
    if (s.size() > die_above) ::kill(::getpid(), SIGKILL);
    return s.size();
}
SHMPOOL_TASK(length_or_die_task, length_or_die);

/// `n` bytes of `c`; SIGKILLs its worker instead when `n` is `die_at`.
inline std::string bytes_or_die(std::size_t n, char c, std::size_t die_at) {
    if (n == die_at) ::kill(::getpid(), SIGKILL);
    return std::string(n, c);
}
SHMPOOL_TASK(bytes_or_die_task, bytes_or_die);

/// Item 0: 20000 bytes (more than a 4 KiB slot holds); item 1: SIGKILLs its worker; else i bytes.
inline std::string big_then_die(int i) {
    if (i == 1) ::kill(::getpid(), SIGKILL);
    return std::string(i == 0 ? 20000 : static_cast<std::size_t>(i), 'a');
}
SHMPOOL_TASK(big_then_die_task, big_then_die);

inline int throw_on_odd(int x) {
    if (x % 2) throw std::invalid_argument("odd: " + std::to_string(x));
    return x;
}
SHMPOOL_TASK(throw_on_odd_task, throw_on_odd);

inline int my_pid(int /*x*/) {
    return ::getpid();
}
SHMPOOL_TASK(pid_task, my_pid);

inline void fill(const std::string& array, std::size_t begin, std::size_t end) {
    auto& a = SharedArray<double>::cached(array);
    for (std::size_t i = begin; i < end; ++i)
        a[i] = static_cast<double>(i) * 0.5;
}
SHMPOOL_TASK(fill_task, fill);

/// owners[i] = its worker's pid for i in [begin, end); range 0 then waits at the gate.
inline void stamp_owner(const std::string& owners, const std::string& gate, std::size_t begin,
                        std::size_t end) {
    auto& o = SharedArray<std::int64_t>::cached(owners);
    for (std::size_t i = begin; i < end; ++i)
        o[i] = ::getpid();
    if (begin == 0 && !Gate::attach(gate).pass())
        throw std::runtime_error("the gate was never released");
}
SHMPOOL_TASK(stamp_owner_task, stamp_owner);

/// owners[i] = its worker's pid and one more call in calls[i], for i in [begin, end); the range
/// that starts at 8 SIGKILLs its worker on its second call (the same arguments every time, so
/// that a repeated job finds its placement).
inline void stamp_or_die(const std::string& owners, const std::string& calls, std::size_t begin,
                         std::size_t end) {
    auto& o = SharedArray<std::int64_t>::cached(owners);
    auto& c = SharedArray<std::int64_t>::cached(calls);
    for (std::size_t i = begin; i < end; ++i) {
        __atomic_add_fetch(&c[i], 1, __ATOMIC_SEQ_CST);
        o[i] = ::getpid();
    }
    if (begin == 8 && __atomic_load_n(&c[8], __ATOMIC_SEQ_CST) == 2) ::kill(::getpid(), SIGKILL);
}
SHMPOOL_TASK(stamp_or_die_task, stamp_or_die);

/// The value of `key` in the SharedMap<SharedString, std::int64_t> "table" of heap `heap` (-1:
/// none), and whether this worker maps the heap read-only.
inline std::tuple<std::int64_t, bool> heap_lookup(const std::string& heap, const std::string& key) {
    const SharedHeap& h = SharedHeap::cached(heap);
    const auto& table = *h.find<SharedMap<SharedString, std::int64_t>>("table");
    const auto it = table.find(key);
    return {it == table.end() ? -1 : it->second, h.block().read_only()};
}
SHMPOOL_TASK(heap_lookup_task, heap_lookup);

/// Dies in the way `how` says: "segv", "abort", "kill", "exit" (status 3) or "hang".
inline void die(const std::string& how) {
    if (how == "segv") {
        volatile int* p = nullptr;
        *p = 1;  // NOLINT: the point is to crash
    }
    if (how == "abort") std::abort();
    if (how == "kill") ::kill(::getpid(), SIGKILL);
    if (how == "exit") std::exit(3);  // NOLINT(concurrency-mt-unsafe): a test's worker
    if (how == "hang") ::pause();     // until a timeout kills the worker
}

/// x * 10, counting every call in counters[x]; dies as `how` says when x == victim.
inline int counted(const std::string& counters, int x, int victim, const std::string& how) {
    auto& c = SharedArray<std::int64_t>::cached(counters);
    __atomic_add_fetch(&c[static_cast<std::size_t>(x)], 1, __ATOMIC_SEQ_CST);
    if (x == victim) die(how);
    return x * 10;
}
SHMPOOL_TASK(counted_task, counted);

/// Arrives at the gate named `gate`, waits there until the test releases it, returns x.
inline int gated(const std::string& gate, int x) {
    if (!Gate::attach(gate).pass()) throw std::runtime_error("the gate was never released");
    return x;
}
SHMPOOL_TASK(gated_task, gated);

/// As gated() for item `which` only; every other item returns at once.
inline int gated_at(const std::string& gate, int x, int which) {
    return x == which ? gated(gate, x) : x;
}
SHMPOOL_TASK(gated_at_task, gated_at);

/// x * 10, counting every call in counters[x]; item 0's first call waits at the gate first.
inline int counted_gated(const std::string& counters, const std::string& gate, int x) {
    auto& c = SharedArray<std::int64_t>::cached(counters);
    const auto calls = __atomic_add_fetch(&c[static_cast<std::size_t>(x)], 1, __ATOMIC_SEQ_CST);
    if (x == 0 && calls == 1 && !Gate::attach(gate).pass())
        throw std::runtime_error("the gate was never released");
    return x * 10;
}
SHMPOOL_TASK(counted_gated_task, counted_gated);

/// How many pages of shared block `name` exist in memory (mincore: the block's pages, whoever
/// touched them; of a sparse block, those someone wrote or pre-faulted).
inline std::size_t resident_pages(const std::string& name) {
    const SharedMemory& block = shared_block(name);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((block.mapped_size() + page - 1) / page);
    if (::mincore(block.data(), block.mapped_size(), resident.data()) != 0)
        throw std::system_error(errno, std::generic_category(), "mincore");
    std::size_t n = 0;
    for (unsigned char r : resident)
        n += r & 1u;
    return n;
}
SHMPOOL_TASK(resident_pages_task, resident_pages);

inline volatile sig_atomic_t sigterm_seen = 0;
inline void note_sigterm(int /*sig*/) {
    sigterm_seen = 1;
}
/// Item 0 runs until the pool's SIGTERM (its timeout), survives it and returns 0; every other
/// item waits at the gate.
inline int outlive_sigterm(const std::string& gate, int x) {
    if (x != 0) return gated(gate, x);
    sigset_t term;
    sigset_t before;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &before);  // no SIGTERM between the check and the wait
    struct sigaction on_term {};
    on_term.sa_handler = note_sigterm;
    sigemptyset(&on_term.sa_mask);
    sigaction(SIGTERM, &on_term, nullptr);
    sigset_t waiting = before;
    sigdelset(&waiting, SIGTERM);
    while (!sigterm_seen)
        sigsuspend(&waiting);
    sigprocmask(SIG_SETMASK, &before, nullptr);
    return 0;
}
SHMPOOL_TASK(outlive_sigterm_task, outlive_sigterm);

/// Arrives at the gate (without waiting) and returns x.
inline int arrive(const std::string& gate, int x) {
    Gate::attach(gate).arrive();
    return x;
}
SHMPOOL_TASK(arrive_task, arrive);

/// Waits until `n` processes arrived at the gate, then returns x.
inline int after_arrivals(const std::string& gate, int n, int x) {
    if (!Gate::attach(gate).wait_arrivals(n)) throw std::runtime_error("nobody arrived");
    return x;
}
SHMPOOL_TASK(after_arrivals_task, after_arrivals);

inline std::vector<int> iota(int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    return v;
}

}  // namespace shmpool::test::tasks
