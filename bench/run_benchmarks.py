#!/usr/bin/env python3
"""`make bench`: runs the Google Benchmark binaries and the CPython scripts in one go, prints each
figure as ratios against CPython and the floor (raw system calls, a bare pthread mutex, oneTBB in
one process) with the targets met or missed, and regenerates docs/benchmarks.md's tables and its
plots (gnuplot) from the same run. The raw figures go to docs/benchmarks.json, so the report can
be rendered again without measuring (--render) and checked against the docs (--check)."""
import argparse
import datetime
import difflib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BEGIN = "<!-- bench-results:begin (written by make bench: do not edit) -->\n"
END = "<!-- bench-results:end -->\n"


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


def run_python(python, script, *args, env=None):
    return json.loads(subprocess.run([python, os.path.join(HERE, script), *args], check=True,
                                     capture_output=True, text=True, env=env).stdout)


def run_shmpool_python(build, python):
    """The Python side again, through shmpool's Python module (when it was built), as py/..."""
    package = os.path.join(build, "python")
    if not os.path.isdir(os.path.join(package, "shmpool")):
        return {}
    env = dict(os.environ, PYTHONPATH=package,
               SHMPOOL_TRACKER_EXE=os.path.join(build, "bin", "shmpool-tracker"))
    figures = run_python(python, "cpython_shm.py", "--module", "shmpool", env=env)["ns_per_op"]
    # shmpool.Pool from Python, on the C++ pool benchmark's own trivial task.
    figures.update(run_python(python, "python_pool.py",
                              os.path.join(build, "bin", "shmpool_bench_pool"), env=env)["ns_per_op"])
    return {f"py/{key}": ns for key, ns in figures.items()}


with open(os.path.join(ROOT, "tests", "cluster", "mpirun-flags")) as _flags:
    MPIRUN_FLAGS = _flags.read().split()  # the cluster tests' own


def run_cluster(build):
    """Cluster mode's figures: three ranks, each with a /dev/shm of its own (a tmpfs in a private
    mount namespace, as the cluster tests do), and the plain-MPI floors with the same flags.
    Nothing when there is no MPI build, no mpirun, or no root for the mounts."""
    bench = os.path.join(build, "bin", "shmpool_bench_cluster")
    floor = os.path.join(build, "bin", "shmpool_bench_mpi_floor")
    if not (os.path.exists(bench) and os.path.exists(floor) and shutil.which("mpirun")
            and os.geteuid() == 0):
        return {}
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = json.loads(subprocess.run(["mpirun", "-n", "3"] + MPIRUN_FLAGS + [floor, "64"],
                                    env=env, check=True, capture_output=True, text=True).stdout)
    root = tempfile.mkdtemp(prefix="shmpool-bench-nodes-")
    dirs = [os.path.join(root, f"node{r}") for r in range(3)]
    try:
        for r, d in enumerate(dirs):
            os.mkdir(d)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", f"shmpool-bench{r}", d],
                           check=True)
        wrapper = os.path.join(ROOT, "tests", "cluster", "private_shm.sh")
        env["SHMPOOL_NODE_SHM_ROOT"] = root
        out.update(json.loads(subprocess.run(
            ["mpirun", "-n", "3"] + MPIRUN_FLAGS + ["-x", "SHMPOOL_NODE_SHM_ROOT", wrapper, bench],
            env=env, check=True, capture_output=True, text=True).stdout))
    finally:
        for d in dirs:
            subprocess.run(["umount", "-l", d], check=False)
        shutil.rmtree(root, ignore_errors=True)
    # Bandwidths as the time of one MiB, so that every row is a time.
    mib = float(1 << 20)
    out["cluster_replication_per_mib_ns"] = mib / out.pop("cluster_replication_bytes_per_s") * 1e9
    out["mpi_bcast_per_mib_ns"] = mib / out.pop("mpi_bcast_bytes_per_s") * 1e9
    return out


def machine():
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "date": datetime.date.today().isoformat()}


def measure(build, python):
    """Every figure in ns, ours and CPython's, keyed by benchmark name."""
    ours = run_gbench(os.path.join(build, "bin", "shmpool_bench_shm"))
    py = run_python(python, "cpython_shm.py")
    cp = py["ns_per_op"]
    pool = run_gbench(os.path.join(build, "bin", "shmpool_bench_pool"))
    cp.update(run_python(python, "cpython_pool.py")["ns_per_op"])
    per_item = {"pool_map_chunksize_1": 20000, "pool_map_default_chunks": 1000000,
                "pipeline_3_stages/0/iterations:5": 200000, "pipeline_3_stages/1024/iterations:5": 200000,
                "tbb_pipeline_3_stages/iterations:5": 200000}
    for key, n in per_item.items():
        pool[key] = pool[key] / n
    ours.update(pool)
    ours.update(run_cluster(build))
    ours.update(run_shmpool_python(build, python))
    return {"shmpool_ns": ours, "cpython_ns": cp, "python": py["python"], "machine": machine()}


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


