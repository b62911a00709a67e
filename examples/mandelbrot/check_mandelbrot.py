#!/usr/bin/env python3
"""The mandelbrot example as an integration test: the checksum is the same for every worker count
and crash rate, a worker SIGKILLed from outside changes neither the checksum nor the leaked count,
and bad input is one error line."""
import os
import re
import selectors
import signal
import subprocess
import sys

LAST = re.compile(r"checksum: ([0-9a-f]{16}) crashes: (\d+) retries: (\d+) leaked-segments: (\d+)$")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def run(binary, out, *args):
    p = subprocess.run([binary, "--out", out, *args], capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        fail(f"{args}: exit {p.returncode}: {p.stderr}")
    m = LAST.search(p.stdout.strip().splitlines()[-1])
    if not m:
        fail(f"{args}: no checksum line in {p.stdout!r}")
    return m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), p.stdout


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    png = os.path.join(work, "m.png")
    small = ["--width", "320", "--height", "200", "--max-iter", "500"]

    ref, _, _, leaked, _ = run(binary, png, "--workers", "0", *small)
    for args in (["--workers", "1"], ["--workers", "2"], ["--workers", "3", "--crash-rate", "0.2"]):
        checksum, crashes, retries, leaked, _ = run(binary, png, *small, *args)
        if checksum != ref:
            fail(f"{args}: checksum {checksum} != {ref}")
        if leaked:
            fail(f"{args}: {leaked} leaked segments")
        if "--crash-rate" in args and (crashes == 0 or retries != crashes):
            fail(f"{args}: {crashes} crashes, {retries} retries")
    with open(png, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            fail("the output is not a PNG")

    # A worker killed from outside while it renders: the pool replaces it, retries its rows.
    big = ["--width", "800", "--height", "500", "--max-iter", "4000"]
    ref_big, *_ = run(binary, png, "--workers", "0", *big)
    p = subprocess.Popen([binary, "--out", png, "--workers", "2", *big], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=60):
        p.kill()
        fail("no 'rendering' line within 60 s")
    first = p.stdout.readline()
    pids = re.search(r"\(pids ([\d ]+)\)", first)
    if not pids:
        p.kill()
        fail(f"unexpected first line {first!r}")
    os.kill(int(pids.group(1).split()[0]), signal.SIGKILL)
    rest, err = p.communicate(timeout=240)
    if p.returncode != 0:
        fail(f"after the kill: exit {p.returncode}: {err}")
    m = LAST.search(rest.strip().splitlines()[-1])
    respawns = re.search(r"respawns: (\d+)", rest)
    if not m or m.group(1) != ref_big or m.group(4) != "0":
        fail(f"after the kill: {rest!r}, expected checksum {ref_big} and nothing leaked")
    if not respawns or int(respawns.group(1)) < 1:
        fail(f"the killed worker was not replaced: {rest!r}")

    # Bad input: one error line, exit 1.
    for args in (["--out", "/nonexistent-dir/m.png", *small], ["--crash-rate", "2"]):
        p = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
        lines = p.stderr.strip().splitlines()
        if p.returncode != 1 or len(lines) != 1 or not lines[0].startswith("mandelbrot: error:"):
            fail(f"{args}: exit {p.returncode}, stderr {p.stderr!r}")
    print("mandelbrot ok")


if __name__ == "__main__":
    main()
