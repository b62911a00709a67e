// shmpool._core's pools: a C++ Pool running a worker program's tasks for Python (shmpool.Pool in
// pool.py is the API; this is its engine). Items are encoded from the task's wire types
// (signature.hpp); results are decoded on the Python thread that asks for them.
//
// Threads. The C++ Pool is created and destroyed on a thread of its own (PoolHost), which lives
// as long as the pool: workers get SIGKILL when the thread that launched them exits, and a pool
// made from a short-lived Python thread must keep them. Every wait releases the GIL in slices of
// 20 ms and runs Python's signal handlers between them, so that Ctrl-C interrupts it. Callbacks
// (on_worker_exit, on_progress) take the GIL on the pool's callback thread, where no lock of the
// pool is held.
//
// The GIL is never held across a call into the pool (every call here releases it first), so the
// pool's threads can always take it; the locks of PoolHost and Job are taken without it.
#include "pool_binding.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "job.hpp"
#include "pool_errors.hpp"
#include "pool_host.hpp"
#include "shmpool/framework/detail/job_items.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/tracker.hpp"
#include "signature.hpp"

namespace py = pybind11;

namespace shmpool::python {
namespace {

using namespace std::chrono_literals;
constexpr auto wait_slice = 20ms;  // how late a Ctrl-C can be noticed while we wait

// Waits until `ready(slice)` holds, with the GIL released, running Python's signal handlers
// between slices: a KeyboardInterrupt (or any exception a handler raises) propagates.
// `timeout` < 0: no limit. Whether it became ready.
template <class Ready>
bool wait_interruptibly(Ready ready, double timeout) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(timeout < 0 ? 0 : timeout));
    while (true) {
        auto slice = std::chrono::milliseconds(wait_slice);
        if (timeout >= 0) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left <= 0ms) return ready(0ms);
            slice = std::min(slice, left);
        }
        bool done = false;
        {
            py::gil_scoped_release unlocked;
            done = ready(slice);
        }
        if (done) return true;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
}

// What shmpool.Pool holds: the host of its C++ Pool, and the callbacks it calls.
class PoolHandle {
  public:
    PoolHandle(PoolOptions options, py::object on_worker_exit, py::object on_progress)
        : owner_(::getpid()),
          on_worker_exit_(std::move(on_worker_exit)),
          on_progress_(std::move(on_progress)) {
        options.cluster.mode = ClusterMode::off;  // a Python program is no MPI rank
        if (!on_worker_exit_.is_none()) {
            options.on_worker_exit = [fn = on_worker_exit_.ptr()](const WorkerEvent& e) {
                deliver(fn, "_deliver_worker_exit", [&] {
                    return py::dict(py::arg("worker") = e.worker, py::arg("pid") = e.pid,
                                    py::arg("signal") = e.status.signal,
                                    py::arg("exit_code") = e.status.exit_code,
                                    py::arg("peak_rss_kb") = e.status.peak_rss_kb,
                                    py::arg("reason") = std::string(to_string(e.reason)),
                                    py::arg("task") = e.task, py::arg("item") = e.item);
                });
            };
        }
        if (!on_progress_.is_none()) {
            options.on_progress = [fn = on_progress_.ptr()](const Progress& p) {
                deliver(fn, "_deliver_progress", [&] {
                    return py::dict(
                        py::arg("task") = p.task, py::arg("done") = p.done,
                        py::arg("total") = p.total, py::arg("elapsed_seconds") = p.elapsed_seconds,
                        py::arg("rate") = p.rate, py::arg("eta_seconds") = p.eta_seconds);
                });
            };
        }
        {
            // The tracker's environment variable is set now, before the pool's threads run.
            py::gil_scoped_release unlocked;
            Tracker::ensure();
        }
        host_ = std::make_unique<PoolHost>(std::move(options));
        try {
            wait_interruptibly([&](auto slice) { return host_->wait_started(slice); }, -1);
        } catch (...) {  // interrupted while the workers start: stop them, then raise
            stop_host(PoolHost::Stop::terminate);
            throw;
        }
        if (std::exception_ptr e = host_->start_error()) {
            stop_host(PoolHost::Stop::terminate);
            raise_error(e, std::nullopt);
        }
    }
    ~PoolHandle() {
        if (::getpid() != owner_) {
            // A forked child: the pool, its threads and its workers are the parent's. Leave them.
            (void)host_.release();  // NOLINT(bugprone-unused-return-value)
            return;
        }
        try {
            if (host_) stop_host(PoolHost::Stop::terminate);
        } catch (...) {  // std::system_error from a lock: the host's destructor still stops it
        }
    }
    PoolHandle(const PoolHandle&) = delete;
    PoolHandle& operator=(const PoolHandle&) = delete;

