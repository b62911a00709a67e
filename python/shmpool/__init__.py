"""shmpool for Python: a drop-in ``multiprocessing.shared_memory`` on shmpool's C++ library.

``shmpool.shared_memory`` has the API of CPython's module (``SharedMemory``, ``ShareableList``)
without its bugs (docs/python.md). ``shmpool.install()`` makes ``multiprocessing.shared_memory``
imports, ``SharedMemoryManager``'s included, use it. ``shmpool.SharedArray`` is a numpy array in
a shared block that C++ programs read and write in place.
"""

from . import shared_memory

__all__ = ["shared_memory", "SharedArray", "install"]


def __getattr__(name):
    # SharedArray needs numpy; the drop-in shared_memory must not.
    if name == "SharedArray":
        from .shared_array import SharedArray
        return SharedArray
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
