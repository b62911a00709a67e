# Test driver for the wordcount example: compares its output with counts computed here.
#
#   check_wordcount.py counts|errors WORDCOUNT_BINARY
#
# The input files are generated deterministically in a temporary directory. No run may leave a
# new psm_* block in /dev/shm (ctest runs it alone: RUN_SERIAL).
import collections
import os
import random
import re
import subprocess
import sys
import tempfile

SHM = "/dev/shm"
failures = []


def blocks():
    return {n for n in os.listdir(SHM) if n.startswith("psm_")}


def in_use(name):
    """Whether a live process maps or holds open /dev/shm/NAME (so it is not one wordcount left)."""
    path = f"{SHM}/{name}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                if any(line.rstrip().endswith(path) for line in maps):
                    return True
            fds = f"/proc/{pid}/fd"
            if any(os.readlink(f"{fds}/{fd}") == path for fd in os.listdir(fds)):
                return True
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return False


def run(binary, args):
    before = blocks()
    p = subprocess.run([binary, *args], capture_output=True, timeout=120)
    # wordcount and its workers have exited: a new block nobody holds is one it left behind
    # (blocks that concurrent tests create and hold are not counted).
    left = [n for n in blocks() - before if not in_use(n)]
    if left:
        failures.append(f"{args}: blocks left in {SHM}: {sorted(left)}")
    return p


def reference(paths, top):
    counts = collections.Counter()
    for path in paths:
        with open(path, "rb") as f:
            counts.update(w.lower() for w in re.findall(rb"[A-Za-z]+", f.read()))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return b"".join(b"%d %s\n" % (n, w) for w, n in ranked)


def expect_output(binary, args, expected):
    p = run(binary, args)
    if p.returncode != 0 or p.stderr or p.stdout != expected:
        failures.append(
            f"wordcount {' '.join(args)}: exit {p.returncode}, stderr {p.stderr!r}\n"
            f"  stdout   {p.stdout[:300]!r}\n  expected {expected[:300]!r}"
        )


def write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_files(d):
    rnd = random.Random(20240607)
    files = {}
    files["prose"] = write(
        d,
        "prose.txt",
        "The quick brown Fox -- the QUICK fox! It's 2024: x1y2z3, a_b, "
        "Café CAFÉ naïve déjà-vu; über.\tTabs\tand\r\nCRLF lines, the end.\n".encode(),
    )
    files["empty"] = write(d, "empty.txt", b"")
    files["nowords"] = write(d, "nowords.txt", b"123 456 -- !!! 7.5 \xc3\xa9\xff\n0\n")
    # Words far longer than a chunk: every chunk boundary near them lands inside a word.
    long_word = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
                        for _ in range(3000))
    files["long"] = write(
        d, "long.txt", f"{long_word} short {long_word.upper()}\n{'z' * 5000} short".encode()
    )
    # A larger text from a small vocabulary: mixed case, punctuation, digits, UTF-8, ties.
    vocab = ["alpha", "beta", "gamma", "delta", "pool", "worker", "shared", "memory", "a", "i",
             "naïve", "résumé", "x", "word", "count"]
    seps = [" ", " ", " ", "\n", ", ", ". ", "--", "42", "\t", "é", "_"]
    parts = []
    for _ in range(60000):
        w = rnd.choice(vocab)
        w = "".join(c.upper() if rnd.random() < 0.2 else c for c in w)
        parts.append(w + rnd.choice(seps))
    files["big"] = write(d, "big.txt", "".join(parts).encode())
    # No newline at the end of one file: its last word must not join the next file's first.
    files["tail"] = write(d, "tail.txt", b"tail")
    files["head"] = write(d, "head.txt", b"head and more")
    files["ties"] = write(d, "ties.txt", b"zeta beta alpha " * 3)
    return files


def check_counts(binary):
    with tempfile.TemporaryDirectory() as d:
        f = make_files(d)
        everything = [f["prose"], f["empty"], f["nowords"], f["long"], f["big"], f["tail"],
                      f["head"]]
        # The reference itself, checked by hand on small inputs.
        assert reference([f["ties"]], 2) == b"3 alpha\n3 beta\n"
        assert reference([f["prose"]], 3) == b"3 the\n2 caf\n2 fox\n"
        assert reference([f["tail"], f["head"]], 9) == b"1 and\n1 head\n1 more\n1 tail\n"
        for workers in ["1", "3"]:
            for top in ["5", "1000000"]:
                expect_output(binary, [*everything, "--workers", workers, "--top", top],
                              reference(everything, int(top)))
        expect_output(binary, ["--workers", "2", *everything], reference(everything, 10))
        expect_output(binary, [f["long"], "--workers", "3", "--top", "100"],
                      reference([f["long"]], 100))
        expect_output(binary, [f["prose"]], reference([f["prose"]], 10))  # one worker per core
        expect_output(binary, [f["tail"], f["head"], "--top", "9"],
                      b"1 and\n1 head\n1 more\n1 tail\n")
        expect_output(binary, [f["ties"], "--top", "2", "--workers", "3"], b"3 alpha\n3 beta\n")
        expect_output(binary, [f["empty"], "--workers", "1"], b"")
        expect_output(binary, [f["nowords"], f["empty"], "--top", "3"], b"")


def expect_error(binary, args, mentions):
    p = run(binary, args)
    lines = p.stderr.decode(errors="replace").splitlines()
    if (p.returncode != 1 or p.stdout or len(lines) != 1 or not p.stderr.endswith(b"\n")
            or not lines[0].startswith("wordcount: error:") or mentions not in lines[0]):
        failures.append(
            f"wordcount {' '.join(args)}: want exit 1 and one 'wordcount: error:' line naming "
            f"{mentions!r}; got exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}"
        )


def check_errors(binary):
    with tempfile.TemporaryDirectory() as d:
        good = write(d, "good.txt", b"some words here\n")
        missing = os.path.join(d, "missing.txt")
        expect_error(binary, [good, missing], "missing.txt")
        expect_error(binary, [missing, "--workers", "2"], "missing.txt")
        expect_error(binary, [good, d], d)  # a directory cannot be read
        expect_error(binary, [good, "--top", "0"], "--top")
        expect_error(binary, [good, "--top", "-3"], "--top")
        expect_error(binary, [good, "--top", "many"], "--top")
        expect_error(binary, [good, "--workers", "lots"], "--workers")
        expect_error(binary, ["--top", "3"], "FILE")
        expect_error(binary, [], "FILE")


def main():
    mode, binary = sys.argv[1], sys.argv[2]
    {"counts": check_counts, "errors": check_errors}[mode](binary)
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    if failures:
        return 1
    print(f"wordcount {mode}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