class Report:
    """The rows of the table, the verdicts, and the points of the two plots."""

    def __init__(self, results):
        self.ours = dict(results["shmpool_ns"])
        self.cp = dict(results["cpython_ns"])
        self.rows, self.verdicts = [], []
        self.vs_cpython, self.vs_floor = [], []  # (label, ratio, target ratio or None)
        self.header = ["operation", "shmpool", f"CPython {results['python']}", "floor",
                       "CPython / shmpool", "shmpool / floor", "target"]

    def row(self, label, key, floor_key=None, target=None, plot=None, cpython_target=None,
            floor_target=None, cpython_key=None):
        o = self.ours[key]
        c = self.cp.get(cpython_key or key)
        raw = self.ours.get(floor_key) if floor_key else None
        cells = [label, fmt_ns(o), fmt_ns(c) if c else "-", fmt_ns(raw) if raw else "-",
                 f"{c / o:.1f}x" if c else "-", f"{o / raw:.2f}x" if raw else "-"]
        if target:
            ok, text = target(o, c, raw)
            cells.append(("met: " if ok else "MISSED: ") + text)
            self.verdicts.append(ok)
        else:
            cells.append("")
        self.rows.append(cells)
        short = plot or label
        if c and plot is not False:
            self.vs_cpython.append((short, c / o, cpython_target))
        if raw and floor_target is not False and plot is not False:
            self.vs_floor.append((short, o / raw, floor_target))


