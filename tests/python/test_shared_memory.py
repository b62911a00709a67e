"""shmpool.shared_memory where it differs from CPython's module, and interop with it both ways.

    PYTHONPATH=build/python python3 -m unittest tests/python/test_shared_memory.py
"""

import multiprocessing.shared_memory as cpython
from multiprocessing import resource_tracker
import os
import multiprocessing
import signal
import struct
import subprocess
import sys
import time
import unittest

import numpy as np

from shmpool import shared_memory as shm


def _make_block_in_child():
    block = shm.SharedMemory(create=True, size=16)
    block.buf[:5] = b"child"
    name = block.name
    block.close()
    return name


def exists(name):
    return os.path.exists(f"/dev/shm/{name}")


class SharedMemoryFixes(unittest.TestCase):
    def setUp(self):
        self.blocks_before = {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}

    def tearDown(self):
        left = {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} - self.blocks_before
        self.assertEqual(left, set(), "blocks left in /dev/shm")

    def test_close_with_live_numpy_views_neither_raises_nor_unmaps(self):
        # CPython: np.frombuffer makes close() raise BufferError; np.ndarray(buffer=) lets close()
        # unmap memory the array still reads (a segfault).
        block = shm.SharedMemory(create=True, size=8 * 1000)
        try:
            a = np.ndarray((1000,), dtype=np.float64, buffer=block.buf)
            b = np.frombuffer(block.buf, dtype=np.float64)
            a[:] = 2.5
            block.close()
            self.assertEqual(float(a.sum()), 2500.0)
            self.assertTrue(np.shares_memory(a, b))
            self.assertEqual(float(b[999]), 2.5)
        finally:
            block.unlink()

    def test_an_attachers_exit_never_unlinks_the_block(self):
        # gh-82300: CPython's tracker in the attaching process unlinks the block at its exit.
        block = shm.SharedMemory(create=True, size=64)
        try:
            code = ("import sys; from shmpool import shared_memory as s; "
                    f"b = s.SharedMemory({block.name!r}); b.buf[0] = 7; b.close()")
            subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
            self.assertTrue(exists(block.name))
            self.assertEqual(block.buf[0], 7)
        finally:
            block.close()
            block.unlink()

    def test_track_as_python_3_13_means_it_on_every_version(self):
        # track=True on attach: this process owns the block too, and its exit removes it, with
        # CPython's warning; track=False on create: the creator's exit leaves the block.
        block = shm.SharedMemory(create=True, size=64)
        try:
            code = ("from shmpool import shared_memory as s; "
                    f"b = s.SharedMemory({block.name!r}, track=True); b.close()")
            done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                  text=True, env=os.environ.copy())
            self.assertIn("resource_tracker: There appear to be 1 leaked shared_memory objects "
                          "to clean up at shutdown: " + block.name, done.stderr)
            deadline = time.monotonic() + 10  # a bound: the tracker removes it as the child exits
            while exists(block.name) and time.monotonic() < deadline:
                time.sleep(0.005)
            self.assertFalse(exists(block.name))
        finally:
            block.close()
        code = ("from shmpool import shared_memory as s; "
                "b = s.SharedMemory(create=True, size=64, track=False); print(b.name)")
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, env=os.environ.copy())
        name = done.stdout.strip()
        try:
            self.assertNotIn("resource_tracker", done.stderr)  # it owned nothing
            self.assertTrue(exists(name))
        finally:
            shm.SharedMemory(name, track=False).unlink()

    def test_a_block_made_in_a_multiprocessing_child_outlives_the_child(self):
        # As with CPython: the block belongs to the root of the multiprocessing tree, so a worker
        # may make it, return its name and exit.
        for method in ("fork", "spawn"):
            with multiprocessing.get_context(method).Pool(1) as pool:
                name = pool.apply(_make_block_in_child)
            block = shm.SharedMemory(name)
            try:
                self.assertEqual(bytes(block.buf[:5]), b"child", method)
            finally:
                block.close()
                block.unlink()

    def test_a_killed_creators_block_is_removed_promptly(self):
        code = ("import sys, time; from shmpool import shared_memory as s; "
                "b = s.SharedMemory(create=True, size=64); print(b.name, flush=True); "
                "time.sleep(60)")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                 env=os.environ.copy())
        name = child.stdout.readline().strip()
        self.assertTrue(exists(name))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        deadline = time.monotonic() + 10  # a bound, not a clock: the removal is prompt
        while exists(name) and time.monotonic() < deadline:
            time.sleep(0.005)
        self.assertFalse(exists(name))

    def test_str_items_are_sized_in_utf8_bytes(self):
        # gh-88336: CPython sizes a str by its characters and fails to store what it measured.
        sl = shm.ShareableList(["ééééééééé", "x"])
        try:
            self.assertEqual(sl[0], "ééééééééé")
            sl[0] = "ààààààààà"
            self.assertEqual(sl[0], "ààààààààà")
        finally:
            sl.shm.close()
            sl.shm.unlink()

    def test_trailing_nuls_are_refused_never_lost(self):
        # gh-96779, gh-106939: CPython strips them silently.
        with self.assertRaises(ValueError):
            shm.ShareableList([b"ab\x00"])
        sl = shm.ShareableList(["abcd"])
        try:
            with self.assertRaises(ValueError):
                sl[0] = "a\x00"
            self.assertEqual(sl[0], "abcd")
        finally:
            sl.shm.close()
            sl.shm.unlink()

    def test_a_corrupted_list_is_an_error_not_an_out_of_bounds_read(self):
        block = shm.SharedMemory(create=True, size=64)
        try:
            block.buf[:8] = (10**6).to_bytes(8, "little")  # a million items in 64 bytes
            with self.assertRaises(ValueError):
                shm.ShareableList(name=block.name)
        finally:
            block.close()
            block.unlink()

    def test_blocks_and_lists_interoperate_with_cpythons_module_both_ways(self):
        ours = shm.ShareableList([1, 2.5, "héllo", b"\x01\x02", None, True])
        try:
            theirs = cpython.ShareableList(name=ours.shm.name)
            # CPython's attacher registers the block with its own tracker (gh-82300): unregister,
            # or that tracker unlinks it at exit, and warns.
            resource_tracker.unregister(theirs.shm._name, "shared_memory")
            self.assertEqual(list(theirs), [1, 2.5, "héllo", b"\x01\x02", None, True])
            theirs[0] = 42
            self.assertEqual(ours[0], 42)
            theirs.shm.close()
        finally:
            ours.shm.close()
            ours.shm.unlink()
        theirs = cpython.ShareableList([7, "abc", 1.5], name=None)
        try:
            ours = shm.ShareableList(name=theirs.shm.name)
            self.assertEqual(list(ours), [7, "abc", 1.5])
            self.assertEqual(ours.format, theirs.format)
            ours.shm.close()
        finally:
            theirs.shm.close()
            theirs.shm.unlink()

    def test_a_full_dev_shm_is_enospc_at_creation_and_leaves_nothing(self):
        # CPython: the block is created, and the first write past the free space is a SIGBUS.
        # Here /dev/shm is a 1 MiB tmpfs of a private mount namespace (root only).
        if os.geteuid() != 0:
            self.skipTest("needs root for a private /dev/shm")
        code = ("import os; from shmpool import shared_memory as s\n"
                "try:\n"
                "    s.SharedMemory(create=True, size=2 << 20)\n"
                "except OSError as e:\n"
                "    blocks = [n for n in os.listdir('/dev/shm') if not n.startswith('.')]\n"
                "    print(type(e).__name__, e.errno, blocks)\n")
        script = ("mount -t tmpfs -o size=1m shmpool-test /dev/shm && "
                  f"exec {sys.executable} -c \"$0\"")
        out = subprocess.run(["unshare", "-m", "sh", "-c", script, code], capture_output=True,
                             text=True, env=os.environ.copy())
        if out.returncode != 0 and "unshare" in out.stderr:
            self.skipTest(f"no private mount namespace: {out.stderr.strip()}")
        self.assertEqual(out.stdout.strip(), "OSError 28 []", out.stderr)

    def test_values_a_list_cannot_hold_are_cpythons_errors(self):
        sl = shm.ShareableList([1, "abc"])
        try:
            with self.assertRaises(struct.error):
                sl[0] = 2 ** 70
            with self.assertRaises(UnicodeEncodeError):
                sl[1] = "\udc80"
            with self.assertRaises(TypeError):
                sl[0] = [1]
            self.assertEqual(list(sl), [1, "abc"])
        finally:
            sl.shm.close()
            sl.shm.unlink()

    def test_no_tracker_to_start_is_an_oserror_when_a_block_is_made_not_at_import(self):
        code = ("from shmpool import shared_memory as s\n"
                "try:\n"
                "    s.SharedMemory(create=True, size=64)\n"
                "except OSError as e:\n"
                "    print(e.errno, 'cannot start the tracker' in str(e))\n")
        env = dict(os.environ, SHMPOOL_TRACKER_EXE="/nonexistent/shmpool-tracker")
        env.pop("SHMPOOL_TRACKER", None)  # no tracker to inherit either
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env)
        self.assertEqual(out.stdout.strip(), "2 True", out.stderr)

    def test_install_makes_the_stdlib_module_ours(self):
        code = ("import shmpool; shmpool.install(); "
                "import multiprocessing.shared_memory as m; "
                "from multiprocessing.managers import SharedMemoryManager; "
                "print(m.__name__)")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, env=os.environ.copy()).stdout.strip()
        self.assertEqual(out, "shmpool.shared_memory")


if __name__ == "__main__":
    unittest.main()
