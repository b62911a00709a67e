#!/usr/bin/env python3
"""The cluster tier: several "nodes" on this machine under mpirun, each rank with a /dev/shm of
its own (a tmpfs, bind-mounted in a private mount namespace by private_shm.sh) so that a block
never reaches another node except through shmpool's replication.

    run_cluster_tests.py SCENARIO --mpirun-flags "..." --bin DIR [--source DIR]

Scenarios: equivalence, crashes, kill-node, idle, mismatch, examples. Every wait is bounded: a
scenario that hangs fails. Private /dev/shm needs root (mount namespaces); without it the
scenario is skipped (exit 77)."""
import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77
LIMIT = 120  # seconds any one run may take before the scenario fails as hung


def fail(message):
    print(f"FAILED: {message}")
    sys.exit(1)


class Nodes:
    """A tmpfs per rank under a scratch directory, mounted for the run, removed after it. As a
    context manager, a run that ended without failing must also have left no block."""

    def __init__(self, ranks, what="the run"):
        self.what = what
        self.root = tempfile.mkdtemp(prefix="shmpool-nodes-")
        self.dirs = []
        for r in range(ranks):
            d = os.path.join(self.root, f"node{r}")
            os.mkdir(d)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", f"shmpool-node{r}", d],
                           check=True)
            self.dirs.append(d)

    def leftovers(self):
        """Blocks left in any node's /dev/shm. The trackers' own files are not blocks: the
        registry's lock and node files, and a tracker's socket (left only if something killed
        the tracker itself, which the scenarios check apart, as processes left)."""
        left = []
        for r, d in enumerate(self.dirs):
            for name in os.listdir(d):
                if name.startswith(".shmpool-"):
                    inner = [n for n in os.listdir(os.path.join(d, name)) if n != "registry.lock"
                             and not n.startswith("node.")
                             and not (n.startswith("tracker.") and n.endswith(".sock"))]
                    left += [f"node{r}:{name}/{n}" for n in inner]
                else:
                    left.append(f"node{r}:{name}")
        return left

    def wait_clean(self, limit=30):
        """Trackers remove a dead rank's blocks: wait for it, bounded."""
        deadline = time.monotonic() + limit
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the file system; the bound is a hang guard
        return self.leftovers()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                left = self.wait_clean()
                if left:
                    fail(f"blocks left after {self.what}: {left}")
        finally:
            self.close()

    def close(self):
        for d in self.dirs:
            subprocess.run(["umount", "-l", d], check=False)
        subprocess.run(["rm", "-rf", self.root], check=False)


class Cluster:
    def __init__(self, args):
        self.flags = shlex.split(args.mpirun_flags)
        self.bin = args.bin
        self.source = args.source
        self.env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

    def command(self, ranks, program, nodes=None):
        cmd = ["mpirun", "-n", str(ranks)] + self.flags
        if nodes:
            cmd += ["-x", "SHMPOOL_NODE_SHM_ROOT", os.path.join(HERE, "private_shm.sh")]
        return cmd + program

    def run(self, ranks, program, nodes=None, extra_env=None):
        env = dict(self.env, **(extra_env or {}))
        if nodes:
            env["SHMPOOL_NODE_SHM_ROOT"] = nodes.root
        try:
            return subprocess.run(self.command(ranks, program, nodes), env=env, capture_output=True,
                                  text=True, timeout=LIMIT)
        except subprocess.TimeoutExpired:
            fail(f"mpirun -n {ranks} {' '.join(program)} hung")

    def alone(self, program, extra_env=None):
        return subprocess.run(program, env=dict(self.env, **(extra_env or {})),
                              capture_output=True, text=True, timeout=LIMIT)


def lines_but(out, prefix):
    return [l for l in out.splitlines() if not l.startswith(prefix)]


