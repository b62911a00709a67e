// shmpool._core's pools: a C++ Pool running a worker program's tasks for Python (shmpool.Pool in
// pool.py is the API; this is its engine). Items are encoded here, from the task's wire types;
// results are decoded here, on the Python thread that asks for them.
//
// Threads. The C++ Pool is created and destroyed on a thread of its own (PoolHost), which lives
// as long as the pool: workers get SIGKILL when the thread that launched them exits, and a pool
// made from a short-lived Python thread must keep them. Every wait releases the GIL in slices of
// 20 ms and runs Python's signal handlers between them, so that Ctrl-C interrupts it. Callbacks
// (on_worker_exit, on_progress) take the GIL on the pool's callback thread, where no lock of the
// pool is held.
//
// Lock order: the GIL, then PoolHost::alive_ (shared by callers, exclusive only to destroy the
// pool). No call into the pool is made with the GIL held, so the pool's threads can always take
// it.
#include "pool_binding.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "job.hpp"
#include "shmpool/framework/detail/job_items.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/tracker.hpp"
#include "wire_type.hpp"

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

// An error of the pool as the exception of shmpool.pool that stands for it, with its fields
// (and the item, when there is one); None for another error.
py::object pool_exception(const std::exception_ptr& error, std::optional<std::size_t> item) {
    auto make = [&](const char* type, const std::exception& e, const py::dict& fields) {
        if (item) fields["item"] = *item;
        return py::module_::import("shmpool.pool").attr(type)(e.what(), **fields);
    };
    try {
        std::rethrow_exception(error);
    } catch (const TaskError& e) {
        return make("TaskError", e,
                    py::dict(py::arg("task") = e.task(), py::arg("type") = e.type(),
                             py::arg("message") = e.message()));
    } catch (const WorkerCrashed& e) {
        item = e.item();
        return make("WorkerCrashed", e,
                    py::dict(py::arg("task") = e.task(), py::arg("pid") = e.pid(),
                             py::arg("signal") = e.signal(), py::arg("exit_code") = e.exit_code(),
                             py::arg("attempts") = e.attempts()));
    } catch (const TaskTimeout& e) {
        item = e.item();
        return make("TaskTimeout", e,
                    py::dict(py::arg("task") = e.task(), py::arg("seconds") = e.seconds()));
    } catch (const TaskCancelled& e) {
        return make("TaskCancelled", e, py::dict());
    } catch (const PoolClosed& e) {
        return make("PoolClosed", e, py::dict());
    } catch (const WorkerStartFailed& e) {
        return make("WorkerStartFailed", e, py::dict(py::arg("executable") = e.executable()));
    } catch (const ForkServerDied& e) {
        return make("WorkerStartFailed", e, py::dict());
    } catch (const IncompatibleWorker& e) {
        return make("IncompatibleWorker", e, py::dict());
    } catch (...) {
        return py::none();
    }
}

// Raises a job's error as Python sees it: the pool's own as shmpool.pool's exceptions, a
// std::length_error (arguments too big for any slot) as ValueError, others as the module's
// translators say (std::system_error: OSError, ...).
[[noreturn]] void raise_error(const std::exception_ptr& error, std::optional<std::size_t> item) {
    if (const py::object e = pool_exception(error, item); !e.is_none()) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e.ptr())), e.ptr());
        throw py::error_already_set();
    }
    try {
        std::rethrow_exception(error);
    } catch (const std::length_error& e) {
        std::string what = e.what();
        if (item) what = "item " + std::to_string(*item) + ": " + what;
        throw py::value_error(what);
    }
}

// The C++ Pool, on the thread that creates and destroys it (see the file's comment).
class PoolHost {
  public:
    enum class Stop { none, join, terminate };

    explicit PoolHost(PoolOptions options)
        : thread_([this, o = std::move(options)]() mutable { run(std::move(o)); }) {}
    ~PoolHost() {
        stop(Stop::terminate);
        thread_.join();
    }
    PoolHost(const PoolHost&) = delete;
    PoolHost& operator=(const PoolHost&) = delete;

