"""Imported from a .pth file of a virtual environment: every interpreter started there (the
multiprocessing children, the forkserver, ``python -I`` subprocesses) uses shmpool's module as
``multiprocessing.shared_memory``. For the acceptance test of CPython's own test suite."""

import shmpool

shmpool.install()
