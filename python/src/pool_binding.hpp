// shmpool._core's pools (pool_binding.cpp): the types behind shmpool.Pool.
#pragma once

#include <pybind11/pybind11.h>

namespace shmpool::python {

/// Adds Signature, Items, Job, DoneSignal and PoolHandle to the module.
void bind_pool(pybind11::module_& m);

}  // namespace shmpool::python