    bool wait_started(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return started_; });
    }
    bool wait_finished(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return finished_; });
    }
    std::exception_ptr start_error() {
        std::lock_guard lock(mutex_);
        return start_error_;
    }
    /// Asks the host to close and join the pool, or to terminate it; a terminate overrides a
    /// join that has not begun.
    void stop(Stop how) {
        {
            std::lock_guard lock(mutex_);
            if (stop_ == Stop::none || how == Stop::terminate) stop_ = how;
        }
        cv_.notify_all();
    }
    /// Calls `f(pool)` while the pool exists; PoolClosed once it is gone.
    template <class F>
    auto with_pool(F f) {
        std::shared_lock alive(alive_);
        if (!pool_) throw PoolClosed();
        return f(*pool_);
    }
    /// The statistics, kept when the pool is gone.
    PoolStats stats() {
        std::shared_lock alive(alive_);
        return pool_ ? pool_->stats() : final_stats_;
    }

  private:
    void run(PoolOptions options) {
        {
            std::unique_lock alive(alive_);
            try {
                pool_.emplace(std::move(options));
            } catch (...) {
                std::lock_guard lock(mutex_);
                start_error_ = std::current_exception();
            }
        }
        {
            std::unique_lock lock(mutex_);
            started_ = true;
            cv_.notify_all();
            if (pool_) cv_.wait(lock, [&] { return stop_ != Stop::none; });
        }
        if (pool_) {
            // Thread-safe calls, under no lock of ours: a caller may terminate meanwhile.
            Stop how = Stop::none;
            {
                std::lock_guard lock(mutex_);
                how = stop_;
            }
            if (how == Stop::join) {
                pool_->close();
                pool_->join();
            } else {
                pool_->terminate();
            }
            std::unique_lock alive(alive_);
            final_stats_ = pool_->stats();
            pool_.reset();
        }
        std::lock_guard lock(mutex_);
        finished_ = true;
        cv_.notify_all();
    }

    std::mutex mutex_;  // started_, finished_, stop_, start_error_
    std::condition_variable cv_;
    bool started_ = false;
    bool finished_ = false;
    Stop stop_ = Stop::none;
    std::exception_ptr start_error_;
    std::shared_mutex alive_;  // pool_: shared to use it, exclusive to make or destroy it
    std::optional<Pool> pool_;
    PoolStats final_stats_;
    std::thread thread_;  // last: it starts with everything above constructed
};

// Items encoded for one job (see Signature).
struct Items {
    detail::JobItems items;
    bool submitted = false;
};

// A task's wire types, as its worker program described them.
class Signature {
  public:
    Signature(std::string task, const std::vector<std::string>& args, const std::string& result,
              std::optional<std::pair<std::uint32_t, std::uint32_t>> packed)
        : task_(std::move(task)), result_(parse_wire_type(result)) {
        for (const std::string& a : args)
            args_.push_back(parse_wire_type(a));
        if (packed) {
            if (args_.size() != 1 || args_[0].size != packed->first ||
                (result_.kind != WireType::Kind::none && result_.size != packed->second))
                throw std::invalid_argument("task '" + task_ +
                                            "': its packed strides do not match its types");
            packed_ = packed;
        }
    }
    const std::string& task() const noexcept { return task_; }
    std::size_t arity() const noexcept { return args_.size(); }
    bool packed() const noexcept { return packed_.has_value(); }
    std::size_t result_stride() const noexcept { return packed_ ? packed_->second : 0; }
    bool returns_value() const noexcept { return result_.kind != WireType::Kind::none; }
    std::vector<std::string> arg_types() const {
        std::vector<std::string> out;
        for (const WireType& a : args_)
            out.push_back(a.text);
        return out;
    }
    const std::string& result_type() const noexcept { return result_.text; }

