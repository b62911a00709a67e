#!/usr/bin/env python3
"""CPython's side of the pool benchmarks, in ns (JSON): apply_async round trip, Pool.map with
chunksize 1 and with default chunking (per item), and Pool(2) start-up with the spawn method."""
import json
import multiprocessing as mp
import sys
import time


def nothing(x):
    return x


def per_call(fn, number, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(number)
        best = min(best, time.perf_counter() - t)
    return best / number * 1e9


def transform(inq, outq):
    for x in iter(inq.get, None):
        outq.put(x + 1)
    outq.put(None)


def aggregate(inq, ends, result):
    total, done = 0, 0
    while done < ends:
        x = inq.get()
        if x is None:
            done += 1
        else:
            total += x
    result.put(total)


def pipeline_3_stages(ctx, n):
    """The same three stages over multiprocessing queues: this process produces, two processes
    transform, one aggregates. Per item, in ns, processes started before the clock runs."""
    best = float("inf")
    for _ in range(3):
        q1, q2, result = ctx.Queue(), ctx.Queue(), ctx.Queue()
        workers = [ctx.Process(target=transform, args=(q1, q2)) for _ in range(2)]
        workers.append(ctx.Process(target=aggregate, args=(q2, 2, result)))
        for w in workers:
            w.start()
        t = time.perf_counter()
        for i in range(n):
            q1.put(i)
        for _ in range(2):
            q1.put(None)
        assert result.get() == n * (n + 1) // 2
        best = min(best, time.perf_counter() - t)
        for w in workers:
            w.join()
    return best / n * 1e9


def main():
    ctx = mp.get_context("spawn")
    out = {}
    with ctx.Pool(1) as pool:
        pool.apply(nothing, (1,))
        out["pool_submit_get"] = per_call(lambda n: [pool.apply_async(nothing, (1,)).get() for _ in range(n)], 2000)
    with ctx.Pool(2) as pool:
        items = list(range(20000))
        out["pool_map_chunksize_1"] = per_call(lambda n: pool.map(nothing, items, chunksize=1), 1) / len(items)
        items = list(range(1000000))
        out["pool_map_default_chunks"] = per_call(lambda n: pool.map(nothing, items), 1) / len(items)

    # Start-up until a task has run (CPython starts workers lazily: that is when they are ready);
    # the shutdown is not timed.
    times = []
    for _ in range(3):
        t = time.perf_counter()
        pool = ctx.Pool(2)
        pool.apply(nothing, (1,))
        times.append(time.perf_counter() - t)
        pool.close()
        pool.join()
    out["pool_startup_2_workers"] = min(times) * 1e9
    out["pipeline_3_stages"] = pipeline_3_stages(ctx, 20000)
    json.dump({"python": sys.version.split()[0], "ns_per_op": out}, sys.stdout)


if __name__ == "__main__":
    main()
