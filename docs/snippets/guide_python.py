#!/usr/bin/env python3
"""The Python half of the Python walk-through of docs/guide.md: usage: guide_python.py PROGRAM."""
# [guide-python]
import subprocess
import sys
from multiprocessing import shared_memory

import numpy as np

program = sys.argv[1]  # the C++ program below
n = 1_000_000
block = shared_memory.SharedMemory(create=True, size=n * 8)
values = np.ndarray((n,), dtype=np.float64, buffer=block.buf)
values[:] = np.linspace(0.0, 1.0, n)
job = shared_memory.ShareableList([block.name, n, "pending", 0.0])
try:
    subprocess.run([program, job.shm.name], check=True, timeout=120)
    assert job[2] == "done", job[2]
    assert np.allclose(values, np.linspace(0.0, 1.0, n) ** 2)
    assert np.isclose(job[3], values.sum()), (job[3], values.sum())
    print(f"squared {n} values in {block.name}, sum {job[3]:.1f}")
finally:
    del values  # numpy's view must go before the block can close
    block.close()
    block.unlink()
    job.shm.close()
    job.shm.unlink()
# [guide-python]