def build_report(results):
    r = Report(results)
    ours, cp = r.ours, r.cp
    for item in ["int", "float", "bool", "none", "str", "bytes"]:
        for op in ["get", "set"]:
            r.row(f"ShareableList {op} {item}", f"list_{op}/{item}", plot=f"list {op} {item}",
                  target=lambda o, c, x: (1e9 / o >= 50e6, f"{1e9 / o / 1e6:.0f} M ops/s (≥ 50 M)"))
    r.row("ShareableList create, 1000 mixed", "list_create_1000_mixed", plot="list create, 1000 items",
          cpython_target=10, target=lambda o, c, x: (c / o >= 10, f"{c / o:.1f}x CPython (≥ 10x)"))
    r.row("ShareableList attach, 1000 mixed", "list_attach_1000_mixed", plot="list attach, 1000 items")
    r.row("SharedMemory create+close+unlink 4 KiB, tracked", "shm_create_close_unlink",
          "raw_create_close_unlink", plot="block create+unlink, tracked", floor_target=1.3,
          target=lambda o, c, x: (o / x <= 1.3, f"{o / x:.2f}x raw (≤ 1.3x); CPython {c / x:.2f}x raw"))
    r.row("SharedMemory create+close+unlink 4 KiB, untracked", "shm_create_close_unlink_untracked",
          "raw_create_close_unlink", plot="block create+unlink, untracked")
    r.row("SharedMemory attach+close 4 KiB", "shm_attach_close", "raw_attach_close",
          plot="block attach+close", floor_target=1.3,
          target=lambda o, c, x: (o / x <= 1.3, f"{o / x:.2f}x raw (≤ 1.3x); CPython {c / x:.2f}x raw"))

    # shmpool's Python module (shmpool.shared_memory) against CPython's, both from Python.
    if "py/list_get/int" in ours:
        for item in ["int", "float", "bool", "none", "str", "bytes"]:
            for op in ["get", "set"]:
                r.row(f"Python: ShareableList {op} {item}, shmpool's module (vs CPython's)",
                      f"py/list_{op}/{item}", cpython_key=f"list_{op}/{item}",
                      plot=f"py list {op} {item}" if item == "int" else False,
                      target=lambda o, c, x: (c / o >= 1, f"{c / o:.1f}x CPython (faster: > 1x)"))
        r.row("Python: SharedMemory create+close+unlink 4 KiB, shmpool's module (vs CPython's)",
              "py/shm_create_close_unlink", cpython_key="shm_create_close_unlink",
              plot="py block create+unlink")
        r.row("Python: SharedMemory attach+close 4 KiB, shmpool's module (vs CPython's)",
              "py/shm_attach_close", cpython_key="shm_attach_close", plot="py block attach+close")
        r.row("Python: ShareableList create, 1000 mixed, shmpool's module (vs CPython's)",
              "py/list_create_1000_mixed", cpython_key="list_create_1000_mixed", plot=False)
        r.row("Python: ShareableList attach, 1000 mixed, shmpool's module (vs CPython's)",
              "py/list_attach_1000_mixed", cpython_key="list_attach_1000_mixed", plot=False)
    if "py/pool_map_default_chunks" in ours:
        # shmpool.Pool from Python against multiprocessing.Pool, both mapping a trivial function
        # over list(range(1000000)) with default chunks, results in a list.
        r.row("Python: shmpool.Pool.map, trivial C++ task, default chunks, per item "
              "(vs multiprocessing.Pool.map)", "py/pool_map_default_chunks",
              cpython_key="pool_map_default_chunks", plot="py Pool.map", cpython_target=10,
              target=lambda o, c, x: (c / o >= 10, f"{c / o:.1f}x multiprocessing (≥ 10x)"))
        r.row("Python: shmpool.Pool.map_array, numpy in and out, default chunks, per item "
              "(vs multiprocessing.Pool.map)", "py/pool_map_array_default_chunks",
              cpython_key="pool_map_default_chunks", plot="py Pool.map_array", cpython_target=10,
              target=lambda o, c, x: (c / o >= 10, f"{c / o:.1f}x multiprocessing (≥ 10x)"))
        r.row("Python: shmpool.Pool.map, trivial C++ task, chunksize 1, per item "
              "(vs multiprocessing.Pool.map)", "py/pool_map_chunksize_1",
              cpython_key="pool_map_chunksize_1", plot=False)

    # The robust mutex, against a bare pthread mutex (default attributes) as the floor.
    ours["robust_mutex_lock_unlock_vs_robust"] = ours["robust_mutex_lock_unlock"]
    r.row("RobustMutex lock+unlock (vs bare default pthread mutex)", "robust_mutex_lock_unlock",
          "pthread_mutex_lock_unlock", plot="RobustMutex vs default mutex", floor_target=2.0,
          target=lambda o, c, x: (o / x <= 2.0, f"{o / x:.2f}x bare (≤ 2x)"))
    r.row("RobustMutex lock+unlock (vs bare robust pshared mutex)", "robust_mutex_lock_unlock_vs_robust",
          "pthread_robust_mutex_lock_unlock", plot="RobustMutex vs robust mutex")

    # SharedHeap: a map in a frozen heap, read through a second, read-only mapping (as a worker
    # reads it), against the same std::map in this process's memory.
    if "heap_map_lookup" in ours:  # runs before shared heaps lack it
        r.row("SharedHeap map lookup, 1M string keys, read-only mapping (vs std::map in-process)",
              "heap_map_lookup", "local_map_lookup", plot="heap map lookup vs std::map",
              floor_target=2, target=lambda o, c, x: (o / x <= 2, f"{o / x:.2f}x std::map (≤ 2x)"))
        r.row("SharedHeap map build, 1M string keys (vs std::map in-process)",
              "heap_map_build_1m/iterations:3", "local_map_build_1m/iterations:3",
              plot="heap map build vs std::map")
        r.row("  floor: std::map lookup, in-process", "local_map_lookup")
        r.row("  floor: std::map build, in-process", "local_map_build_1m/iterations:3")

    # --- the worker pool ---
    ours["raw_futex_ping_pong_sleep_other_core"] = ours["raw_futex_ping_pong/0/0/0"]
    ours["raw_futex_ping_pong_sleep_same_core"] = ours["raw_futex_ping_pong/0/1/0"]
    ours["raw_futex_ping_pong_spin_other_core"] = ours["raw_futex_ping_pong/1/0/0"]
    ours["raw_futex_ping_pong_idle_first"] = ours["raw_futex_ping_pong/0/0/1/iterations:300"]
    # Awake, the pool spins: the sleeping ping-pong is no floor for it, so it is not plotted.
    r.row("Pool submit→get, empty task (1 worker)", "pool_submit_get", "raw_futex_ping_pong_spin_other_core",
          plot="submit→get", floor_target=False,
          target=lambda o, c, x: (o <= 2000, f"{o / 1000:.1f} µs (≤ 2 µs awake); {c / o:.0f}x CPython apply_async"))
    r.row("Pool submit→get, empty task, everything asleep", "pool_submit_get_asleep/iterations:300",
          "raw_futex_ping_pong_idle_first", plot="submit→get, all asleep", floor_target=1.5,
          target=lambda o, c, x: (o / x <= 1.5, f"{o / x:.2f}x the raw sleeping round trip (≤ 1.5x)"))
    r.row("  floor: raw futex ping-pong, sleeping, 300 µs idle before each", "raw_futex_ping_pong_idle_first")
    r.row("  floor: raw futex ping-pong, sleeping, other core", "raw_futex_ping_pong_sleep_other_core")
    r.row("  floor: raw futex ping-pong, sleeping, same core", "raw_futex_ping_pong_sleep_same_core")
    r.row("  floor: raw spin ping-pong, other core", "raw_futex_ping_pong_spin_other_core")
    r.row("Pool map, chunksize 1, per item", "pool_map_chunksize_1", plot="map, chunksize 1",
          cpython_target=18,
          target=lambda o, c, x: (o <= 250 and c / o >= 18, f"{o:.0f} ns (≤ 250 ns), {c / o:.1f}x CPython (≥ 18x)"))
    r.row("Pool map, default chunks, per item", "pool_map_default_chunks", plot="map, default chunks",
          cpython_target=10,
          target=lambda o, c, x: (o <= 3 and c / o >= 10, f"{o:.1f} ns (≤ 3 ns), {c / o:.1f}x CPython (≥ 10x)"))
    ours["tbb_floor"] = ours["tbb_parallel_for_1gib/iterations:5"]
    r.row("for_each_index, 1 GiB float64, 2 workers (vs tbb::parallel_for, 2 threads)",
          "pool_for_each_index_1gib/iterations:5", "tbb_floor", plot="for_each_index vs tbb::parallel_for",
          floor_target=1 / 0.95, target=lambda o, c, x: (x / o >= 0.95, f"{100 * x / o:.0f}% of TBB (≥ 95%)"))
    if "raw_two_processes_halves_1gib/iterations:5" in ours:  # runs before the raw floor lack it
        ours["for_each_index_vs_raw"] = ours["pool_for_each_index_1gib/iterations:5"]
        r.row("  the same vs its raw floor: 2 processes, each sweeping a fixed half, pre-faulted",
              "for_each_index_vs_raw", "raw_two_processes_halves_1gib/iterations:5", plot=False)
        r.row("  floor: 2 processes, each sweeping a fixed half, pre-faulted",
              "raw_two_processes_halves_1gib/iterations:5")
    r.row("Worker SIGKILLed: death to WorkerCrashed in get()", "pool_crash_surfaced/iterations:50/manual_time",
          target=lambda o, c, x: (o <= 3e6, f"{o / 1e6:.2f} ms (≤ 3 ms); CPython's Pool hangs forever"))
    r.row("Pool start-up, 2 workers ready", "pool_startup_2_workers/256/manual_time", plot="start-up, 2 workers",
          cpython_key="pool_startup_2_workers",
          target=lambda o, c, x: (o <= 2e6, f"{o / 1e6:.2f} ms (≤ 2 ms); CPython spawn {c / 1e6:.0f} ms"))
    r.row("Pool shutdown, 2 workers", "pool_shutdown_2_workers/manual_time")
    if "pool_result_64mib/iterations:20" in ours:  # results saved before big items lack it
        r.row("A 64 MiB result, through a block of its own (vs memcpy of 64 MiB)",
              "pool_result_64mib/iterations:20", "memcpy_64mib/iterations:20", plot="64 MiB result vs memcpy",
              floor_target=1 / 0.7,
              target=lambda o, c, x: (x / o >= 0.7, f"{x / o:.2f}x memcpy's bandwidth (≥ 0.7x)"))
    # The start methods (PoolOptions::start_method) against the floor of spawning the program
    # (an exec that returns at the top of main()); in a run that measured them.
    if "pool_startup_first_result/1/2/manual_time" in ours:
        r.row("Pool start-up to the first result, 2 workers, exec (vs 2 spawns of the program)",
              "pool_startup_first_result/0/2/manual_time", "spawn_floor/2/manual_time", plot=False)
        r.row("Pool start-up to the first result, 2 workers, fork server (vs 2 spawns of the program)",
              "pool_startup_first_result/1/2/manual_time", "spawn_floor/2/manual_time",
              plot="start-up, fork server", floor_target=0.8,
              target=lambda o, c, x: (o / x <= 0.8, f"{o / x:.2f}x two spawns (≤ 0.8x)"))
        r.row("Pool start-up to the first result, 8 workers on 2 cores, exec",
              "pool_startup_first_result/0/8/manual_time", plot=False)
        r.row("Pool start-up to the first result, 8 workers on 2 cores, fork server",
              "pool_startup_first_result/1/8/manual_time", plot=False)
        r.row("Worker respawn, SIGKILL to a result from the new worker, exec (vs 1 spawn)",
              "pool_respawn/0/manual_time", "spawn_floor/1/manual_time", plot=False)
        r.row("Worker respawn, SIGKILL to a result from the new worker, fork server (vs 1 spawn)",
              "pool_respawn/1/manual_time", "spawn_floor/1/manual_time",
              plot="respawn, fork server", floor_target=0.3,
              target=lambda o, c, x: (o / x <= 0.3, f"{o / x:.2f}x one spawn (≤ 0.3x)"))
        r.row("  floor: the program spawned twice, to the top of main(), waited for",
              "spawn_floor/2/manual_time")
        r.row("  floor: the program spawned once", "spawn_floor/1/manual_time")
    ours["tbb_pipeline_floor"] = ours["tbb_pipeline_3_stages/iterations:5"]
    default_pipeline = ours["pipeline_3_stages/0/iterations:5"]
    r.row("Pipeline, 3 trivial stages, default options, per item (vs tbb::parallel_pipeline, 3 threads)",
          "pipeline_3_stages/0/iterations:5", "tbb_pipeline_floor", plot="pipeline, 3 stages",
          cpython_key="pipeline_3_stages", cpython_target=30, floor_target=2,
          target=lambda o, c, x: (c / o >= 30 and o / x <= 2,
                                  f"{o / x:.1f}x TBB (≤ 2x), {c / o:.1f}x CPython queues (≥ 30x)"))
    r.row("  the same with max_tokens = 1024 (tuned by hand)", "pipeline_3_stages/1024/iterations:5",
          plot=False, target=lambda o, c, x: (default_pipeline / o <= 1.5,
                                              f"default options take {default_pipeline / o:.2f}x its time (≤ 1.5x)"))
    # --- cluster mode (three ranks on this machine, TCP over loopback) ---
    if "cluster_remote_submit_get_ns" in ours:
        r.row("Cluster: submit→get on another node, empty task (vs raw MPI ping-pong, same flags)",
              "cluster_remote_submit_get_ns", "mpi_ping_pong_ns", plot="cluster: remote submit→get",
              floor_target=1.5,
              target=lambda o, c, x: (o / x <= 1.5, f"{o / x:.1f}x the MPI round trip (≤ 1.5x)"))
        r.row("Cluster: map, chunksize 1, 3 ranks, per item", "cluster_map_chunksize_1_ns",
              plot=False, target=lambda o, c, x: (o <= 10000, f"{o / 1000:.1f} µs (≤ 10 µs)"))
        ours["single_machine_map_default"] = ours["pool_map_default_chunks"]
        r.row("Cluster: map, default chunks, 3 ranks, per item (vs one machine)",
              "cluster_map_default_chunks_ns", "single_machine_map_default",
              plot="cluster: map, default chunks", floor_target=2,
              target=lambda o, c, x: (o / x <= 2, f"{o / x:.2f}x one machine (≤ 2x)"))
        r.row("Cluster: a shared block replicated, per MiB (vs raw MPI_Bcast)",
              "cluster_replication_per_mib_ns", "mpi_bcast_per_mib_ns",
              plot="cluster: block replication", floor_target=1 / 0.8,
              target=lambda o, c, x: (x / o >= 0.8, f"{x / o:.2f}x MPI_Bcast's bandwidth (≥ 0.8x)"))
    return r