    std::shared_ptr<Job> submit(const Signature& signature, Items& items, std::size_t chunksize,
                                bool single, std::shared_ptr<DoneSignal> signal,
                                std::uint64_t tag) {
        check_owner();
        if (items.submitted) throw std::logic_error("these items were submitted already");
        auto job = std::make_shared<Job>(
            Job::Shape{.task = signature.task(),
                       .items = items.items.size(),
                       .packed_stride = items.items.packed() ? signature.result_stride() : 0,
                       .keep_results = signature.returns_value(),
                       .single = single,
                       .signal = std::move(signal),
                       .tag = tag});
        if (items.items.empty()) return job;  // nothing to wait for
        items.submitted = true;
        py::gil_scoped_release unlocked;
        host().with_pool([&](Pool& pool) {
            if (chunksize == 0) {  // as Pool::map: a quarter of the items per worker
                const std::size_t per_job = std::size_t{4} * pool.size();
                chunksize = std::max<std::size_t>(1, (job->size() + per_job - 1) / per_job);
            }
            detail::submit_job(pool, signature.task(), std::move(items.items), job, chunksize);
        });
        return job;
    }
    void close() {
        check_owner();
        py::gil_scoped_release unlocked;
        try {
            host().with_pool([](Pool& pool) { pool.close(); });
        } catch (const PoolClosed&) {  // terminated already
        }
    }
    void terminate() {
        check_owner();
        check_not_in_callback("terminate");
        if (!host_) return;
        {
            py::gil_scoped_release unlocked;
            try {
                host_->with_pool([](Pool& pool) { pool.terminate(); });
            } catch (const PoolClosed&) {
            }
        }
        stop_host(PoolHost::Stop::terminate);
    }
    /// Waits for the queued work and the workers' exit (after close); whether it is over.
    bool join(double timeout) {
        check_owner();
        check_not_in_callback("join");
        if (!host_) return true;
        host_->stop(PoolHost::Stop::join);
        return wait_interruptibly([&](auto slice) { return host_->wait_finished(slice); }, timeout);
    }
    unsigned size() {
        check_owner();
        py::gil_scoped_release unlocked;
        return host().with_pool([](Pool& pool) { return pool.size(); });
    }
    std::vector<pid_t> worker_pids() {
        check_owner();
        py::gil_scoped_release unlocked;
        try {
            return host().with_pool([](Pool& pool) { return pool.worker_pids(); });
        } catch (const PoolClosed&) {
            return {};
        }
    }
    PoolStats stats() {
        check_owner();
        py::gil_scoped_release unlocked;
        return host().stats();
    }
    std::string control_block() {
        check_owner();
        py::gil_scoped_release unlocked;
        return host().with_pool([](Pool& pool) { return pool.control_block(); });
    }

  private:
    // On the pool's callback thread: shmpool.pool's `helper`(fn, fields) with the GIL; an
    // exception of the callback is reported as unraisable (the pool goes on).
    template <class Fields>
    static void deliver(PyObject* fn, const char* helper, Fields make_fields) {
        if (Py_IsInitialized() == 0 || interpreter_finalizing()) return;
        py::gil_scoped_acquire gil;
        try {
            py::module_::import("shmpool.pool").attr(helper)(py::handle(fn), make_fields());
        } catch (py::error_already_set& e) {
            e.discard_as_unraisable(helper);
        }
    }
    void check_owner() const {
        if (::getpid() != owner_)
            throw std::logic_error(
                "this shmpool.Pool belongs to process " + std::to_string(owner_) +
                ", of which this process is a fork: a forked child cannot use its parent's pool "
                "(create a pool of its own)");
    }
    // The pool stops its callback thread when it stops: not from that thread.
    static void check_not_in_callback(const char* what) {
        if (detail::in_pool_callback())
            throw std::runtime_error(std::string("a callback of the pool (on_worker_exit, "
                                                 "on_progress) cannot ") +
                                     what + " it");
    }
    PoolHost& host() {
        if (!host_) throw PoolClosed();
        return *host_;
    }
    // Stops the host and waits for it (the GIL released): terminate kills the workers, so this
    // is short.
    void stop_host(PoolHost::Stop how) {
        host_->stop(how);
        py::gil_scoped_release unlocked;
        host_->wait_finished(std::chrono::hours(24 * 365));
    }

