"""docs/python.md's shmpool.Pool example, run by the test suite with the worker program's path."""
import sys

workers_program = sys.argv[1]
# [python-pool]
import numpy as np
import shmpool

with shmpool.Pool(workers_program, workers=2) as pool:
    print(pool.tasks["mean_task"])  # TaskSignature(args=('vec<f64>',), result='f64', ...)
    print(pool.map("mean_task", [[1, 2, 3], [10, 20]]))  # [2.0, 15.0]

    image = shmpool.SharedArray.create((480, 640), np.float32)  # in a shared block
    image[:] = np.random.default_rng(1).random(image.shape) * 9
    pool.for_each_index("normalise_task", 480, image, 640)  # rows, in place, by name
    print(image.max(axis=1).min())  # 1.0: every row, written by the C++ workers
    image.unlink()

    try:
        pool.map("mean_task", [[1, "x"]])
    except TypeError as e:
        print(e)  # task 'mean_task' item 0 argument 0: element 1: expects f64, got str
# [python-pool]
