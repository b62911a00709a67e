#!/usr/bin/env python3
"""The mandelbrot demo's pool, driven from Python: the C++ workers of examples/mandelbrot
render rows into a numpy image in shared memory (`render_task`), some of them crashing on
purpose, and the image's checksum equals the one the C++ program prints for the same scene.

Usage: pool_mandelbrot.py PATH_TO_mandelbrot [--width W] [--height H] [--workers N]
                          [--crash-rate P] [--check]

--check runs `mandelbrot --workers 0` (the C++ program alone, in one process) for the reference
checksum and fails if the two differ.
"""
import argparse
import re
import subprocess
import sys

import numpy as np

import shmpool

# The task's argument, the C++ struct Scene (examples/mandelbrot/main.cpp), as a numpy record
# with the same C layout: it travels as its 152 bytes (wire type raw<152>).
SCENE = np.dtype([("image", "S64"), ("attempts", "S64"), ("width", "<i4"), ("height", "<i4"),
                  ("max_iter", "<i4"), ("crash_rate", "<f8")], align=True)


def fnv1a(data):
    """64-bit FNV-1a, as the C++ program checksums its image."""
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mandelbrot", help="the mandelbrot program (the worker program)")
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=250)
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crash-rate", type=float, default=0.05)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.width < 1 or args.height < 1 or args.max_iter < 1:
        parser.error("--width, --height and --max-iter must be at least 1")

    image = shmpool.SharedArray.create((args.height, args.width, 3), np.uint8)
    attempts = shmpool.SharedArray.create(args.height, np.int32)
    try:
        scene = np.zeros((), SCENE)
        scene["image"], scene["attempts"] = image.name, attempts.name
        scene["width"], scene["height"] = args.width, args.height
        scene["max_iter"], scene["crash_rate"] = args.max_iter, args.crash_rate
        assert SCENE.itemsize == 152
        with shmpool.Pool(args.mandelbrot, args.workers, max_retries=2,
                          shared_blocks=[image, attempts]) as pool:
            pool.for_each_index("render_task", args.height, scene.tobytes(), grain=4)
            stats = pool.stats()
        checksum = fnv1a(image.tobytes())
        print(f"rendered {args.width}x{args.height} with {args.workers} workers: checksum "
              f"{checksum:016x}, crashes {stats.crashes}, retries {stats.retries}")
        if args.check:
            reference = subprocess.run(
                [args.mandelbrot, "--workers", "0", "--width", str(args.width), "--height",
                 str(args.height), "--max-iter", str(args.max_iter), "--out", "/dev/null"],
                capture_output=True, text=True, check=True, timeout=300)
            expected = int(re.search(r"checksum: ([0-9a-f]{16})", reference.stdout).group(1), 16)
            if checksum != expected:
                print(f"pool_mandelbrot: error: checksum {checksum:016x}, the C++ program's "
                      f"{expected:016x}", file=sys.stderr)
                return 1
            print("ok: the same image as the C++ program's")
        return 0
    finally:
        image.unlink()
        attempts.unlink()


if __name__ == "__main__":
    sys.exit(main())
