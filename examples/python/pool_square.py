#!/usr/bin/env python3
"""shm_square driven from Python: a numpy array in shared memory, squared in place by the C++
workers of examples/shm_square (its task `square_task`), and checked with numpy.

Usage: pool_square.py PATH_TO_shm_square [--count N] [--workers W]

No copy is made: the workers write the array's own memory (np.shares_memory holds between the
array and a view taken before the run, which sees the squares).
"""
import argparse
import sys

import numpy as np

import shmpool


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shm_square", help="the shm_square program (the worker program)")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be at least 1 (got {args.count})")

    values = shmpool.SharedArray.create(args.count, np.float64)
    try:
        values[:] = np.linspace(-3.0, 3.0, args.count)
        expected = values ** 2  # numpy's answer, in memory of its own
        head = values[:10]  # a view: the same memory
        with shmpool.Pool(args.shm_square, args.workers, shared_blocks=[values]) as pool:
            # square_task(block name, begin, end): the array goes by name.
            pool.for_each_index("square_task", args.count, values)
            workers = pool.size
        if not np.array_equal(values, expected):
            wrong = int(np.flatnonzero(values != expected)[0])
            print(f"pool_square: error: value {wrong} is {values[wrong]}, not {expected[wrong]}",
                  file=sys.stderr)
            return 1
        assert np.shares_memory(head, values) and head[0] == 9.0
        print(f"ok: {args.count} values squared in place in {values.name} by {workers} C++ "
              f"workers")
        return 0
    finally:
        values.unlink()


if __name__ == "__main__":
    sys.exit(main())
