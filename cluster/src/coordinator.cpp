// Coordinator: the handshake, the communication loop of rank 0, pools opened and closed.
#include "coordinator.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
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
    std::vector<bool> heard(nodes_.size(), false);
    std::size_t left = nodes_.size();
    const auto deadline = std::chrono::steady_clock::now() + answer_limit;
    while (left > 0) {
        auto m = transport_.receive();
        if (!m) {
            if (std::chrono::steady_clock::now() > deadline) {
                std::vector<unsigned> silent;
                for (unsigned n = 1; n <= nodes_.size(); ++n)
                    if (!heard[n - 1]) silent.push_back(n);
                throw std::runtime_error(fmt::format("node(s) {} did not say hello within 60 s",
                                                     fmt::join(silent, ", ")));
            }
            transport_.sleep(100us);
            continue;
        }
        if (m->tag != static_cast<int>(Tag::hello) || m->source < 1) continue;
        const auto node = static_cast<unsigned>(m->source);
        auto refuse = [&](const std::string& why) {
            fmt::print(stderr,
                       "shmpool: node {} (rank {}) runs a program other than this one ({}): every "
                       "rank of a job must run the same binary; ending the job\n",
                       node, node, why);
            std::fflush(stderr);
            mpi::abort_job(1);
        };
        Hello h;
        try {
            h = decode<Hello>(m->bytes);
        } catch (const std::exception&) {
            refuse("its hello is in another format");
        }
        if (h.protocol != protocol_version)
            refuse(fmt::format("on {}: cluster protocol {}, this one {}", h.host, h.protocol,
                               protocol_version));
        if (h.tasks != tasks)
            refuse(fmt::format("on {}: its registered tasks differ, fingerprint {:x} against {:x}",
                               h.host, h.tasks, tasks));
        if (!heard[node - 1]) --left;
        heard[node - 1] = true;
        nodes_[node - 1] = {h.host, h.shm_identity, h.shm_identity == identity};
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
            const auto it = controls_.find(pool);
            if (it == controls_.end() || node < 1 || node > nodes_.size()) return;  // given up on
            Control& c = it->second;
            const bool closing = m.tag == static_cast<int>(Tag::pool_closed);
            if (closing != (c.phase == Phase::closing)) return;  // a late answer of an open
            if (m.tag == static_cast<int>(Tag::pool_ready)) {
                c.workers[node - 1] = decode<PoolReady>(m.bytes).workers;
            } else if (m.tag == static_cast<int>(Tag::pool_failed) && !c.failed) {
                c.failed = true;
                c.error = decode<PoolFailed>(m.bytes).error;
                c.failed_node = node;
            } else if (closing) {
                if (auto p = pools_.find(pool); p != pools_.end())
                    p->second->on_closed(node, decode<ClosedPool>(m.bytes).stats);
            }
            c.answered[node - 1] = true;
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
    Control& control = controls_[open.pool];
    control.answered.assign(nodes_.size(), false);
    control.workers.assign(nodes_.size(), 0);
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
    const std::vector<unsigned> silent = wait_for_answers(lock, open.pool);
    Control& c = controls_[open.pool];
    const Control opened = c;
    // Closing it waits for every node once all opened it, else for those that answered.
    if (silent.empty()) c.phase = Phase::open;
    if (silent.empty() && !opened.failed) return opened.workers;
    pools_.erase(open.pool);
    lock.unlock();
    close(open.pool, Tag::terminate_pool);  // on the nodes that did open it
    if (!silent.empty())
        throw std::runtime_error(
            fmt::format("node(s) {} did not open the pool within 60 s", fmt::join(silent, ", ")));
    const RemoteError& e = opened.error;
    if (e.kind == RemoteError::Kind::task_error)  // the initializer failed there
        throw TaskError(e.task, e.type, e.message, opened.failed_node);
    throw std::runtime_error(
        fmt::format("node {} could not open the pool: {}", opened.failed_node, e.message));
}

std::vector<unsigned> Coordinator::wait_for_answers(std::unique_lock<std::mutex>& lock,
                                                    std::uint32_t pool) {
    auto all = [&] {
        const auto& a = controls_[pool].answered;
        return std::find(a.begin(), a.end(), false) == a.end();
    };
    answered_.wait_for(lock, answer_limit, all);
    std::vector<unsigned> silent;
    const auto& a = controls_[pool].answered;
    for (unsigned n = 1; n <= a.size(); ++n)
        if (!a[n - 1]) silent.push_back(n);
    return silent;
}

void Coordinator::close(std::uint32_t pool, Tag tag) noexcept {
    std::unique_lock lock(mutex_);
    Control& c = controls_[pool];
    // A node that never answered the open is not waited for: it may never answer at all.
    std::vector<bool> expected =
        c.phase == Phase::open ? std::vector<bool>(nodes_.size(), true) : c.answered;
    c.phase = Phase::closing;
    c.answered.assign(nodes_.size(), false);
    for (std::size_t n = 1; n <= nodes_.size(); ++n) {
        if (expected.size() == nodes_.size() && !expected[n - 1]) c.answered[n - 1] = true;
        transport_.post(static_cast<int>(n), tag, encode_pool(pool));
    }
    try {
        const std::vector<unsigned> silent = wait_for_answers(lock, pool);
        if (!silent.empty())
            fmt::print(stderr, "shmpool: cluster: node(s) {} did not close pool {} within 60 s\n",
                       fmt::join(silent, ", "), pool);
    } catch (const std::exception&) {  // formatting: nothing to do about it
    }
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
