"""shmpool for Python: a drop-in ``multiprocessing.shared_memory`` on shmpool's C++ library, and
pools of C++ workers driven from Python.

``shmpool.shared_memory`` has the API of CPython's module (``SharedMemory``, ``ShareableList``)
without its bugs (docs/python.md). ``shmpool.install()`` makes ``multiprocessing.shared_memory``
imports, ``SharedMemoryManager``'s included, use it. ``shmpool.SharedArray`` is a numpy array in
a shared block that C++ programs read and write in place. ``shmpool.Pool`` runs a C++ worker
program's tasks with multiprocessing.Pool's methods.
"""

from . import shared_memory

_POOL_NAMES = ("Pool", "Future", "PoolStats", "WorkerEvent", "Progress", "ExitReason",
               "TaskSignature", "PoolError", "TaskError", "WorkerCrashed", "TaskTimeout",
               "TaskCancelled", "PoolClosed", "WorkerStartFailed", "IncompatibleWorker")

__all__ = ["shared_memory", "SharedArray", "install", *_POOL_NAMES]


def __getattr__(name):
    # Loaded on first use: SharedArray needs numpy, and the drop-in shared_memory (imported by
    # every interpreter that install()s it) needs neither numpy nor the pool's imports.
    if name == "SharedArray":
        from .shared_array import SharedArray
        return SharedArray
    if name in _POOL_NAMES:
        from . import pool
        return getattr(pool, name)
    raise AttributeError(f"module 'shmpool' has no attribute {name!r}")


def install():
    """Makes ``multiprocessing.shared_memory`` this package's module, from now on in this process.

    Call it before anything imports ``multiprocessing.managers`` (which binds the module it finds
    then). Child processes started with spawn or forkserver run it again only if they import
    shmpool and call it too; ``python/shmpool/_inject_stdlib.py`` does it for every interpreter of
    a virtual environment.
    """
    import multiprocessing
    import sys

    sys.modules["multiprocessing.shared_memory"] = shared_memory
    multiprocessing.shared_memory = shared_memory
    managers = sys.modules.get("multiprocessing.managers")
    if managers is not None and hasattr(managers, "shared_memory"):
        managers.shared_memory = shared_memory
