#!/usr/bin/env python3
"""CPython's side of the shm benchmarks: the same operations as bench_shm.cpp, in ns per op (JSON).

    cpython_shm.py [--module shmpool]

With --module shmpool the same operations go through shmpool's Python module
(shmpool.shared_memory, on PYTHONPATH) instead of CPython's."""
import json
import os
import sys
import timeit

if "--module" in sys.argv and sys.argv[sys.argv.index("--module") + 1] == "shmpool":
    from shmpool import shared_memory
else:
    from multiprocessing import shared_memory

NAME = f"shmpool_pybench_{os.getpid()}"
TYPED = [123456789, 2.5, True, None, "short text", b"raw bytes"]
ITEM_NAMES = ["int", "float", "bool", "none", "str", "bytes"]


def best_ns(stmt, number, repeat=5):
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e9


def mixed_1000():
    items = []
    for i in range(1000):
        items.append([i, i * 0.5, i % 2 == 0, None, f"item {i}", f"b{i}".encode()][i % 6])
    return items


def main():
    out = {}
    lst = shared_memory.ShareableList(TYPED)
    for i, item in enumerate(ITEM_NAMES):
        out[f"list_get/{item}"] = best_ns(lambda: lst[i], 100_000)
        v = TYPED[i]

        def setter(i=i, v=v):
            lst[i] = v

        out[f"list_set/{item}"] = best_ns(setter, 100_000)
    lst.shm.close()
    lst.shm.unlink()

    items = mixed_1000()

    def create_list():
        s = shared_memory.ShareableList(items, name=NAME)
        s.shm.close()
        s.shm.unlink()

    out["list_create_1000_mixed"] = best_ns(create_list, 200)

    owner = shared_memory.ShareableList(items, name=NAME)

    def attach_list():
        s = shared_memory.ShareableList(name=NAME)
        s.shm.close()

    out["list_attach_1000_mixed"] = best_ns(attach_list, 2000)
    owner.shm.close()
    owner.shm.unlink()

    def create_shm():
        s = shared_memory.SharedMemory(name=NAME, create=True, size=4096)
        s.close()
        s.unlink()

    out["shm_create_close_unlink"] = best_ns(create_shm, 2000)

    block = shared_memory.SharedMemory(name=NAME, create=True, size=4096)

    def attach_shm():
        s = shared_memory.SharedMemory(name=NAME)
        s.close()

    out["shm_attach_close"] = best_ns(attach_shm, 2000)
    block.close()
    block.unlink()
    json.dump({"python": sys.version.split()[0], "ns_per_op": out}, sys.stdout)


if __name__ == "__main__":
    main()
