// The pool's errors as Python sees them: shmpool.pool's exceptions, with their fields and the
// item concerned.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <exception>
#include <optional>

namespace shmpool::python {

/// The exception of shmpool.pool that stands for an error of the pool (TaskError, WorkerCrashed,
/// PoolClosed, ...), with its fields and `item` (the item as the caller counts it, when given);
/// None for any other error.
pybind11::object pool_exception(const std::exception_ptr& error, std::optional<std::size_t> item);

/// Raises an error of a job as Python sees it: the pool's own as pool_exception() makes them, a
/// std::length_error (arguments too big for any slot) as ValueError, others as the module's
/// translators say (std::system_error: OSError, ...).
[[noreturn]] void raise_error(const std::exception_ptr& error, std::optional<std::size_t> item);

}  // namespace shmpool::python
