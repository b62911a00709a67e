"""README.md's Python example, run by the test suite (PYTHONPATH=build/python)."""
# [readme-python]
import numpy as np
from shmpool import shared_memory

block = shared_memory.SharedMemory(create=True, size=8 * 1000)
squares = np.ndarray((1000,), dtype=np.float64, buffer=block.buf)  # the block's memory
squares[:] = np.arange(1000) ** 2
block.close()             # safe: the array keeps the mapping until it goes
print(squares[999])       # 998001.0
block.unlink()

items = shared_memory.ShareableList(["né", b"\x01", 2.5, None])  # CPython's layout
print(items)              # ShareableList(['né', b'\x01', 2.5, None], name='psm_…')
items.shm.unlink()
# [readme-python]