def table(report):
    """The console table."""
    rows = [report.header] + report.rows
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(report.header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def markdown(report, results):
    m = results["machine"]
    out = [BEGIN,
           f"Measured on {m['date']}: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
           f"CPython {results['python']}. **{sum(report.verdicts)} of {len(report.verdicts)} "
           "targets met.**\n\n",
           "| " + " | ".join(report.header) + " |\n", "|" + "---|" * len(report.header) + "\n"]
    for row in report.rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |\n")
    out.append("\n![shmpool against CPython](img/bench-vs-cpython.png)\n\n")
    out.append("![shmpool against the floor](img/bench-vs-floor.png)\n")
    out.append(END)
    return "".join(out)


def plot(points, path, title, xlabel, baseline):
    """A horizontal bar chart, log scale, with each target as a red tick."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.tsv")
        with open(data, "w") as f:
            for i, (label, value, target) in enumerate(reversed(points)):
                f.write(f"{i}\t\"{label}\"\t{value}\t{target if target else 'NaN'}\n")
        lo = min(min(v for _, v, _ in points), baseline) / 1.5
        hi = max(max(v for _, v, _ in points), max((t for _, _, t in points if t), default=1)) * 3
        script = f"""
set terminal pngcairo size 960,{160 + 26 * len(points)} font "DejaVu Sans,10"
set output "{path}"
set datafile separator "\\t"
set title "{title}"
set xlabel "{xlabel}"
set logscale x 10
set xrange [{lo}:{hi}]
set yrange [-0.7:{len(points) - 0.3}]
set grid xtics mxtics
set format x "%gx"
set termoption noenhanced
set key outside top center horizontal
set arrow from {baseline},graph 0 to {baseline},graph 1 nohead lc rgb "#555555" dt 2
plot "{data}" using ({lo}):1:({lo}):3:($1-0.35):($1+0.35):ytic(2) with boxxyerror fill solid 0.7 lc rgb "#3b78b0" title "shmpool", \\
     "" using 4:1:($4/1.012):($4*1.012):($1-0.45):($1+0.45) with boxxyerror fill solid 1.0 lc rgb "#c0392b" title "target", \\
     "" using 3:1:(sprintf("%.3g", $3)) with labels left offset char 0.8,0 font ",9" notitle
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def write_docs(results, report, docs):
    os.makedirs(os.path.join(docs, "img"), exist_ok=True)
    with open(os.path.join(docs, "benchmarks.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    md = os.path.join(docs, "benchmarks.md")
    with open(md) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit(f"run_benchmarks: {md} lacks the markers of its generated part")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(md, "w") as f:
        f.write(head + markdown(report, results) + tail)
    if not shutil.which("gnuplot"):
        sys.exit("run_benchmarks: gnuplot is missing (scripts/install-deps.sh installs it)")
    plot(report.vs_cpython, os.path.join(docs, "img", "bench-vs-cpython.png"),
         "shmpool against CPython: how many times faster (higher is better)",
         "CPython time / shmpool time (log scale)", 1)
    plot(report.vs_floor, os.path.join(docs, "img", "bench-vs-floor.png"),
         "shmpool against the floor: raw system calls, a bare mutex, oneTBB in one process (lower is better)",
         "shmpool time / floor time (log scale; 1 = as fast as the floor)", 1)


def check(docs):
    """Renders docs/benchmarks.json into a scratch copy of docs/ and compares: the tables in the
    docs are the ones the data gives, and the plots can be drawn."""
    with open(os.path.join(docs, "benchmarks.json")) as f:
        results = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(docs, "benchmarks.md"), tmp)
        write_docs(results, build_report(results), tmp)
        with open(os.path.join(docs, "benchmarks.md")) as f:
            want = f.read()
        with open(os.path.join(tmp, "benchmarks.md")) as f:
            got = f.read()
        if got != want:
            sys.stdout.writelines(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                                       "docs/benchmarks.md", "rendered"))
            sys.exit("run_benchmarks: docs/benchmarks.md differs from what docs/benchmarks.json gives")
        for name in ["bench-vs-cpython.png", "bench-vs-floor.png"]:
            with open(os.path.join(tmp, "img", name), "rb") as f:
                if f.read(8) != b"\x89PNG\r\n\x1a\n":
                    sys.exit(f"run_benchmarks: {name} is not a PNG")
    print("docs/benchmarks.md matches docs/benchmarks.json; both plots render")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"), help="where benchmarks.md and img/ are")
    ap.add_argument("--render", metavar="JSON", help="render saved results instead of measuring")
    ap.add_argument("--check", action="store_true", help="check the docs against their saved results")
    args = ap.parse_args()

    if args.check:
        check(args.docs)
        return
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
    else:
        results = measure(args.build, args.python)
    report = build_report(results)
    print(table(report))
    print(f"\n{sum(report.verdicts)} of {len(report.verdicts)} targets met")

    outdir = os.path.join(args.build, "bench")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    write_docs(results, report, args.docs)
    print(f"\nwrote {os.path.relpath(os.path.join(args.docs, 'benchmarks.md'))} and its plots in "
          f"{os.path.relpath(os.path.join(args.docs, 'img'))}/")


if __name__ == "__main__":
    main()
