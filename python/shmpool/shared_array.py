"""SharedArray: a numpy array whose memory is a shared block, which C++ reads and writes in place
(a C++ ``shmpool::SharedArray<T>`` attaches the same block: no header, the elements only)."""

import numpy as np

from .shared_memory import SharedMemory

__all__ = ["SharedArray"]


class SharedArray(np.ndarray):
    """A numpy array in a named shared block. ``name`` goes to C++ tasks (or any process), which
    attach the block as ``SharedArray<T>`` of the same element type; ``np.shares_memory`` holds
    between the array, its views and the block. Slices and views share the block too and keep it
    mapped. The creator owns the block: ``unlink()`` removes it (the tracker does if the creator
    dies first)."""

    @classmethod
    def create(cls, shape, dtype=np.float64, *, name=None):
        """A new array of `shape` and `dtype` (zero-filled) in a new block."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in np.atleast_1d(shape))
        if any(n < 0 for n in shape):
            raise ValueError(f"negative dimensions are not allowed: {shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        block = SharedMemory(name, create=True, size=max(nbytes, 1))
        try:
            return cls._over(block, shape, dtype)
        except BaseException:
            block.unlink()  # nothing half-made is left behind
            raise

    @classmethod
    def attach(cls, name, dtype=np.float64, shape=None):
        """The array in block `name`: `shape` defaults to all of the block's elements."""
        dtype = np.dtype(dtype)
        block = SharedMemory(name)
        if shape is None:
            if block.size % dtype.itemsize:
                raise ValueError(f"block {name!r} of {block.size} bytes does not hold whole "
                                 f"{dtype} elements")
            shape = (block.size // dtype.itemsize,)
        return cls._over(block, shape, dtype)

    @classmethod
    def _over(cls, block, shape, dtype):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > block.size:
            raise ValueError(f"block {block.name!r} holds {block.size} bytes, not the {nbytes} "
                             f"of shape {tuple(np.atleast_1d(shape))} in {dtype}")
        array = np.ndarray(shape, dtype=dtype, buffer=block.buf).view(cls)
        array._block = block
        return array

    def __array_finalize__(self, obj):
        # A view keeps the block; a result in memory of its own (a + 1, a.copy()) is no
        # SharedArray's data, and has no block.
        block = getattr(obj, "_block", None)
        self._block = block if block is not None and np.may_share_memory(self, obj) else None

    def __reduce__(self):
        # The whole array of a block travels by name (the receiver attaches it); anything else
        # (a view, a copy) as numpy pickles it, a copy.
        block = getattr(self, "_block", None)
        if block is not None and self.flags.c_contiguous and self.base is not None and \
                self.__array_interface__["data"][0] == _address(block):
            return (SharedArray.attach, (block.name, self.dtype, self.shape))
        return np.asarray(self).__reduce__()

    def _shared_block(self):
        block = getattr(self, "_block", None)
        if block is None:
            raise ValueError("this array is not in a shared block (a copy, or a result of numpy's)")
        return block

    @property
    def name(self):
        """The block's name, for C++ tasks and other processes."""
        return self._shared_block().name

    @property
    def _shmpool_block_name(self):
        # What shmpool.Pool passes to a C++ task taking a std::string.
        return self.name

    def unlink(self):
        """Removes the block from /dev/shm; the memory stays valid while arrays use it."""
        self._shared_block().unlink()


def _address(block):
    return np.frombuffer(block.buf, dtype=np.uint8, count=0).__array_interface__["data"][0]