    /// One job's items: each item of `calls` is the argument (star: the tuple of arguments) of
    /// one call. Nothing is encoded unless every item is; the error names the item.
    std::unique_ptr<Items> encode_calls(const py::iterable& calls, bool star,
                                        std::size_t first_index) const {
        if (!star && args_.size() != 1)
            throw py::type_error("task '" + task_ + "' takes " + std::to_string(args_.size()) +
                                 " arguments: use starmap (one tuple of arguments per item)");
        auto out = std::make_unique<Items>();
        detail::JobItems& items = out->items;
        if (packed_ && !star) {
            items.in_stride = packed_->first;
            items.out_stride = packed_->second;
            if (packed_from_buffer(calls, items) || packed_scalars(calls, first_index, items))
                return out;
            std::size_t i = 0;
            for (const py::handle item : calls) {
                encode_argument(item, 0, first_index + i, items.args);
                ++i;
            }
            items.count = i;
            return out;
        }
        std::size_t i = 0;
        for (const py::handle item : calls) {
            if (star) {
                encode_call(item, first_index + i, items.args);
            } else {
                encode_argument(item, 0, first_index + i, items.args);
            }
            items.offsets.push_back(items.args.size());
            ++i;
        }
        return out;
    }

    /// for_each_index: calls (leading..., begin, end) over [0, n) in ranges of `grain`.
    std::unique_ptr<Items> encode_ranges(const py::tuple& leading, std::size_t n,
                                         std::size_t grain) const {
        if (args_.size() < 2 || leading.size() + 2 != args_.size() ||
            args_[args_.size() - 1].text != "u64" || args_[args_.size() - 2].text != "u64")
            throw py::type_error("task '" + task_ + "' (" + describe() + ") does not take " +
                                 std::to_string(leading.size()) +
                                 " leading arguments and a range (two size_t) last");
        std::string prefix;
        for (std::size_t k = 0; k < leading.size(); ++k)
            encode_argument(leading[k], k, std::nullopt, prefix);
        auto out = std::make_unique<Items>();
        out->items.index_ranges = true;
        grain = std::max<std::size_t>(grain, 1);
        for (std::size_t b = 0; b < n; b += grain) {
            out->items.args += prefix;
            const std::uint64_t range[2] = {b, std::min(n, b + grain)};
            out->items.args.append(reinterpret_cast<const char*>(range), sizeof range);
            out->items.offsets.push_back(out->items.args.size());
        }
        return out;
    }

    /// Item `index` of `job`: its result, or its error raised (named `first_index + index`).
    py::object result(const Job& job, std::size_t index, std::size_t first_index) const {
        if (std::exception_ptr e = job.error(index)) raise_error(e, first_index + index);
        return decode_result(job, index);
    }
    /// Every result of `job` in order, or the error of its lowest failed item.
    py::list results(const Job& job, std::size_t first_index) const {
        if (auto [index, e] = job.first_error(); e) raise_error(e, first_index + index);
        if (packed_ && result_.fixed() && job.size() > 0) {
            if (auto fast = packed_numbers(job)) return *fast;
        }
        py::list out(job.size());
        for (std::size_t i = 0; i < job.size(); ++i)
            out[i] = decode_result(job, i);
        return out;
    }

    /// Copies the results of a packed `job` into `out` (a writable buffer of exactly their
    /// bytes, e.g. a numpy array of the result's type), or raises its lowest failed item's error.
    void results_into(const Job& job, const py::buffer& out) const {
        if (auto [index, e] = job.first_error(); e) raise_error(e, index);
        if (!packed_ || !result_.fixed())
            throw py::type_error("task '" + task_ + "' does not return one number per item");
        const py::buffer_info view = out.request(true);
        const std::size_t bytes = job.size() * result_.size;
        if (static_cast<std::size_t>(view.size * view.itemsize) != bytes)
            throw py::value_error("the output holds " + std::to_string(view.size * view.itemsize) +
                                  " bytes, not the results' " + std::to_string(bytes));
        if (bytes != 0) std::memcpy(view.ptr, job.result(0).first, bytes);
    }