    pid_t owner_;
    py::object on_worker_exit_;
    py::object on_progress_;
    std::unique_ptr<PoolHost> host_;
};

// shmpool.Pool's keyword arguments (pool.py checked their names) as PoolOptions.
PoolOptions pool_options(const py::dict& given) {
    PoolOptions o;
    auto seconds = [](const py::handle& v) { return v.cast<double>(); };
    for (const auto& [key, value] : given) {
        const auto name = key.cast<std::string>();
        if (value.is_none()) continue;
        if (name == "workers") {
            o.workers = value.cast<unsigned>();
        } else if (name == "max_retries") {
            o.max_retries = value.cast<int>();
        } else if (name == "task_timeout") {
            o.task_timeout = std::chrono::milliseconds(
                static_cast<std::int64_t>(std::ceil(seconds(value) * 1000)));
        } else if (name == "max_start_failures") {
            o.max_start_failures = value.cast<unsigned>();
        } else if (name == "kill_grace") {
            o.kill_grace = std::chrono::milliseconds(
                static_cast<std::int64_t>(std::ceil(seconds(value) * 1000)));
        } else if (name == "slot_bytes") {
            o.slot_bytes = value.cast<std::size_t>();
        } else if (name == "max_result_bytes") {
            o.max_result_bytes = value.cast<std::size_t>();
        } else if (name == "executable") {
            o.worker_executable = value.cast<std::string>();
        } else if (name == "start_method") {
            const auto method = value.cast<std::string>();
            if (method == "exec") {
                o.start_method = StartMethod::exec;
            } else if (method == "fork_server") {
                o.start_method = StartMethod::fork_server;
            } else {
                throw py::value_error("start_method must be 'exec' or 'fork_server', not '" +
                                      method + "'");
            }
        } else if (name == "shared_blocks") {
            o.shared_blocks = value.cast<std::vector<std::string>>();
        } else if (name == "prefault_shared_blocks") {
            o.prefault_shared_blocks = value.cast<bool>();
        } else if (name == "environment") {
            o.environment = value.cast<std::vector<std::string>>();
        } else if (name == "initializer") {
            o.initializer.name = value.cast<std::string>();
        } else if (name == "progress_bar") {
            o.progress_bar = value.cast<bool>();
        } else if (name == "threads_per_worker") {
            o.threads_per_worker = value.cast<unsigned>();
        } else if (name == "idle_spin") {
            o.idle_spin = std::chrono::microseconds(
                static_cast<std::int64_t>(std::llround(seconds(value) * 1e6)));
        } else if (name == "measure_busy") {
            o.measure_busy = value.cast<bool>();
        } else if (name == "max_tasks_per_worker") {
            o.max_tasks_per_worker = value.cast<std::size_t>();
        } else if (name == "max_memory_per_worker") {
            o.max_memory_per_worker = value.cast<std::size_t>();
        } else {
            throw py::type_error("unknown pool option '" + name + "'");
        }
    }
    return o;
}

py::dict stats_dict(const PoolStats& s) {
    return py::dict(py::arg("tasks_done") = s.tasks_done, py::arg("tasks_failed") = s.tasks_failed,
                    py::arg("retries") = s.retries, py::arg("crashes") = s.crashes,
                    py::arg("respawns") = s.respawns, py::arg("start_failures") = s.start_failures,
                    py::arg("timeouts") = s.timeouts, py::arg("cancelled") = s.cancelled,
                    py::arg("recycled_tasks") = s.recycled_tasks,
                    py::arg("recycled_memory") = s.recycled_memory,
                    py::arg("reclaimed") = s.reclaimed, py::arg("stolen_ranges") = s.stolen_ranges,
                    py::arg("busy_seconds") = s.busy_seconds);
}

double timeout_seconds(const std::optional<double>& timeout) {
    if (timeout && *timeout < 0) throw py::value_error("timeout must not be negative");
    return timeout ? *timeout : -1;
}

}  // namespace

