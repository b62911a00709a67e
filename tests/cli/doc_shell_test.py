#!/usr/bin/env python3
"""Runs the shell blocks that README.md and docs/*.md mark with `<!-- shell-test -->`, as they are
written (with `build/bin/` pointing at this build), and checks every `# <output>` comment
against what its command printed, where `…` stands for anything.

Usage: doc_shell_test.py SOURCE_DIR BIN_DIR"""
import pathlib
import re
import subprocess
import sys

root, bindir = pathlib.Path(sys.argv[1]), sys.argv[2]
block = re.compile(r"<!-- shell-test -->\n```sh\n(.*?)```", re.S)
checked = 0


def remove_blocks(names):
    """A block a failed block of commands created is removed: the test leaves nothing behind."""
    for name in names:
        subprocess.run([bindir + "/shmpool", "rm", name], capture_output=True)


for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
    for m in block.finditer(doc.read_text()):
        env = {}
        for line in m.group(1).splitlines():
            command, _, expected = line.partition("  # ")
            command = command.strip().replace("build/bin/", bindir + "/")
            # Each line in a fresh shell that knows the variables set so far.
            prelude = "".join(f"{k}='{v}'\n" for k, v in env.items())
            assign = re.fullmatch(r"(\w+)=\$\((.*)\)", command)
            script = prelude + (assign.group(2) if assign else command)
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                               text=True, timeout=60)
            if r.returncode != 0:
                remove_blocks(env.values())
                sys.exit(f"{doc.name}: `{line.strip()}` failed ({r.returncode}): {r.stderr.strip()}")
            out = r.stdout.strip()
            if assign:
                env[assign.group(1)] = out
            expected = expected.strip()
            if expected:
                pattern = ".*".join(re.escape(part) for part in expected.split("…"))
                if not re.fullmatch(pattern, out, re.S):
                    remove_blocks(env.values())
                    sys.exit(f"{doc.name}: `{command}` printed {out!r}, the doc says {expected!r}")
            checked += 1
if checked == 0:
    sys.exit("no <!-- shell-test --> block found")
print(f"{checked} documented commands ran as shown")