  private:
    std::string describe() const {
        std::string out;
        for (const std::string& a : arg_types())
            out += (out.empty() ? "" : ", ") + a;
        return "(" + out + ") -> " + result_.text;
    }
    [[noreturn]] void argument_error(const WireError& e, std::size_t argument,
                                     std::optional<std::size_t> item) const {
        std::string where = "task '" + task_ + "'";
        if (item) where += " item " + std::to_string(*item);
        where += " argument " + std::to_string(argument);
        PyErr_SetString(e.python_type(), (where + ": " + e.what()).c_str());
        throw py::error_already_set();
    }
    void encode_argument(py::handle value, std::size_t argument, std::optional<std::size_t> item,
                         std::string& out) const {
        try {
            encode(args_[argument], value, out);
        } catch (const WireError& e) {
            argument_error(e, argument, item);
        }
    }
    void encode_call(py::handle call, std::size_t item, std::string& out) const {
        if (PyUnicode_Check(call.ptr()) || !PySequence_Check(call.ptr()))
            throw py::type_error("task '" + task_ + "' item " + std::to_string(item) +
                                 ": expects a tuple of " + std::to_string(args_.size()) +
                                 " arguments, got " +
                                 std::string(py::str(py::type::handle_of(call).attr("__name__"))));
        const py::sequence args = py::reinterpret_borrow<py::sequence>(call);
        if (args.size() != args_.size())
            throw py::type_error("task '" + task_ + "' item " + std::to_string(item) +
                                 ": expects " + std::to_string(args_.size()) + " arguments, got " +
                                 std::to_string(args.size()));
        for (std::size_t k = 0; k < args_.size(); ++k)
            encode_argument(args[k], k, item, out);
    }
    // A 1-D contiguous buffer (a numpy array) whose elements are the argument type: one copy.
    bool packed_from_buffer(const py::iterable& calls, detail::JobItems& items) const {
        if (!PyObject_CheckBuffer(calls.ptr()) || PyBytes_Check(calls.ptr()) ||
            PyByteArray_Check(calls.ptr()))
            return false;
        Py_buffer view;
        if (PyObject_GetBuffer(calls.ptr(), &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) != 0) {
            PyErr_Clear();
            return false;
        }
        const bool fits = view.ndim == 1 &&
                          static_cast<std::size_t>(view.itemsize) == args_[0].size &&
                          format_matches(view.format ? view.format : "B", args_[0]);
        if (fits) {
            items.args.assign(static_cast<const char*>(view.buf),
                              static_cast<std::size_t>(view.len));
            items.count = static_cast<std::size_t>(view.len / view.itemsize);
        }
        PyBuffer_Release(&view);
        return fits;
    }
    // The common inputs of a task of one number, without the general encoder's calls per item:
    // a range (no Python object per item at all), a list or a tuple.
    bool packed_scalars(const py::iterable& calls, std::size_t first_index,
                        detail::JobItems& items) const {
        const WireType& type = args_[0];
        const bool integer =
            type.kind == WireType::Kind::signed_int || type.kind == WireType::Kind::unsigned_int;
        if (!integer && type.kind != WireType::Kind::real) return false;
        const std::size_t stride = type.size;
        if (PyRange_Check(calls.ptr())) {
            if (!integer) return false;
            long long bounds[3];
            const char* names[3] = {"start", "stop", "step"};
            for (int k = 0; k < 3; ++k) {
                int overflow = 0;
                bounds[k] = PyLong_AsLongLongAndOverflow(calls.attr(names[k]).ptr(), &overflow);
                if (overflow != 0) return false;  // the general encoder says which item is out
            }
            const auto n = static_cast<std::size_t>(PyObject_Length(calls.ptr()));
            if (n == 0) return true;
            const long long last = bounds[0] + static_cast<long long>(n - 1) * bounds[2];
            if (!fits(type, bounds[0]) || !fits(type, last)) return false;
            items.args.resize(n * stride);
            char* out = items.args.data();
            long long v = bounds[0];
            for (std::size_t i = 0; i < n; ++i, v += bounds[2])
                std::memcpy(out + i * stride, &v, stride);  // little-endian: the low bytes
            items.count = n;
            return true;
        }
        if (!PyList_CheckExact(calls.ptr()) && !PyTuple_CheckExact(calls.ptr())) return false;
        const py::object sequence = py::reinterpret_borrow<py::object>(calls);
        const auto n = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(sequence.ptr()));
        PyObject** values = PySequence_Fast_ITEMS(sequence.ptr());
        items.args.resize(n * stride);
        std::string other;
        for (std::size_t i = 0; i < n; ++i) {
            char* at = items.args.data() + i * stride;
            PyObject* value = values[i];
            if (integer && PyLong_CheckExact(value)) {
                int overflow = 0;
                const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
                if (overflow == 0 && fits(type, v)) {
                    std::memcpy(at, &v, stride);
                    continue;
                }
            } else if (!integer && PyFloat_CheckExact(value) && stride == sizeof(double)) {
                const double v = PyFloat_AS_DOUBLE(value);
                std::memcpy(at, &v, stride);
                continue;
            }
            other.clear();  // anything else, and the errors, as the general encoder does them
            encode_argument(value, 0, first_index + i, other);
            std::memcpy(at, other.data(), stride);
        }
        items.count = n;
        return true;
    }
    static bool fits(const WireType& type, long long v) {
        const std::size_t bits = 8 * type.size;
        if (type.kind == WireType::Kind::unsigned_int)
            return v >= 0 && (bits >= 64 || static_cast<unsigned long long>(v) < (1ULL << bits));
        return bits >= 64 || (v >= -(1LL << (bits - 1)) && v < (1LL << (bits - 1)));
    }
    static bool format_matches(std::string_view format, const WireType& type) {
        if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == '<'))
            format.remove_prefix(1);
        if (format.size() != 1) return false;
        const char c = format[0];
        switch (type.kind) {
            case WireType::Kind::signed_int:
                return std::string_view("bhilq").find(c) != std::string_view::npos;
            case WireType::Kind::unsigned_int:
                return std::string_view("BHILQ").find(c) != std::string_view::npos;
            case WireType::Kind::real:
                return c == 'f' || c == 'd';  // the itemsize tells which
            case WireType::Kind::boolean:
                return c == '?';
            default:
                return false;
        }
    }
    // The results of a packed job of numbers, read straight from its buffer.
    std::optional<py::list> packed_numbers(const Job& job) const {
        const WireType& type = result_;
        const std::size_t n = job.size();
        const char* at = job.result(0).first;  // settled: nothing writes there any more
        auto build = [&](auto read) {
            py::list out(n);
            for (std::size_t i = 0; i < n; ++i) {
                PyObject* value = read(at + i * type.size);
                if (value == nullptr) throw py::error_already_set();
                PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), value);
            }
            return out;
        };
        auto load = [](const char* p, auto zero) {
            decltype(zero) v;
            std::memcpy(&v, p, sizeof v);
            return v;
        };
        switch (type.kind) {
            case WireType::Kind::signed_int:
                if (type.size == 4)
                    return build(
                        [&](const char* p) { return PyLong_FromLong(load(p, std::int32_t{})); });
                if (type.size == 8)
                    return build([&](const char* p) {
                        return PyLong_FromLongLong(load(p, std::int64_t{}));
                    });
                return std::nullopt;
            case WireType::Kind::unsigned_int:
                if (type.size == 4)
                    return build([&](const char* p) {
                        return PyLong_FromUnsignedLong(load(p, std::uint32_t{}));
                    });
                if (type.size == 8)
                    return build([&](const char* p) {
                        return PyLong_FromUnsignedLongLong(load(p, std::uint64_t{}));
                    });
                return std::nullopt;
            case WireType::Kind::real:
                if (type.size == 8)
                    return build(
                        [&](const char* p) { return PyFloat_FromDouble(load(p, double{})); });
                return build([&](const char* p) { return PyFloat_FromDouble(load(p, float{})); });
            default:
                return std::nullopt;
        }
    }
    py::object decode_result(const Job& job, std::size_t index) const {
        if (result_.kind == WireType::Kind::none) return py::none();
        const auto [bytes, size] = job.result(index);
        Reader in(bytes, size);
        return decode(result_, in);
    }

    std::string task_;
    std::vector<WireType> args_;
    WireType result_;
    std::optional<std::pair<std::uint32_t, std::uint32_t>> packed_;
};

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