def equivalence(c):
    check = [os.path.join(c.bin, "cluster_check")]
    ref = c.alone(check)
    if ref.returncode != 0:
        fail(f"alone: {ref.stderr}")
    want = lines_but(ref.stdout, "nodes")
    one = c.run(1, check)
    if one.returncode != 0 or lines_but(one.stdout, "nodes") != want:
        fail(f"mpirun -n 1 differs:\n{one.stdout}\n{one.stderr}")
    for ranks in (2, 3):
        with Nodes(ranks, f"mpirun -n {ranks}") as nodes:
            got = c.run(ranks, check, nodes)
            if got.returncode != 0 or "nodes many" not in got.stdout:
                fail(f"mpirun -n {ranks}: exit {got.returncode}\n{got.stdout}\n{got.stderr}")
            if lines_but(got.stdout, "nodes") != want:
                fail(f"mpirun -n {ranks} gave\n{got.stdout}\nalone:\n{ref.stdout}")
    print(f"{len(want)} results identical alone, with 1, 2 and 3 ranks; no block left")


def crashes(c):
    marks = tempfile.mkdtemp(prefix="shmpool-marks-")
    try:
        with Nodes(3, "the crashes") as nodes:
            got = c.run(3, [os.path.join(c.bin, "cluster_check"), "crashes"], nodes,
                        {"CLUSTER_CHECK_MARKS": marks})
            out = got.stdout
            if got.returncode != 0:
                fail(f"exit {got.returncode}\n{out}\n{got.stderr}")
            m = re.search(r"map (\w+) \(expected (\w+)\)", out)
            if not m or m.group(1) != m.group(2):
                fail(f"the map's result changed under crashes:\n{out}")
            if "always-crash: WorkerCrashed on node 2: named" not in out:
                fail(f"a crash on node 2 was not reported naming it:\n{out}")
            m = re.search(r"crashes (\d+) retries (\d+) events on node 2: (\d+)", out)
            if not m or int(m.group(1)) < 1 or int(m.group(3)) < 1:
                fail(f"the crashes on node 2 were not counted and reported:\n{out}")
            crashed_on = set()
            for name in os.listdir(marks):
                with open(os.path.join(marks, name)) as f:
                    crashed_on.add(f.read().strip())
            reported = set(re.findall(r"crash_once event on node 2: item (\d+)", out))
            if not reported or reported != crashed_on:
                fail(f"the crash events name items {reported}, the crashes were on {crashed_on}")
            node_crashes = [int(x) for x in re.findall(r"node stats: crashes (\d+)", out)]
            if len(node_crashes) != 3 or node_crashes[2] < 1 or node_crashes[1] != 0:
                fail(f"per-node statistics do not put the crashes on node 2: {node_crashes}")
        print(f"crashes on node 2 retried there, result exact, reported at rank 0 "
              f"({m.group(1)} crashes, {m.group(3)} events from node 2); no block left")
    finally:
        subprocess.run(["rm", "-rf", marks], check=False)


