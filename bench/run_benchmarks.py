#!/usr/bin/env python3
"""`make bench`: runs the Google Benchmark binaries and the CPython scripts in one go and prints
each figure as ratios against CPython and the raw-syscall floor, with the targets met or missed.
Results also go to <build>/bench/results.json and results.md."""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_gbench(binary):
    out = subprocess.run([binary, "--benchmark_format=json", "--benchmark_min_time=0.2"],
                         check=True, capture_output=True, text=True).stdout
    results = {}
    for b in json.loads(out)["benchmarks"]:
        name = b["name"].replace("item:0", "int").replace("item:1", "float").replace("item:2", "bool")
        name = name.replace("item:3", "none").replace("item:4", "str").replace("item:5", "bytes")
        name = name.replace("/real_time", "")
        unit = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b["time_unit"]]
        results[name] = b["real_time"] * unit
    return results


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
    args = ap.parse_args()

    ours = run_gbench(os.path.join(args.build, "bin", "shmpool_bench_shm"))
    py = json.loads(subprocess.run([args.python, os.path.join(HERE, "cpython_shm.py")], check=True,
                                   capture_output=True, text=True).stdout)
    cp = py["ns_per_op"]

    rows = []
    verdicts = []

    def row(label, key, raw_key=None, target=None):
        o = ours[key]
        c = cp.get(key)
        raw = ours.get(raw_key) if raw_key else None
        cells = [label, fmt_ns(o), fmt_ns(c) if c else "-", fmt_ns(raw) if raw else "-",
                 f"{c / o:.1f}x" if c else "-", f"{o / raw:.2f}x" if raw else "-"]
        if target:
            ok, text = target(o, c, raw)
            cells.append(("met: " if ok else "MISSED: ") + text)
            verdicts.append(ok)
        else:
            cells.append("")
        rows.append(cells)

    for item in ["int", "float", "bool", "none", "str", "bytes"]:
        for op in ["get", "set"]:
            row(f"ShareableList {op} {item}", f"list_{op}/{item}",
                target=lambda o, c, r: (1e9 / o >= 50e6, f"{1e9 / o / 1e6:.0f} M ops/s (≥ 50 M)"))
    row("ShareableList create, 1000 mixed", "list_create_1000_mixed",
        target=lambda o, c, r: (c / o >= 10, f"{c / o:.1f}x CPython (≥ 10x)"))
    row("ShareableList attach, 1000 mixed", "list_attach_1000_mixed")
    row("SharedMemory create+close+unlink 4 KiB, tracked", "shm_create_close_unlink", "raw_create_close_unlink",
        target=lambda o, c, r: (o / r <= 1.3, f"{o / r:.2f}x raw (≤ 1.3x); CPython {c / r:.2f}x raw"))
    row("SharedMemory create+close+unlink 4 KiB, untracked", "shm_create_close_unlink_untracked",
        "raw_create_close_unlink")
    row("SharedMemory attach+close 4 KiB", "shm_attach_close", "raw_attach_close",
        target=lambda o, c, r: (o / r <= 1.3, f"{o / r:.2f}x raw (≤ 1.3x); CPython {c / r:.2f}x raw"))

    # The robust mutex, against a bare pthread mutex (default attributes) as the floor.
    ours["robust_mutex_lock_unlock_vs_robust"] = ours["robust_mutex_lock_unlock"]
    row("RobustMutex lock+unlock (vs bare default pthread mutex)", "robust_mutex_lock_unlock",
        "pthread_mutex_lock_unlock", target=lambda o, c, r: (o / r <= 2.0, f"{o / r:.2f}x bare (≤ 2x)"))
    row("RobustMutex lock+unlock (vs bare robust pshared mutex)", "robust_mutex_lock_unlock_vs_robust",
        "pthread_robust_mutex_lock_unlock")

    # --- the worker pool ---
    pool = run_gbench(os.path.join(args.build, "bin", "shmpool_bench_pool"))
    pyp = json.loads(subprocess.run([args.python, os.path.join(HERE, "cpython_pool.py")], check=True,
                                    capture_output=True, text=True).stdout)["ns_per_op"]
    per_item = {"pool_map_chunksize_1": 20000, "pool_map_default_chunks": 1000000,
                "pipeline_3_stages/iterations:5": 200000, "tbb_pipeline_3_stages/iterations:5": 200000}
    for key, n in per_item.items():
        pool[key] = pool[key] / n
    ours.update(pool)
    cp.update(pyp)
    cp["pool_startup_2_workers/256/manual_time"] = pyp["pool_startup_2_workers"]
    ours["raw_futex_ping_pong_sleep_other_core"] = pool["raw_futex_ping_pong/0/0/0"]
    ours["raw_futex_ping_pong_sleep_same_core"] = pool["raw_futex_ping_pong/0/1/0"]
    ours["raw_futex_ping_pong_spin_other_core"] = pool["raw_futex_ping_pong/1/0/0"]
    ours["raw_futex_ping_pong_idle_first"] = pool["raw_futex_ping_pong/0/0/1/iterations:300"]
    row("Pool submit→get, empty task (1 worker)", "pool_submit_get", "raw_futex_ping_pong_sleep_other_core",
        target=lambda o, c, r: (o <= 2000, f"{o / 1000:.1f} µs (≤ 2 µs awake); {c / o:.0f}x CPython apply_async"))
    row("Pool submit→get, empty task, everything asleep", "pool_submit_get_asleep/iterations:300",
        "raw_futex_ping_pong_idle_first",
        target=lambda o, c, r: (o / r <= 1.5, f"{o / r:.2f}x the raw sleeping round trip (≤ 1.5x)"))
    row("  floor: raw futex ping-pong, sleeping, 300 µs idle before each", "raw_futex_ping_pong_idle_first")
    row("  floor: raw futex ping-pong, sleeping, other core", "raw_futex_ping_pong_sleep_other_core")
    row("  floor: raw futex ping-pong, sleeping, same core", "raw_futex_ping_pong_sleep_same_core")
    row("  floor: raw spin ping-pong, other core", "raw_futex_ping_pong_spin_other_core")
    row("Pool map, chunksize 1, per item", "pool_map_chunksize_1",
        target=lambda o, c, r: (o <= 1000 and c / o >= 18, f"{o:.0f} ns (≤ 1 µs), {c / o:.1f}x CPython (≥ 18x)"))
    row("Pool map, default chunks, per item", "pool_map_default_chunks",
        target=lambda o, c, r: (o <= 10 and c / o >= 10, f"{o:.0f} ns (≤ 10 ns), {c / o:.1f}x CPython (≥ 10x)"))
    ours["tbb_floor"] = pool["tbb_parallel_for_1gib/iterations:5"]
    row("for_each_index, 1 GiB float64, 2 workers (vs tbb::parallel_for, 2 threads)",
        "pool_for_each_index_1gib/iterations:5", "tbb_floor",
        target=lambda o, c, r: (r / o >= 0.9, f"{100 * r / o:.0f}% of TBB (≥ 90%)"))
    row("Worker SIGKILLed: death to WorkerCrashed in get()", "pool_crash_surfaced/iterations:50/manual_time",
        target=lambda o, c, r: (o <= 3e6, f"{o / 1e6:.2f} ms (≤ 3 ms); CPython's Pool hangs forever"))
    row("Pool start-up, 2 workers ready", "pool_startup_2_workers/256/manual_time",
        target=lambda o, c, r: (o <= 2e6, f"{o / 1e6:.2f} ms (≤ 2 ms); CPython spawn {c / 1e6:.0f} ms"))
    row("Pool shutdown, 2 workers", "pool_shutdown_2_workers/manual_time")
    cp["pipeline_3_stages/iterations:5"] = pyp["pipeline_3_stages"]
    ours["tbb_pipeline_floor"] = pool["tbb_pipeline_3_stages/iterations:5"]
    row("Pipeline, 3 trivial stages, per item (vs tbb::parallel_pipeline, 3 threads)",
        "pipeline_3_stages/iterations:5", "tbb_pipeline_floor",
        target=lambda o, c, r: (c / o >= 30, f"{1e9 / o / 1e6:.2f} M items/s, {c / o:.0f}x CPython queues (≥ 30x)"))

    header = ["operation", "shmpool", f"CPython {py['python']}", "raw / floor", "CPython / shmpool",
              "shmpool / floor", "target"]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    print(line(header))
    for r in rows:
        print(line(r))
    print(f"\n{sum(verdicts)} of {len(verdicts)} targets met")

    outdir = os.path.join(args.build, "bench")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"shmpool_ns": ours, "cpython_ns": cp, "python": py["python"]}, f, indent=2)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        for r in rows:
            f.write("| " + " | ".join(str(c) for c in r) + " |\n")


if __name__ == "__main__":
    main()
