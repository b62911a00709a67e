// The worker side of the pool: attach the control block once, then run chunks from its slot.
#include <cxxabi.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <tbb/global_control.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <typeinfo>

#include "control_block.hpp"
#include "pipeline_arena.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::detail {

long futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                const struct timespec* timeout) noexcept {
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected,
                     timeout, nullptr, 0);
}

long futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr,
                     nullptr, 0);
}

std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

namespace {

std::string demangled(const char* name) {
    int status = 0;
    char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    std::string out = status == 0 && d ? d : name;
    std::free(d);
    return out;
}

// After a state change the parent must see: the supervisor is woken unless a thread of the
// parent is spinning on the slots (it harvests; and it wakes the supervisor when it stops).
void wake_parent(ControlHeader* h) {
    h->parent_bell.fetch_add(1, std::memory_order_seq_cst);
    if (h->parent_sleeping.load(std::memory_order_seq_cst) &&
        h->helpers.load(std::memory_order_seq_cst) == 0) {
        futex_wake(&h->parent_bell, INT_MAX);  // the supervisor, and callers waiting in get()
    }
}

// Publishes the chunk as done, with the time the worker spent on it if the pool measures it
// (started_ns is 0 otherwise: a clock read costs tens of ns under a hypervisor).
void finish_chunk(const ControlView& view, SlotHeader* slot, std::uint64_t started_ns) {
    slot->chunk_busy_ns.store(started_ns ? monotonic_ns() - started_ns : 0,
                              std::memory_order_relaxed);
    slot->state.store(slot_done, std::memory_order_seq_cst);
    wake_parent(view.header());
}

// Appends one result record; false if the response area is full.
bool put_record(std::byte* area, std::uint32_t capacity, std::uint32_t& used, RecordKind kind,
                const std::string& bytes) {
    std::size_t need = 1 + 4 + bytes.size();
    if (used + need > capacity) return false;
    area[used] = static_cast<std::byte>(kind);
    auto len = static_cast<std::uint32_t>(bytes.size());
    std::memcpy(area + used + 1, &len, 4);
    std::memcpy(area + used + 5, bytes.data(), bytes.size());
    used += static_cast<std::uint32_t>(need);
    return true;
}

std::string error_payload(const std::string& type, const std::string& message) {
    std::string out;
    encode(out, type);
    encode(out, message);
    return out;
}

// A packed chunk (see Pool::map): the results back to back at the start of the response area,
// then an error record [u32 position][u32 length][payload] per item that threw. If the records
// fill the area, the chunk ends early and the parent requeues the items not reached.
void run_packed(const ControlView& view, unsigned w, const std::string& task, Reader& req,
                std::uint32_t count, std::uint32_t in_stride, std::uint32_t out_stride,
                std::uint64_t started_ns) {
    SlotHeader* slot = view.slot(w);
    const std::uint32_t capacity = view.header()->slot_bytes;
    const char* in = req.view(std::size_t{count} * in_stride);
    char* out = reinterpret_cast<char*>(view.response(w));
    std::uint32_t errors_at = count * std::max<std::uint32_t>(out_stride, 1);
    const TaskEntry entry = find_task_entry(task);
    std::atomic<std::uint64_t>* started =
        view.header()->timeouts != 0 ? &slot->item_started_ns : nullptr;
    std::uint32_t i = 0;
    while (i < count) {
        std::string type, message;
        try {
            if (entry.packed == nullptr || entry.in_stride != in_stride ||
                entry.out_stride != out_stride)
                throw std::logic_error(fmt::format(
                    "no task named '{}' taking {} bytes and returning {} in this worker", task,
                    in_stride, out_stride));
            entry.packed(in, out, i, count, &slot->completed, started);
            break;
        } catch (const std::exception& e) {
            type = demangled(typeid(e).name());
            message = e.what();
        } catch (...) {
            type = "unknown exception";
            message = "a non-std::exception was thrown";
        }
        std::string error = error_payload(type, message);
        const std::size_t room = capacity - std::min(capacity, errors_at + 8);
        if (error.size() > room) {
            if (i > 0) break;  // the parent requeues item i onwards
            // The chunk's first error always fits (half the area is kept for errors): cut short.
            type.resize(std::min(type.size(), room / 4));
            message.resize(room - type.size() - 32);
            error = error_payload(type, message + "...");
        }
        auto len = static_cast<std::uint32_t>(error.size());
        std::memcpy(out + errors_at, &i, 4);
        std::memcpy(out + errors_at + 4, &len, 4);
        // NOLINTNEXTLINE(bugprone-not-null-terminated-result): length-prefixed bytes
        std::memcpy(out + errors_at + 8, error.data(), len);
        errors_at += 8 + len;
        slot->response_bytes.store(errors_at, std::memory_order_release);
        slot->completed.store(++i, std::memory_order_release);
    }
    finish_chunk(view, slot, started_ns);
}

void run_chunk(const ControlView& view, unsigned w, std::uint64_t started_ns) {
    SlotHeader* slot = view.slot(w);
    const std::uint32_t capacity = view.header()->slot_bytes;
    const bool timeouts = view.header()->timeouts != 0;
    Reader req(reinterpret_cast<const char*>(view.request(w)), slot->request_bytes.load());
    std::string task = Codec<std::string>::decode(req);
    auto count = req.raw<std::uint32_t>();
    auto in_stride = req.raw<std::uint32_t>();
    auto out_stride = req.raw<std::uint32_t>();
    if (in_stride != 0) {
        run_packed(view, w, task, req, count, in_stride, out_stride, started_ns);
        return;
    }
    Invoker invoke = find_task(task);
    std::byte* response = view.response(w);
    std::uint32_t used = 0;
    std::string result;
    for (std::uint32_t i = 0; i < count; ++i) {
        auto args_len = req.raw<std::uint64_t>();
        const char* args = req.view(args_len);  // decoded in place, no copy
        if (timeouts) slot->item_started_ns.store(monotonic_ns(), std::memory_order_release);
        result.clear();
        RecordKind kind = record_value;
        try {
            if (invoke == nullptr)
                throw std::logic_error(fmt::format("no task named '{}' in this worker", task));
            Reader r(args, args_len);
            invoke(r, result);
        } catch (const std::exception& e) {
            kind = record_error;
            result = error_payload(demangled(typeid(e).name()), e.what());
        } catch (...) {
            kind = record_error;
            result = error_payload("unknown exception", "a non-std::exception was thrown");
        }
        if (!put_record(response, capacity, used, kind, result)) {
            std::string err = error_payload(
                "std::length_error",
                fmt::format("the result of {} bytes does not fit the pool's slot_bytes ({})",
                            result.size(), capacity));
            if (!put_record(response, capacity, used, record_error, err))
                std::abort();  // cannot even report
        }
        slot->response_bytes.store(used, std::memory_order_release);
        slot->completed.store(i + 1, std::memory_order_release);
    }
    finish_chunk(view, slot, started_ns);
}

}  // namespace

