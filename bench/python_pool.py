#!/usr/bin/env python3
"""shmpool.Pool's side of the Python pool benchmarks, in ns per item (JSON): Pool.map of the
trivial C++ task `nothing_task` (int -> int) of shmpool_bench_pool, from Python, with the inputs
cpython_pool.py gives multiprocessing.Pool.map (a list of ints, results in a list), and
Pool.map_array over a numpy array (results in a numpy array).

    python_pool.py PATH_TO_shmpool_bench_pool
"""
import json
import sys
import time

import numpy as np

import shmpool


def per_item(fn, items, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - t)
    return best / len(items) * 1e9


def main():
    out = {}
    with shmpool.Pool(sys.argv[1], 2) as pool:
        pool.map("nothing_task", range(1000))  # warm
        items = list(range(20000))
        out["pool_map_chunksize_1"] = per_item(
            lambda i: pool.map("nothing_task", i, chunksize=1), items)
        items = list(range(1000000))
        out["pool_map_default_chunks"] = per_item(lambda i: pool.map("nothing_task", i), items)
        array = np.arange(1000000, dtype=np.int32)
        out["pool_map_array_default_chunks"] = per_item(
            lambda i: pool.map_array("nothing_task", i), array)
    json.dump({"ns_per_op": out}, sys.stdout)


if __name__ == "__main__":
    main()