def live_processes(names):
    """Pids of live (not zombie) processes whose command is one of `names`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state = stat[stat.rindex(")") + 2]
        if comm in names and state != "Z":
            out.append(int(pid))
    return out


def kill_node(c):
    start = time.monotonic()
    with Nodes(3, "a node was killed") as nodes:
        got = c.run(3, [os.path.join(c.bin, "cluster_check"), "kill-node"], nodes)
        took = time.monotonic() - start
        if got.returncode == 0 or "the map ended" in got.stdout:
            fail(f"the job survived the loss of a node:\n{got.stdout}\n{got.stderr}")
        if "rank 2" not in got.stderr and "node 2" not in got.stderr:
            fail(f"the message does not name the node:\n{got.stderr}")
    deadline = time.monotonic() + 30
    while live_processes({"cluster_check", "shmpool-tracker"}) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling /proc; the bound is a hang guard
    alive = live_processes({"cluster_check", "shmpool-tracker"})
    if alive:
        fail(f"processes left: {alive}")
    print(f"a killed node ended the job (exit {got.returncode}, {took:.1f} s), naming it; "
          f"no process and no block left")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def idle(c):
    cmd = c.command(3, [os.path.join(c.bin, "cluster_check"), "idle"])
    p = subprocess.Popen(cmd, env=c.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line.startswith("idle"):
            fail(f"no idle line: {line!r} {p.stderr.read() if p.poll() is not None else ''}")
        ranks = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                 and open(f"/proc/{pid}/stat").read().split()[3] == str(p.pid)]
        if len(ranks) != 3:
            fail(f"expected 3 ranks under mpirun, found {ranks}")
        hz = os.sysconf("SC_CLK_TCK")
        before = {r: cpu_ticks(r) for r in ranks}
        window = 3.0
        time.sleep(window)  # the measurement window, not a synchronisation
        used = {r: (cpu_ticks(r) - before[r]) / hz / window for r in ranks}
        p.stdin.write("go\n")
        p.stdin.flush()
        p.wait(timeout=LIMIT)
        worst = max(used.values())
        if worst >= 0.05:
            fail(f"an idle rank used {100 * worst:.1f}% of a core: {used}")
        print(f"idle ranks used {', '.join(f'{100 * u:.1f}%' for u in used.values())} of a core")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def mismatch(c):
    a = os.path.join(c.bin, "cluster_check")
    b = os.path.join(c.bin, "cluster_check_other")
    cmd = ["mpirun"] + c.flags + ["-n", "2", a, ":", "-n", "1", b]
    try:
        got = subprocess.run(cmd, env=c.env, capture_output=True, text=True, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        fail("ranks running different programs hung instead of failing")
    if got.returncode == 0:
        fail(f"ranks running different programs were accepted:\n{got.stdout}")
    if not re.search(r"node 2 \(rank 2\) runs a program other than this one .*registered "
                     r"tasks differ", got.stderr):
        fail(f"no clear error:\n{got.stderr}")
    if "map " in got.stdout:
        fail(f"results were computed:\n{got.stdout}")
    print("ranks running different programs: refused at start, naming the node")


def examples(c):
    """The examples run under mpirun as they are, with the same results."""
    runs = {
        "mandelbrot": ([os.path.join(c.bin, "mandelbrot"), "--workers", "1", "--width", "320",
                        "--height", "200", "--out", "{tmp}/m.png"], r"checksum: \S+"),
        "pipeline": ([os.path.join(c.bin, "pipeline"), "--items", "3000"], r"aggregate: \S+"),
        "wordcount": ([os.path.join(c.bin, "wordcount"), "--workers", "1", "--top", "5",
                       os.path.join(c.source, "README.md"), os.path.join(c.source, "CONTRIBUTING.md")],
                      r"(?s)\d+ \w+.*"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (program, pattern) in runs.items():
            program = [a.replace("{tmp}", tmp) for a in program]
            ref = c.alone(program)
            want = re.search(pattern, ref.stdout)
            if ref.returncode != 0 or not want:
                fail(f"{name} alone: {ref.stdout}\n{ref.stderr}")
            with Nodes(3, name) as nodes:
                got = c.run(3, program, nodes)
                have = re.search(pattern, got.stdout)
                if got.returncode != 0 or not have or have.group(0) != want.group(0):
                    fail(f"{name} under mpirun -n 3: {got.stdout}\n{got.stderr}\n"
                         f"alone: {want.group(0)}")
            print(f"{name}: '{want.group(0)}' alone and under mpirun -n 3")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["equivalence", "crashes", "kill-node", "idle",
                                         "mismatch", "examples"])
    ap.add_argument("--mpirun-flags", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--source", default=os.path.dirname(os.path.dirname(HERE)))
    args = ap.parse_args()
    if os.geteuid() != 0 and args.scenario in ("equivalence", "crashes", "kill-node", "examples"):
        print("skipped: private /dev/shm per rank needs root (mount namespaces)")
        sys.exit(SKIP)
    c = Cluster(args)
    {"equivalence": equivalence, "crashes": crashes, "kill-node": kill_node, "idle": idle,
     "mismatch": mismatch, "examples": examples}[args.scenario](c)


if __name__ == "__main__":
    main()
