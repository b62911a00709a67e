"""shmpool.SharedArray: numpy arrays in shared blocks, read and written in place by C++.

    test_shared_array.py PATH_TO_shm_square
"""

import os
import pickle
import subprocess
import sys
import unittest

import numpy as np

import shmpool

SHM_SQUARE = None


class SharedArrayTest(unittest.TestCase):
    def test_cpp_workers_square_the_array_in_place(self):
        a = shmpool.SharedArray.create((1000,), np.float64)
        try:
            a[:] = np.arange(1000) * 0.5
            view = a[10:20]
            out = subprocess.run([SHM_SQUARE, "--name", a.name, "--count", "1000", "--workers",
                                  "2"], capture_output=True, text=True, check=True,
                                 env=os.environ.copy())
            self.assertIn("squared 1000 values", out.stdout)
            np.testing.assert_array_equal(a, (np.arange(1000) * 0.5) ** 2)
            self.assertTrue(np.shares_memory(a, view))
            self.assertEqual(view.name, a.name)  # a view knows its block
            again = shmpool.SharedArray.attach(a.name, np.float64)
            self.assertEqual(again.shape, (1000,))
            self.assertEqual(float(again[999]), (999 * 0.5) ** 2)
        finally:
            a.unlink()

    def test_shape_dtype_and_bad_sizes(self):
        a = shmpool.SharedArray.create((3, 4), np.int32)
        try:
            self.assertEqual(a.shape, (3, 4))
            self.assertEqual(a.dtype, np.int32)
            self.assertTrue((a == 0).all())
            with self.assertRaises(ValueError):
                shmpool.SharedArray.attach(a.name, np.float64, shape=(100,))
            with self.assertRaises(ValueError):
                shmpool.SharedArray.attach(a.name, np.dtype("V5"))  # 48 bytes: not whole
        finally:
            a.unlink()


    def test_results_in_memory_of_their_own_have_no_block(self):
        a = shmpool.SharedArray.create((4,), np.float64)
        try:
            b = a + 1
            with self.assertRaises(ValueError):
                b.name
            self.assertEqual(a[1:].name, a.name)
            with self.assertRaises(ValueError):
                shmpool.SharedArray.create((-1,), np.float64)
        finally:
            a.unlink()

    def test_a_whole_array_pickles_by_name(self):
        a = shmpool.SharedArray.create((8,), np.int64)
        try:
            a[:] = np.arange(8)
            b = pickle.loads(pickle.dumps(a))
            self.assertEqual(b.name, a.name)
            b[0] = 42
            self.assertEqual(int(a[0]), 42)  # the same memory, not a copy
        finally:
            a.unlink()

if __name__ == "__main__":
    SHM_SQUARE = sys.argv.pop(1)
    unittest.main()
