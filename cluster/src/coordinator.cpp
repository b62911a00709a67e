// Coordinator: the handshake, the communication loop of rank 0, pools opened and closed.
#include "coordinator.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "node_identity.hpp"
#include "posix/sys.hpp"
#include "remote_pool.hpp"
#include "shmpool/framework/detail/task_entry.hpp"
#include "shmpool/framework/errors.hpp"

namespace shmpool::cluster {
namespace {

using namespace std::chrono_literals;

// How long rank 0 waits for every node to say hello, and for a pool to open or close there.
constexpr auto answer_limit = 60s;

}  // namespace

Coordinator::Coordinator(mpi::Launch launch) : launch_(launch) {
    std::promise<void> started;
    std::future<void> ready = started.get_future();
    thread_ = std::thread([this, &started] { run(started); });
    try {
        ready.get();  // rethrows what went wrong in MPI_Init or the handshake
    } catch (...) {
        thread_.join();
        throw;
    }
}

Coordinator::~Coordinator() {
    shut_down();
}

void Coordinator::run(std::promise<void>& started) {
    try {
        sys::set_timer_slack(1000);  // the short polls below must not end 50 µs late
        mpi::initialize(nullptr, nullptr);
        handshake();
    } catch (...) {
        started.set_exception(std::current_exception());
        return;
    }
    started.set_value();
    Backoff backoff;
    try {
        for (;;) {
            bool found = transport_.pump();
            std::deque<std::function<void()>> tasks;
            {
                std::lock_guard lock(mutex_);
                tasks.swap(tasks_);
            }
            for (auto& task : tasks)
                task();
            found = found || !tasks.empty();
            while (auto m = transport_.receive()) {
                route(std::move(*m));
                found = true;
            }
            if (stopping_.load()) break;
            const auto pause = backoff.next(found, in_flight_.load() > 0);
            if (pause.count() == 0) {
                std::this_thread::yield();
            } else {
                transport_.sleep(pause);
            }
        }
        for (std::size_t n = 1; n <= nodes_.size(); ++n)
            transport_.post(static_cast<int>(n), Tag::shutdown, {});
        transport_.flush(5s);
        mpi::finalize();
    } catch (const std::exception& e) {
        // A node that died takes the job with it (Open MPI 4.1 has no process-fault tolerance):
        // say so, and end it now rather than hang.
        fmt::print(stderr, "shmpool: cluster: {}; ending the job\n", e.what());
        std::fflush(stderr);
        mpi::abort_job(1);
    }
}

void Coordinator::handshake() {
    const std::uint64_t tasks = detail::task_registry_fingerprint();
    const std::string identity = shm_identity();
    nodes_.resize(static_cast<std::size_t>(launch_.size - 1));
    std::size_t heard = 0;
    const auto deadline = std::chrono::steady_clock::now() + answer_limit;
    while (heard < nodes_.size()) {
        auto m = transport_.receive();
        if (!m) {
            if (std::chrono::steady_clock::now() > deadline)
                throw std::runtime_error("a node did not say hello within 60 s");
            transport_.sleep(100us);
            continue;
        }
        if (m->tag != static_cast<int>(Tag::hello) || m->source < 1) continue;
        const Hello h = decode<Hello>(m->bytes);
        const auto node = static_cast<unsigned>(m->source);
        if (h.protocol != protocol_version || h.tasks != tasks) {
            fmt::print(stderr,
                       "shmpool: node {} (rank {} on {}) runs a program whose tasks differ from "
                       "this one's ({} against {:x}): every rank of a job must run the same "
                       "binary; ending the job\n",
                       node, node, h.host,
                       h.protocol != protocol_version
                           ? fmt::format("protocol {} against {}", h.protocol, protocol_version)
                           : fmt::format("tasks {:x}", h.tasks),
                       tasks);
            std::fflush(stderr);
            mpi::abort_job(1);
        }
        nodes_[node - 1] = {h.host, h.shm_identity == identity};
        ++heard;
    }
}

void Coordinator::route(mpi::Message&& m) {
    const auto node = static_cast<unsigned>(m.source);
    switch (static_cast<Tag>(m.tag)) {
        case Tag::result: {
            ChunkResult r = decode<ChunkResult>(m.bytes);
            std::lock_guard lock(mutex_);
            if (auto it = pools_.find(r.pool); it != pools_.end())
                it->second->on_result(node, std::move(r));
            return;
        }
        case Tag::worker_event: {
            RemoteEvent e = decode<RemoteEvent>(m.bytes);
            std::lock_guard lock(mutex_);
            if (auto it = pools_.find(e.pool); it != pools_.end())
                it->second->on_event(node, std::move(e.event));
            return;
        }
        case Tag::pool_ready:
        case Tag::pool_failed:
        case Tag::pool_closed: {
            const std::uint32_t pool = decode_pool(m.bytes);
            std::lock_guard lock(mutex_);
            Control& c = controls_[pool];
            if (c.workers.size() < nodes_.size()) c.workers.resize(nodes_.size());
            if (m.tag == static_cast<int>(Tag::pool_ready)) {
                c.workers[node - 1] = decode<PoolReady>(m.bytes).workers;
            } else if (m.tag == static_cast<int>(Tag::pool_failed) && !c.failed) {
                c.failed = true;
                c.error = decode<PoolFailed>(m.bytes).error;
                c.failed_node = node;
            } else if (m.tag == static_cast<int>(Tag::pool_closed)) {
                if (auto it = pools_.find(pool); it != pools_.end())
                    it->second->on_closed(node, decode<ClosedPool>(m.bytes).stats);
            }
            ++c.answers;
            answered_.notify_all();
            return;
        }
        default:
            return;  // nothing else is meant for rank 0
    }
}

std::vector<unsigned> Coordinator::open(
    const OpenPool& open, std::vector<std::pair<const std::byte*, std::size_t>> replicated,
    RemotePool& target) {
    std::unique_lock lock(mutex_);
    pools_[open.pool] = &target;
    controls_[open.pool] = Control{};
    // One task on the communication thread: the opens out to every node, then the blocks'
    // bytes broadcast, which every node joins after reading its open.
    tasks_.push_back([this, message = encode(open), replicated = std::move(replicated)] {
        for (std::size_t n = 1; n <= nodes_.size(); ++n)
            transport_.post(static_cast<int>(n), Tag::open_pool, message);
        transport_.pump();
        for (const auto& [data, size] : replicated)
            mpi::broadcast(const_cast<std::byte*>(data), size, 0);
    });
    transport_.wake();
    const bool answered = answered_.wait_for(
        lock, answer_limit, [&] { return controls_[open.pool].answers >= nodes_.size(); });
    Control c = controls_[open.pool];
    controls_[open.pool] = Control{};  // ready for the closing answers
    if (!answered || c.failed) {
        pools_.erase(open.pool);
        lock.unlock();
        close(open.pool, Tag::terminate_pool);  // on the nodes that did open it
        if (!answered) throw std::runtime_error("the nodes did not open the pool within 60 s");
        const RemoteError& e = c.error;
        if (e.kind == RemoteError::Kind::task_error)
            throw TaskError(e.task, e.type, e.message, c.failed_node);
        throw std::runtime_error(
            fmt::format("node {} could not open the pool: {}", c.failed_node, e.message));
    }
    return c.workers;
}

void Coordinator::close(std::uint32_t pool, Tag tag) noexcept {
    std::unique_lock lock(mutex_);
    controls_[pool] = Control{};
    for (std::size_t n = 1; n <= nodes_.size(); ++n)
        transport_.post(static_cast<int>(n), tag, encode_pool(pool));
    answered_.wait_for(lock, answer_limit,
                       [&] { return controls_[pool].answers >= nodes_.size(); });
    controls_.erase(pool);
    pools_.erase(pool);
}

void Coordinator::shut_down() noexcept {
    if (!thread_.joinable()) return;
    stopping_.store(true);
    transport_.wake();
    thread_.join();
}

}  // namespace shmpool::cluster
