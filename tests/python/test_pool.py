"""shmpool.Pool: a C++ worker program's tasks run from Python (docs/python.md).

    test_pool.py PATH_TO_shmpool_python_pool_workers

Every wait is bounded; gates (tasks that raise a shared count and wait to be released) stand in
for timing.
"""

import concurrent.futures
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import numpy as np

import shmpool

WORKERS = None  # the worker program, from the command line
BOUND = 60  # seconds: the most any wait here may take before the test fails


def wait_until(condition, what):
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().split(")")[-1].split()[0] != "Z"


def processes_of(executable):
    """The pids of the processes running `executable`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/exe") == executable:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


class Gate:
    """Two int32s in a shared block: how many tasks arrived, and whether they may go on."""

    def __init__(self):
        self.flags = shmpool.SharedArray.create(2, np.int32)

    def arrived(self):
        return int(self.flags[0])

    def wait_for(self, n):
        wait_until(lambda: self.arrived() >= n, f"{n} tasks at the gate")

    def open(self):
        self.flags[1] = 1

    def close(self):
        self.flags.unlink()


class PoolTest(unittest.TestCase):
    pool = None

    @classmethod
    def setUpClass(cls):
        cls.pool = shmpool.Pool(WORKERS, 2)

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()
        cls.pool.join()

    def test_the_program_describes_its_tasks(self):
        tasks = self.pool.tasks
        self.assertEqual(tasks["square_task"], shmpool.TaskSignature(("i32",), "i32", True))
        self.assertEqual(tasks["scale_task"].args, ("str", "f64", "u64", "u64"))
        self.assertEqual(tasks["scale_task"].result, "void")
        self.assertEqual(tasks["swap_task"].args, ("tuple<i32,str>",))
        self.assertNotIn("shmpool.remote_step", tasks)  # shmpool's own are not listed

    def test_map_of_every_kind_of_input(self):
        expected = [x * x for x in range(1000)]
        self.assertEqual(self.pool.map("square_task", range(1000)), expected)
        self.assertEqual(self.pool.map("square_task", list(range(1000))), expected)
        self.assertEqual(self.pool.map("square_task", (x for x in range(1000))), expected)
        self.assertEqual(self.pool.map("square_task", np.arange(1000, dtype=np.int32)), expected)
        self.assertEqual(self.pool.map("square_task", np.arange(1000, dtype=np.int64)), expected)
        self.assertEqual(self.pool.map("square_task", [np.int16(3), True]), [9, 1])
        self.assertEqual(self.pool.map("square_task", range(10), chunksize=3), expected[:10])
        self.assertEqual(self.pool.map("square_task", []), [])

    def test_every_wire_type_round_trips(self):
        p = self.pool
        # A packed task through starmap (records, not packed): the results are read as such.
        self.assertEqual(p.starmap("square_task", [(i,) for i in range(1, 9)]),
                         [i * i for i in range(1, 9)])
        self.assertEqual(p.starmap("add_task", [(1, 2.5), (-3, 0.25)]), [3.5, -2.75])
        self.assertEqual(p.map("shout_task", ["a", "é", b"raw"]), ["a!", "é!", "raw!"])
        self.assertEqual(p.map("total_task", [[1, 2], [], (3.5,), np.ones(4)]), [3, 0, 3.5, 4])
        self.assertEqual(p.map("halve_task", [None, 3, 4]), [None, None, 2])
        self.assertEqual(p.map("swap_task", [(1, "x")]), [("x", 1)])
        self.assertEqual(p.starmap("split_task", [("a,b,,c", ",")]), [["a", "b", "", "c"]])
        self.assertEqual(p.starmap("split_task", [("a;b", b";")]), [["a", "b"]])

    def test_bad_items_are_refused_before_anything_runs(self):
        before = self.pool.stats().tasks_done
        with self.assertRaisesRegex(TypeError, r"task 'square_task' item 2 argument 0: "
                                               r"expects i32, got str"):
            self.pool.map("square_task", [1, 2, "3"])
        with self.assertRaisesRegex(OverflowError, r"item 1 argument 0: 2147483648 does not fit"):
            self.pool.map("square_task", [1, 2**31])
        with self.assertRaisesRegex(TypeError, "expects i32, got float"):
            self.pool.map("square_task", [1.5])
        with self.assertRaisesRegex(TypeError, "use starmap"):
            self.pool.map("add_task", [1, 2])
        with self.assertRaisesRegex(TypeError, r"item 0: expects 2 arguments, got 1"):
            self.pool.starmap("add_task", [(1,)])
        with self.assertRaisesRegex(TypeError, r"element 1: expects f64, got str"):
            self.pool.map("total_task", [[1.0, "x"]])
        with self.assertRaisesRegex(TypeError, "Codec of its own"):
            self.pool.map("custom_task", ["x"])
        # A vector of optionals goes as their bytes, which the description says: refused, not
        # sent as another layout.
        self.assertEqual(self.pool.tasks["count_set_task"].args[0][:8], "vec<raw<")
        with self.assertRaisesRegex(TypeError, "element 0: expects raw<"):
            self.pool.map("count_set_task", [[1, None]])
        with self.assertRaisesRegex(ValueError, r"no task named 'nope' in .*square_task"):
            self.pool.map("nope", [1])
        with self.assertRaisesRegex(TypeError, "takes 1 arguments, got 2"):
            self.pool.submit("square_task", 1, 2)
        with self.assertRaisesRegex(ValueError, "chunksize must be at least 1"):
            self.pool.map("square_task", [1], chunksize=0)
        self.assertEqual(self.pool.stats().tasks_done, before)

    def test_errors_carry_the_item(self):
        with self.assertRaises(shmpool.TaskError) as caught:
            self.pool.map("checked_task", [1, 2, -3, 4, -5])
        e = caught.exception
        self.assertEqual((e.task, e.item, e.type), ("checked_task", 2, "std::invalid_argument"))
        self.assertEqual(e.message, "negative: -3")
        self.assertIsInstance(e, shmpool.PoolError)
        # Ordered imap yields the results before the failed item, then raises at its position.
        got = []
        with self.assertRaises(shmpool.TaskError) as caught:
            for r in self.pool.imap("checked_task", [7, 8, -1, 9]):
                got.append(r)
        self.assertEqual((got, caught.exception.item), ([7, 8], 2))

    def test_a_crashing_item_is_retried_then_reported(self):
        with shmpool.Pool(WORKERS, 2, max_retries=1) as p:
            with self.assertRaises(shmpool.WorkerCrashed) as caught:
                p.map("fragile_task", [1, 13, 2], chunksize=1)
            e = caught.exception
            self.assertEqual((e.task, e.item, e.signal, e.attempts), ("fragile_task", 1,
                                                                      signal.SIGSEGV, 2))
            self.assertEqual(p.map("fragile_task", [1, 2, 3]), [1, 2, 3])  # the pool lives on
            self.assertEqual(p.stats().crashes, 2)

    def test_imap_names_a_crashed_item_as_the_stream_counts_it(self):
        with shmpool.Pool(WORKERS, 2, max_retries=0) as p:
            with self.assertRaises(shmpool.WorkerCrashed) as caught:
                list(p.imap("fragile_task", range(20), chunksize=4))
            self.assertEqual(caught.exception.item, 13)
            self.assertIn("item 13:", str(caught.exception))

    def test_a_task_past_its_timeout_is_killed(self):
        gate = Gate()
        try:
            with shmpool.Pool(WORKERS, 1, task_timeout=0.2) as p:
                with self.assertRaises(shmpool.TaskTimeout) as caught:
                    p.starmap("gate_task", [(gate.flags, 1)])  # never opened
                self.assertEqual((caught.exception.task, caught.exception.item), ("gate_task", 0))
                self.assertEqual(caught.exception.seconds, 0.2)
                self.assertEqual(p.stats().timeouts, 1)
        finally:
            gate.close()

    def test_imap_and_imap_unordered(self):
        self.assertEqual(list(self.pool.imap("square_task", range(50), chunksize=4)),
                         [x * x for x in range(50)])
        self.assertEqual(sorted(self.pool.imap_unordered("square_task", range(50))),
                         [x * x for x in range(50)])
        # An endless input: the consumer stops when it likes. At most `window` chunks ran ahead
        # of it (101 items consumed: 13 chunks of 8, and 2 more).
        import itertools
        before = self.pool.stats().tasks_done
        for r in self.pool.imap("square_task", itertools.count(), chunksize=8, window=2):
            if r >= 10_000:
                break
        ran = self.pool.stats().tasks_done - before
        self.assertTrue(101 <= ran <= 13 * 8 + 2 * 8, ran)
        self.assertEqual(self.pool.map("square_task", [3]), [9])

    def test_futures(self):
        futures = [self.pool.submit("add_task", i, 0.5) for i in range(20)]
        done, _ = concurrent.futures.wait(futures, timeout=BOUND)
        self.assertEqual(len(done), 20)
        self.assertEqual([f.result() for f in futures], [i + 0.5 for i in range(20)])
        failed = self.pool.submit("checked_task", -1)
        self.assertIsInstance(failed.exception(timeout=BOUND), shmpool.TaskError)
        self.assertEqual(self.pool.apply("shout_task", "hi"), "hi!")
        called = threading.Event()
        self.pool.submit("square_task", 4).add_done_callback(lambda f: called.set())
        self.assertTrue(called.wait(BOUND))

    def test_a_queued_future_cancels_and_a_running_one_is_killed(self):
        gate = Gate()
        try:
            with shmpool.Pool(WORKERS, 1) as p:
                running = p.submit("gate_task", gate.flags, 1)
                gate.wait_for(1)
                queued = p.submit("square_task", 5)
                self.assertTrue(queued.cancel())
                self.assertTrue(queued.cancelled())
                self.assertFalse(running.cancel())  # started: only a kill stops it
                self.assertTrue(running.cancel(kill=True))
                self.assertEqual(p.map("square_task", [6]), [36])  # a new worker took over
                wait_until(lambda: p.stats().cancelled == 1, "the kill counted")
        finally:
            gate.close()

    def test_a_shared_array_is_written_in_place(self):
        a = shmpool.SharedArray.create(10_000)
        try:
            a[:] = np.arange(10_000)
            view = a[5000:]
            before = a.copy()
            self.pool.for_each_index("scale_task", len(a), a, 3.0)
            np.testing.assert_array_equal(a, np.arange(10_000) * 3.0)
            self.assertTrue(np.shares_memory(view, a))
            self.assertEqual(view[0], 15000.0)  # the view sees the workers' writes
            np.testing.assert_array_equal(before, np.arange(10_000))  # a copy does not
            with self.assertRaisesRegex(shmpool.TaskError, "past the array's end"):
                self.pool.for_each_index("scale_task", 10_001, a, 1.0)
            with self.assertRaisesRegex(TypeError, "leading arguments"):
                self.pool.for_each_index("scale_task", 10, a)
        finally:
            a.unlink()

    def test_worker_events_and_progress_reach_python(self):
        events, reports = [], []
        exited = threading.Event()

        def on_exit(event):
            events.append(event)
            exited.set()

        with shmpool.Pool(WORKERS, 2, max_retries=0, on_worker_exit=on_exit,
                          on_progress=reports.append) as p:
            with self.assertRaises(shmpool.WorkerCrashed):
                p.map("fragile_task", [13])
            self.assertTrue(exited.wait(BOUND))
            p.map("square_task", range(100))
        e = events[0]
        self.assertEqual((e.reason, e.signal, e.task, e.item),
                         (shmpool.ExitReason.CRASHED, signal.SIGSEGV, "fragile_task", 0))
        final = [r for r in reports if r.task == "square_task" and r.done == r.total == 100]
        self.assertEqual(len(final), 1)  # delivered before map returned

    def test_a_callback_may_run_work_on_its_own_pool(self):
        # The inner map's final progress report would come from the callback's own thread: it
        # does not wait for it (as in C++).
        inner = []

        def on_progress(report):
            if report.task == "add_task" and not inner:
                inner.append(pool.map("square_task", [5, 6]))

        with shmpool.Pool(WORKERS, 2, on_progress=on_progress) as pool:
            self.assertEqual(pool.starmap("add_task", [(i, 0.5) for i in range(50)]),
                             [i + 0.5 for i in range(50)])
        self.assertEqual(inner, [[25, 36]])

    def test_terminate_ends_a_join_that_waits_for_work(self):
        gate = Gate()
        try:
            p = shmpool.Pool(WORKERS, 1)
            running = p.submit("gate_task", gate.flags, 1)
            gate.wait_for(1)  # never opened: only terminate() ends it
            p.close()
            self.assertFalse(p.join(timeout=0.05))  # the host is joining now
            p.terminate()
            self.assertTrue(p.join(timeout=BOUND))
            self.assertIsInstance(running.exception(timeout=BOUND), shmpool.PoolClosed)
        finally:
            gate.close()

    def test_a_callback_cannot_join_or_terminate_its_pool(self):
        refused = []
        done = threading.Event()

        def on_exit(event):
            for stop in (pool.join, pool.terminate):
                try:
                    stop()
                except RuntimeError as e:
                    refused.append(str(e))
            done.set()

        with shmpool.Pool(WORKERS, 1, max_retries=0, on_worker_exit=on_exit) as pool:
            with self.assertRaises(shmpool.WorkerCrashed):
                pool.map("fragile_task", [13])
            self.assertTrue(done.wait(BOUND))
            self.assertEqual(pool.map("square_task", [3]), [9])  # the pool is whole
        self.assertEqual(len(refused), 2)
        self.assertIn("callback of the pool", refused[0])

    def test_the_interpreter_exits_cleanly_past_a_dropped_pool(self):
        # A pool dropped unclosed, its futures' thread still polling: the exit joins that thread
        # before the interpreter finalizes (a thread inside the extension then would abort it).
        script = textwrap.dedent(f"""
            import shmpool
            p = shmpool.Pool({WORKERS!r}, 1)
            futures = [p.submit("square_task", i) for i in range(2000)]
            assert futures[0].result() == 0
            del p  # most futures still pending
        """)
        for _ in range(10):
            done = subprocess.run([sys.executable, "-W", "ignore", "-c", script],
                                  capture_output=True, text=True, timeout=BOUND)
            self.assertEqual(done.returncode, 0, done.stderr)

    def test_close_join_terminate(self):
        p = shmpool.Pool(WORKERS, 1)
        with self.assertRaisesRegex(ValueError, "close"):
            p.join()
        p.close()
        with self.assertRaises(shmpool.PoolClosed):
            p.map("square_task", [1])
        self.assertTrue(p.join(timeout=BOUND))
        self.assertEqual(p.worker_pids(), [])
        p.terminate()  # after join: nothing to do

        p = shmpool.Pool(WORKERS, 2)
        pids = p.worker_pids()
        p.terminate()
        self.assertTrue(p.join(timeout=BOUND))
        self.assertFalse(any(alive(pid) for pid in pids))
        self.assertEqual(p.stats().tasks_done, 0)

    def test_a_pool_made_in_a_thread_that_ends_keeps_its_workers(self):
        made = []
        maker = threading.Thread(target=lambda: made.append(shmpool.Pool(WORKERS, 2)))
        maker.start()
        maker.join(BOUND)
        with made[0] as p:
            pids = p.worker_pids()
            self.assertEqual(p.map("square_task", range(100)), [x * x for x in range(100)])
            self.assertEqual(p.worker_pids(), pids)
            self.assertEqual(p.stats().respawns, 0)

    def test_waits_release_the_gil(self):
        # Another Python thread opens the gate while map waits on it.
        gate = Gate()
        try:
            opener = threading.Thread(target=lambda: (gate.wait_for(2), gate.open()))
            opener.start()
            self.assertEqual(self.pool.starmap("gate_task", [(gate.flags, 1), (gate.flags, 2)],
                                               chunksize=1), [1, 2])
            opener.join(BOUND)
        finally:
            gate.close()

    def test_a_forked_child_cannot_use_or_kill_the_parents_pool(self):
        pids = self.pool.worker_pids()
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_end)
            status = 1
            try:
                self.pool.map("square_task", [1])
            except RuntimeError as e:
                status = 0 if "fork" in str(e) else 2
            type(self).pool = None
            gc.collect()  # the child's copy of the pool goes: the parent's workers stay
            os.write(write_end, b"done")
            os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            self.assertEqual(r.read(), b"done")
        _, status = os.waitpid(child, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.pool.worker_pids(), pids)
        self.assertTrue(all(alive(pid) for pid in pids))
        self.assertEqual(self.pool.map("square_task", [7]), [49])

    def test_bad_worker_programs(self):
        with self.assertRaises(FileNotFoundError):
            shmpool.Pool("/nonexistent/worker", 1)
        with self.assertRaisesRegex(shmpool.IncompatibleWorker, "did not describe its tasks"):
            shmpool.Pool("/bin/true", 1)
        with self.assertRaisesRegex(ValueError, "no task named 'nope'"):
            shmpool.Pool(WORKERS, 1, initializer="nope")


class InterruptTest(unittest.TestCase):
    def test_ctrl_c_in_map_raises_and_leaves_no_worker(self):
        self.interrupt("""
            p.starmap("gate_task", [(GATE, i) for i in range(8)], chunksize=1)
        """)

    def test_ctrl_c_while_the_with_block_waits_for_work_leaves_no_worker(self):
        self.interrupt("""
            futures = [p.submit("gate_task", GATE, i) for i in range(8)]
        """)  # the block ends at once: its exit's join() waits for the gated work

    def interrupt(self, work):
        gate = Gate()
        script = textwrap.dedent(f"""
            import sys, time, shmpool
            GATE = {gate.flags.name!r}
            try:
                with shmpool.Pool({WORKERS!r}, 2) as p:
                    print(*p.worker_pids(), flush=True)
        """) + textwrap.indent(textwrap.dedent(work), " " * 8) + textwrap.dedent("""
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
                sys.exit(0)
            sys.exit(3)
        """)
        try:
            child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                     text=True)
            pids = [int(p) for p in child.stdout.readline().split()]
            gate.wait_for(2)  # both workers at the gate: map is waiting
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            out, _ = child.communicate(timeout=BOUND)
            self.assertEqual(child.returncode, 0, out)
            interrupted = float(out.split()[-1])
            print(f"\nCtrl-C to KeyboardInterrupt: {1000 * (interrupted - sent):.0f} ms",
                  file=sys.stderr)
            wait_until(lambda: not any(alive(p) for p in pids), "the workers' exit")
            wait_until(lambda: not processes_of(WORKERS), "no worker left at all")
            self.assertEqual(gate.arrived(), 2)  # nothing else ran
        finally:
            gate.close()


if __name__ == "__main__":
    WORKERS = os.path.realpath(sys.argv.pop(1))
    unittest.main(verbosity=2)