void bind_pool(py::module_& m) {
    // The pool's errors thrown by any call (PoolClosed, WorkerStartFailed, ...).
    // NOLINTNEXTLINE(performance-unnecessary-value-param): the signature pybind11 takes
    py::register_exception_translator([](std::exception_ptr p) {
        if (!p) return;
        const py::object e = pool_exception(p, std::nullopt);
        if (e.is_none()) std::rethrow_exception(p);  // for the next translator
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e.ptr())), e.ptr());
    });

    m.def("in_pool_callback", &detail::in_pool_callback,
          "Whether this thread is delivering a pool's callbacks.");
    py::class_<Items>(m, "Items").def("__len__", [](const Items& i) { return i.items.size(); });

    py::class_<Signature>(m, "Signature")
        .def(py::init<std::string, const std::vector<std::string>&, const std::string&,
                      std::optional<std::pair<std::uint32_t, std::uint32_t>>>(),
             py::arg("task"), py::arg("args"), py::arg("result"), py::arg("packed"))
        .def_property_readonly("task", &Signature::task)
        .def_property_readonly("arity", &Signature::arity)
        .def_property_readonly("arg_types", &Signature::arg_types)
        .def_property_readonly("result_type", &Signature::result_type)
        .def_property_readonly("packed", &Signature::packed)
        .def("encode_calls", &Signature::encode_calls, py::arg("calls"), py::arg("star"),
             py::arg("first_index") = 0)
        .def("encode_ranges", &Signature::encode_ranges, py::arg("leading"), py::arg("n"),
             py::arg("grain"))
        .def("result", &Signature::result, py::arg("job"), py::arg("index"),
             py::arg("first_index") = 0)
        .def("results", &Signature::results, py::arg("job"), py::arg("first_index") = 0)
        .def("results_into", &Signature::results_into, py::arg("job"), py::arg("out"));

    py::class_<DoneSignal, std::shared_ptr<DoneSignal>>(m, "DoneSignal")
        .def(py::init<>())
        .def(
            "take",
            [](DoneSignal& s, std::optional<double> timeout) {
                std::vector<std::uint64_t> tags;
                wait_interruptibly(
                    [&](auto slice) {
                        tags = s.take(slice);
                        return !tags.empty();
                    },
                    timeout_seconds(timeout));
                return tags;
            },
            py::arg("timeout") = py::none(),
            "The tags of the jobs done since the last call, waiting up to `timeout` s for one.");

    py::class_<Job, std::shared_ptr<Job>>(m, "Job")
        .def("__len__", &Job::size)
        .def_property_readonly("task", &Job::task)
        .def(
            "wait",
            [](Job& j, std::optional<double> timeout) {
                return wait_interruptibly([&](auto slice) { return j.wait_for(slice); },
                                          timeout_seconds(timeout));
            },
            py::arg("timeout") = py::none())
        .def("done", &Job::done)
        .def(
            "cancel",
            [](Job& j, bool kill) {
                py::gil_scoped_release unlocked;
                return j.cancel(kill);
            },
            py::arg("kill") = false);

    py::class_<PoolHandle>(m, "PoolHandle")
        .def(py::init(
                 [](const py::dict& options, py::object on_worker_exit, py::object on_progress) {
                     return std::make_unique<PoolHandle>(
                         pool_options(options), std::move(on_worker_exit), std::move(on_progress));
                 }),
             py::arg("options"), py::arg("on_worker_exit") = py::none(),
             py::arg("on_progress") = py::none())
        .def("submit", &PoolHandle::submit, py::arg("signature"), py::arg("items"),
             py::arg("chunksize"), py::arg("single") = false, py::arg("signal") = nullptr,
             py::arg("tag") = 0)
        .def("close", &PoolHandle::close)
        .def("terminate", &PoolHandle::terminate)
        .def(
            "join",
            [](PoolHandle& p, std::optional<double> timeout) {
                return p.join(timeout_seconds(timeout));
            },
            py::arg("timeout") = py::none())
        .def_property_readonly("size", &PoolHandle::size)
        .def("worker_pids", &PoolHandle::worker_pids)
        .def("stats", [](PoolHandle& p) { return stats_dict(p.stats()); })
        .def_property_readonly("control_block", &PoolHandle::control_block);
}

}  // namespace shmpool::python
