#!/usr/bin/env python3
"""Runs shm_square on a numpy array in CPython shared memory and checks every value with numpy.

Usage: square_numpy.py PATH_TO_shm_square [--count N] [--workers W]

The block holds N values for shm_square plus a few guard values past them that it must leave
alone. A bad --count must fail with one error line and leave the data as it was. Whatever
happens, the block is unlinked at the end: this script created it, so it owns it.
"""
import argparse
import os
import re
import subprocess
import sys
from multiprocessing import resource_tracker, shared_memory

import numpy as np

GUARD = 8  # values past --count that shm_square must not touch


def run(exe, name, count, workers):
    cmd = [exe, "--name", name, "--count", str(count)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def check(exe, shm, n, workers):
    """Returns a list of problems, empty if all is well."""
    problems = []
    data = np.ndarray((n + GUARD,), dtype=np.float64, buffer=shm.buf)
    base = np.arange(n) * 0.5
    data[:n] = base
    data[n:] = -1.25 - np.arange(GUARD)  # squaring would change them
    before = data.copy()

    def block_exists():
        # shm_square only attaches: exiting must never remove the block.
        return os.path.exists("/dev/shm/" + shm.name)

    # Bad counts: exit 1, exactly one error line, nothing modified.
    for bad in (n + GUARD + 1, -1):
        r = run(exe, shm.name, bad, workers)
        lines = r.stderr.splitlines()
        if r.returncode != 1 or len(lines) != 1 or not lines[0].startswith("shm_square: error: "):
            problems.append(f"--count {bad}: expected exit 1 and one error line, got "
                            f"{r.returncode} and stderr {r.stderr!r}")
        if not np.array_equal(data, before):
            problems.append(f"--count {bad}: the data changed")
        if not block_exists():
            problems.append(f"--count {bad}: the block was removed")
    if problems:
        return problems

    r = run(exe, shm.name, n, workers)
    if r.returncode != 0:
        return [f"shm_square failed with {r.returncode}: {r.stderr.strip()}"]
    if not re.fullmatch(rf"squared {n} values in {re.escape(shm.name)} with \d+ workers\n",
                        r.stdout):
        problems.append(f"unexpected output {r.stdout!r}")
    # x * x is exactly rounded in C++ as in numpy: equality, not closeness.
    expected = base * base
    if not np.array_equal(data[:n], expected):
        bad = np.flatnonzero(data[:n] != expected)
        i = bad[0]
        problems.append(f"{bad.size} values not squared, first at [{i}]: "
                        f"{data[i]!r} instead of {expected[i]!r}")
    if not np.array_equal(data[n:], before[n:]):
        problems.append(f"values past --count {n} changed: {data[n:]} instead of {before[n:]}")
    if not block_exists():
        problems.append("the block was removed")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shm_square", help="path to the shm_square program")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    if args.count < 0:
        parser.error("--count must not be negative")

    shm = shared_memory.SharedMemory(create=True, size=(args.count + GUARD) * 8)
    try:
        problems = check(args.shm_square, shm, args.count, args.workers)
    finally:
        try:
            shm.unlink()  # first: it must happen even if close() below fails
        except FileNotFoundError:  # removed behind our back (check() says so): forget it
            resource_tracker.unregister(shm._name, "shared_memory")
        try:
            shm.close()
        except BufferError:
            pass  # a numpy view still held by a traceback; the process exit unmaps it
    if problems:
        for p in problems:
            print(f"square_numpy: FAILED: {p}", file=sys.stderr)
        return 1
    print(f"ok: {args.count} values squared by shm_square")
    return 0


if __name__ == "__main__":
    sys.exit(main())
