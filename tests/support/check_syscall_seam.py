#!/usr/bin/env python3
"""Checks that C++ sources make no raw system call outside the seam (shm/src/posix/sys.*).

Usage: check_syscall_seam.py DIR...

Greps the C++ sources under each DIR (shm/src/posix/ excepted) for global-scope calls such as
`::open(` or `::epoll_wait(`, for `SYS_*` numbers and for `__builtin_ia32_pause`, ignoring
comments and string literals. A member call (`ShareableList::close()`, `sys::open(`) is not one:
a `::` that follows an identifier character is a qualified name, not the global scope. Prints
each offence as `file:line: text` and exits 1, or prints a one-line summary and exits 0.
"""

import pathlib
import re
import sys

# Calls that have a wrapper in shm/src/posix/sys.hpp (or that must not be made at all).
CALLS = [
    "open", "close", "read", "write", "mmap", "munmap", "madvise", "shm_open", "shm_unlink",
    "ftruncate", "posix_fallocate", "fstatvfs", "getrandom",
    "socket", "connect", "bind", "listen", "accept", "accept4", "send", "getsockopt", "poll",
    r"epoll_\w+", "eventfd", "pipe", "pipe2", "signalfd", "kill", "waitpid", "wait4", "syscall",
    "pidfd_open", "pidfd_send_signal", "sigaction", "signal", "pthread_sigmask", "sigprocmask",
    "prctl", "setpgid", "setsid", "dup2", "fcntl", "flock", "clock_gettime", "isatty", "sysconf",
    "stat", "lstat", "fstat", "access", "unlink", "mkdir",
]
SKIPPED = ("shm", "src", "posix")
SUFFIXES = {".cpp", ".cc", ".cxx", ".hpp", ".hh", ".hxx", ".h", ".ipp", ".inl"}

RAW = re.compile(
    r"(?<![A-Za-z0-9_])::\s*(?:" + "|".join(CALLS) + r")\s*\("
    r"|(?<![A-Za-z0-9_])SYS_\w+"
    r"|(?<![A-Za-z0-9_])__builtin_ia32_pause\b"
)
# Comments and literals, blanked before matching (newlines kept, so line numbers stay right).
CODE_NOISE = re.compile(
    r'//[^\n]*|/\*.*?\*/|R"([^(\s]{0,16})\(.*?\)\1"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
    re.S,
)


def blank(match):
    return re.sub(r"[^\n]", " ", match.group(0))


def skipped(path):
    parts = path.resolve().parts
    return any(parts[i:i + len(SKIPPED)] == SKIPPED for i in range(len(parts)))


def main(argv):
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    files = []
    for arg in argv:
        root = pathlib.Path(arg)
        if not root.is_dir():
            print(f"{arg}: not a directory", file=sys.stderr)
            return 2
        files += sorted(p for p in root.rglob("*")
                        if p.suffix in SUFFIXES and p.is_file() and not skipped(p))
    offences = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        code = CODE_NOISE.sub(blank, text).splitlines()
        for number, line in enumerate(code, start=1):
            if RAW.search(line):
                print(f"{path}:{number}: {lines[number - 1].strip()}")
                offences += 1
    if offences:
        print(f"{offences} raw system call(s) outside shm/src/posix: use the sys:: seam",
              file=sys.stderr)
        return 1
    print(f"{len(files)} files, no raw system call outside shm/src/posix")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