// Runs at the top of main(), before the program starts any thread: getenv/unsetenv are safe here.
// NOLINTBEGIN(concurrency-mt-unsafe)
int worker_main() {
    const char* block = std::getenv("SHMPOOL_POOL");
    const char* index = std::getenv("SHMPOOL_WORKER");
    if (!block || !index) return 2;
    unsigned w = static_cast<unsigned>(std::atoi(index));
    register_pipeline_step();    // any worker program can run pipeline stages
    check_task_registry();       // a worker_executable other than the parent's program
    ::unsetenv("SHMPOOL_ROLE");  // a worker's own children are not workers
    SharedMemory shm = SharedMemory::attach(block);
    ControlView view{shm.data()};
    if (std::memcmp(view.header()->magic, control_magic, 8) != 0 || w >= view.header()->workers)
        return 2;
    SlotHeader* slot = view.slot(w);
    slot->attached_pid.store(::getpid(), std::memory_order_release);
    // Tasks may use oneTBB: this worker's share of the cores, for its whole life.
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism,
                                std::max<std::uint32_t>(1, view.header()->threads_per_worker));
    // The blocks shared with the pool: attached once, here, or the worker reports why not.
    if (const char* shared = std::getenv("SHMPOOL_BLOCKS"); shared && *shared) {
        std::string error;
        try {
            std::string_view names(shared);
            while (!names.empty()) {
                auto slash = names.find('/');  // '/' cannot appear in a block name
                shmpool::shared_block(names.substr(0, slash));
                names =
                    slash == std::string_view::npos ? std::string_view{} : names.substr(slash + 1);
            }
        } catch (const std::exception& e) {
            error = error_payload(demangled(typeid(e).name()), e.what());
        }
        if (!error.empty()) {
            std::uint32_t used = 0;
            put_record(view.response(w), view.header()->slot_bytes, used, record_error,
                       error.substr(0, 4000));
            slot->init_failed.store(2, std::memory_order_release);  // 2: the shared blocks
            return 4;
        }
    }
    if (std::string init(view.header()->initializer, strnlen(view.header()->initializer, 128));
        !init.empty()) {
        std::string error;
        try {
            Invoker invoke = find_task(init);
            if (invoke == nullptr)
                throw std::logic_error(fmt::format("no task named '{}' in this worker", init));
            std::string ignored;
            Reader none(nullptr, 0);
            invoke(none, ignored);
        } catch (const std::exception& e) {
            error = error_payload(demangled(typeid(e).name()), e.what());
        } catch (...) {
            error = error_payload("unknown exception", "a non-std::exception was thrown");
        }
        if (!error.empty()) {
            std::uint32_t used = 0;
            put_record(view.response(w), view.header()->slot_bytes, used, record_error,
                       error.substr(0, 4000));
            slot->init_failed.store(1, std::memory_order_release);
            return 4;  // the parent reads the error from the slot
        }
    }
    const std::uint64_t spin_ns = view.header()->worker_spin_ns;
    slot->worker_pid.store(::getpid(), std::memory_order_release);
    wake_parent(view.header());  // the pool's constructor waits for every worker to attach
    for (;;) {
        // Spin a little (a hot pool answers in well under a microsecond), then sleep on the slot
        // until the parent queues work (or harvests and queues, from done).
        std::uint32_t s = slot->state.load(std::memory_order_acquire);
        if (spin_ns != 0 && (s == slot_free || s == slot_done)) {
            const std::uint64_t until = monotonic_ns() + spin_ns;
            for (unsigned i = 1; s == slot_free || s == slot_done; ++i) {
                __builtin_ia32_pause();
                s = slot->state.load(std::memory_order_acquire);
                if (i % 64 == 0 && monotonic_ns() > until) break;
            }
        }
        if (s == slot_free || s == slot_done) {
            slot->worker_sleeping.store(1, std::memory_order_seq_cst);
            if (slot->state.load(std::memory_order_seq_cst) == s)
                futex_wait(&slot->state, s, nullptr);
            slot->worker_sleeping.store(0, std::memory_order_relaxed);
            continue;
        }
        if (s == slot_shutdown) return 0;
        if (s != slot_queued) continue;
        slot->completed.store(0, std::memory_order_relaxed);
        slot->response_bytes.store(0, std::memory_order_relaxed);
        slot->state.store(slot_running, std::memory_order_release);
        run_chunk(view, w, view.header()->measure_busy ? monotonic_ns() : 0);
    }
}
// NOLINTEND(concurrency-mt-unsafe)

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

void init(int /*argc*/, char** /*argv*/) noexcept {
    const char* role =
        std::getenv("SHMPOOL_ROLE");  // NOLINT(concurrency-mt-unsafe): see worker_main
    if (role == nullptr || std::string_view(role) != "worker") return;
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
