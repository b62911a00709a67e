// The pool's errors as Python sees them (pool_errors.hpp).
#include "pool_errors.hpp"

#include <stdexcept>
#include <string>

#include "shmpool/framework/errors.hpp"

namespace py = pybind11;

namespace shmpool::python {
namespace {

// The item as the caller counts it (an imap's batch is a job of its own: its item 1 may be the
// stream's item 13), else as the job does.
std::size_t counted_item(std::size_t in_job, std::optional<std::size_t> counted) {
    return counted ? *counted : in_job;
}

// The error's message with the item as the caller counts it ("task 't' item 1" is the start of
// the messages of WorkerCrashed and TaskTimeout).
std::string with_item(const std::exception& e, const std::string& task, std::size_t in_job,
                      std::size_t counted) {
    std::string text = e.what();
    const std::string said = "task '" + task + "' item " + std::to_string(in_job);
    if (counted != in_job && text.starts_with(said))
        text.replace(0, said.size(), "task '" + task + "' item " + std::to_string(counted));
    return text;
}
std::string message(const std::exception& e) {
    return e.what();
}
std::string message(const std::string& text) {
    return text;
}

}  // namespace

py::object pool_exception(const std::exception_ptr& error, std::optional<std::size_t> item) {
    auto make = [&](const char* type, const auto& what, const py::dict& fields) {
        if (item) fields["item"] = *item;
        return py::module_::import("shmpool.pool").attr(type)(message(what), **fields);
    };
    try {
        std::rethrow_exception(error);
    } catch (const TaskError& e) {
        return make("TaskError", e,
                    py::dict(py::arg("task") = e.task(), py::arg("type") = e.type(),
                             py::arg("message") = e.message()));
    } catch (const WorkerCrashed& e) {
        item = counted_item(e.item(), item);
        return make("WorkerCrashed", with_item(e, e.task(), e.item(), *item),
                    py::dict(py::arg("task") = e.task(), py::arg("pid") = e.pid(),
                             py::arg("signal") = e.signal(), py::arg("exit_code") = e.exit_code(),
                             py::arg("attempts") = e.attempts()));
    } catch (const TaskTimeout& e) {
        item = counted_item(e.item(), item);
        return make("TaskTimeout", with_item(e, e.task(), e.item(), *item),
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

}  // namespace shmpool::python
