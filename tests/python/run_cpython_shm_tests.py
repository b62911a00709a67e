"""CPython's own shared-memory tests (_TestSharedMemory, from Debian's libpython3.11-testsuite,
or the test package of another CPython, e.g. pyenv's 3.13) run unmodified against
shmpool.shared_memory, under the interpreter that runs this script.

    run_cpython_shm_tests.py BUILD_PYTHON_DIR VENV_DIR --start-method fork|spawn|forkserver

BUILD_PYTHON_DIR holds the package built for that interpreter.

It makes a virtual environment whose .pth files put shmpool on the path and make it
multiprocessing.shared_memory in every interpreter started there (the multiprocessing children,
the forkserver, `python -I` subprocesses), re-runs itself in that environment, proves that
shmpool's module is the one loaded (here, in a multiprocessing child and in an isolated
subprocess), then runs the class. The expected failures below are listed with their reasons
(docs/python.md); one that passes fails the run, as does anything left in /dev/shm.
"""

import argparse
import os
import subprocess
import sys

# Test name -> why it is expected to fail against shmpool.
EXPECTED_FAILURES = {
    "test_shared_memory_cleaned_after_process_termination":
        "expects CPython's resource_tracker warning text on the killed process's stderr; shmpool's "
        "tracker removes the block at once and reports on its own stderr",
}


# The test module of one start method, as CPython's test_multiprocessing_<method>.py makes it
# (those files are missing from some installations; _test_multiprocessing.py is what counts).
# It lives in the virtual environment, so that spawned children import it by name.
ENTRY_MODULE = """import test._test_multiprocessing
test._test_multiprocessing.install_tests_in_module_dict(globals(), {method!r})
"""


def make_venv(build_python, venv):
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                        venv], check=True)
    site = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "shmpool-path.pth"), "w") as f:
        f.write(os.path.abspath(build_python) + "\n")
    with open(os.path.join(site, "zz-shmpool-inject.pth"), "w") as f:
        f.write("import shmpool._inject_stdlib\n")
    for method in ("fork", "spawn", "forkserver"):
        with open(os.path.join(site, f"shmpool_cpython_tests_{method}.py"), "w") as f:
            f.write(ENTRY_MODULE.format(method=method))


def module_name():
    import multiprocessing.shared_memory
    return multiprocessing.shared_memory.__name__


def check_injected():
    import multiprocessing
    ours = "shmpool.shared_memory"
    if module_name() != ours:
        sys.exit(f"the runner uses {module_name()}, not {ours}")
    with multiprocessing.Pool(1) as pool:
        child = pool.apply(module_name)
    if child != ours:
        sys.exit(f"a multiprocessing child uses {child}, not {ours}")
    isolated = subprocess.run(
        [sys.executable, "-I", "-c",
         "import multiprocessing.shared_memory as m; print(m.__name__)"],
        capture_output=True, text=True, check=True).stdout.strip()
    if isolated != ours:
        sys.exit(f"an isolated subprocess uses {isolated}, not {ours}")


def blocks():
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}


def run_suite(start_method):
    import unittest
    import importlib
    import multiprocessing
    multiprocessing.set_start_method(start_method, force=True)
    check_injected()
    multiprocessing.set_start_method(None, force=True)  # the test module sets it again
    module = importlib.import_module(f"shmpool_cpython_tests_{start_method}")
    case = module.WithProcessesTestSharedMemory
    for name in EXPECTED_FAILURES:
        if hasattr(case, name):
            setattr(case, name, unittest.expectedFailure(getattr(case, name)))
    before = blocks()
    module.setUpModule()
    try:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    finally:
        module.tearDownModule()
    left = blocks() - before
    print(f"{result.testsRun} run, {len(result.failures)} failed, {len(result.errors)} errors, "
          f"{len(result.expectedFailures)} expected failures, "
          f"{len(result.unexpectedSuccesses)} unexpected successes; blocks left: {sorted(left)}")
    ok = result.wasSuccessful() and not result.unexpectedSuccesses and not left
    print("CPython's shared-memory tests " + ("PASSED" if ok else "FAILED") +
          f" against shmpool.shared_memory ({start_method})")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_python")
    parser.add_argument("venv")
    parser.add_argument("--start-method", required=True, choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside:
        try:
            import test._test_multiprocessing  # noqa: F401
        except ImportError:
            print(f"CPython's test suite is not installed for {sys.executable} (Debian: "
                  f"libpython3.11-testsuite): skipped")
            return 77
        make_venv(args.build_python, args.venv)
        return subprocess.run([os.path.join(args.venv, "bin", "python"), os.path.abspath(__file__),
                               args.build_python, args.venv, "--start-method", args.start_method,
                               "--inside"]).returncode
    return run_suite(args.start_method)


if __name__ == "__main__":
    sys.exit(main())
