"""shmpool.Pool: a C++ worker program's tasks (``SHMPOOL_TASK``), run from Python in worker
processes, with multiprocessing.Pool's methods (docs/python.md).

The pool asks the program what each task takes and returns (``SHMPOOL_ROLE=describe``), encodes
every item to match (a wrong one is refused before anything runs, naming the item) and decodes
the results. Big data goes by name: a ``shmpool.SharedArray`` (or a ``SharedMemory``) passed
where the task takes a ``std::string`` becomes the block's name, and the C++ task reads and writes
the array in place.
"""

import atexit
import collections
import concurrent.futures
import dataclasses
import enum
import itertools
import json
import os
import shutil
import subprocess
import threading
import warnings
import weakref

from . import _core

__all__ = [
    "Pool", "Future", "PoolStats", "WorkerEvent", "Progress", "ExitReason", "TaskSignature",
    "PoolError", "TaskError", "WorkerCrashed", "TaskTimeout", "TaskCancelled", "PoolClosed",
    "WorkerStartFailed", "IncompatibleWorker",
]


class PoolError(Exception):
    """The base of the errors a pool raises; ``item`` is the index of the item concerned in its
    job (in ``submit``, 0), or None."""

    def __init__(self, text, /, *, item=None, **fields):
        super().__init__(text)
        self.item = item
        for name, value in fields.items():
            setattr(self, name, value)


class TaskError(PoolError):
    """The task threw: ``task``, ``item``, ``type`` (the C++ exception's type) and ``message``
    (its what())."""


class WorkerCrashed(PoolError):
    """The worker running the item died on every attempt allowed (``max_retries``): ``task``,
    ``item``, ``pid``, ``signal`` (0 if it exited), ``exit_code`` (-1 if signalled),
    ``attempts``."""


class TaskTimeout(PoolError):
    """The item ran past ``task_timeout``; its worker was killed and replaced: ``task``, ``item``,
    ``seconds``."""


class TaskCancelled(PoolError, concurrent.futures.CancelledError):
    """The item was cancelled before it produced a result."""


class PoolClosed(PoolError, RuntimeError):
    """The pool takes no more work (after close() or terminate())."""


class WorkerStartFailed(PoolError, RuntimeError):
    """A worker died before it was ready, too often in a row (``max_start_failures``)."""


class IncompatibleWorker(PoolError, RuntimeError):
    """The worker program was built against another shmpool, or did not describe its tasks."""


class ExitReason(enum.Enum):
    """Why a worker left the pool (WorkerEvent.reason)."""
    CRASHED = "crashed"
    START_FAILED = "start_failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    RECYCLED_TASKS = "recycled_tasks"
    RECYCLED_MEMORY = "recycled_memory"


@dataclasses.dataclass(frozen=True)
class WorkerEvent:
    """A worker that died or was retired, as given to ``on_worker_exit``."""
    worker: int
    pid: int
    signal: int
    exit_code: int
    peak_rss_kb: int
    reason: ExitReason
    task: str
    item: object  # int, or None if it ran no item


@dataclasses.dataclass(frozen=True)
class Progress:
    """The progress of a job of more than one item, as given to ``on_progress``."""
    task: str
    done: int
    total: int
    elapsed_seconds: float
    rate: float
    eta_seconds: float


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """What a pool did so far (Pool.stats())."""
    tasks_done: int
    tasks_failed: int
    retries: int
    crashes: int
    respawns: int
    start_failures: int
    timeouts: int
    cancelled: int
    recycled_tasks: int
    recycled_memory: int
    reclaimed: int
    stolen_ranges: int
    busy_seconds: float


@dataclasses.dataclass(frozen=True)
class TaskSignature:
    """A task's argument and result types, as its worker program describes them (wire types:
    ``i32``, ``f64``, ``str``, ``vec<f64>``, ``opt<i64>``, ``tuple<i32,str>``, ``raw<N>``...)."""
    args: tuple
    result: str
    packed: bool  # one raw argument and result: items travel with no per-item framing


def _deliver_worker_exit(callback, fields):
    callback(WorkerEvent(**{**fields, "reason": ExitReason(fields["reason"])}))


def _deliver_progress(callback, fields):
    callback(Progress(**fields))


def describe_tasks(executable, environment=None):
    """What the worker program's tasks take and return: {name: TaskSignature}."""
    env = dict(os.environ)
    env.update(environment or {})
    env["SHMPOOL_ROLE"] = "describe"
    try:
        done = subprocess.run([executable], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise IncompatibleWorker(f"{executable!r} did not describe its tasks within 120 s: is it "
                                 f"a shmpool worker program, calling shmpool::init(argc, argv) "
                                 f"first in main()?") from None
    try:
        description = json.loads(done.stdout)
        version = description.get("shmpool_tasks") if isinstance(description, dict) else None
    except ValueError:
        version = None
    if done.returncode != 0 or version is None:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise IncompatibleWorker(
            f"{executable!r} did not describe its tasks (exit status {done.returncode}"
            + (f": {detail[-1]}" if detail else "")
            + "): is it a shmpool worker program, calling shmpool::init(argc, argv) first in "
              "main()?")
    if version != 1:
        raise IncompatibleWorker(f"{executable!r} describes its tasks in version {version} of "
                                 f"the format; this shmpool reads version 1")
    return {name: _core.Signature(name, t["args"], t["result"],
                                  tuple(t["packed"]) if t["packed"] else None)
            for name, t in description["tasks"].items()}


class Future(concurrent.futures.Future):
    """The result of one ``submit``: a concurrent.futures.Future (asyncio.wrap_future,
    concurrent.futures.wait and as_completed work with it)."""

    def __init__(self, job):
        super().__init__()
        self._job = job

    def cancel(self, kill=False):
        """Cancels the call if it has not started; with ``kill``, also if it runs (its worker
        is killed and replaced). Whether it is cancelled."""
        if self.done():
            return self.cancelled()
        if not self._job.cancel(kill):
            return False
        return super().cancel()


class _FutureCompleter:
    """Completes a pool's futures on a thread of its own (never a thread of the C++ pool, so
    that done-callbacks run under no lock of the pool), started with the first submit."""

    def __init__(self):
        self.signal = _core.DoneSignal()
        self._lock = threading.Lock()
        self._pending = {}  # tag: (job, signature, future)
        self._early = set()  # tags done before they were registered
        self._tags = itertools.count(1)
        self._thread = None
        self._stopping = False

    def next_tag(self):
        return next(self._tags)

    def add(self, tag, job, signature, future):
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shmpool-futures",
                                                daemon=True)
                self._thread.start()
            if tag in self._early:
                self._early.discard(tag)
                finished = True
            else:
                self._pending[tag] = (job, signature, future)
                finished = False
        if finished:
            self._complete(job, signature, future)

    def stop(self, wait):
        with self._lock:
            self._stopping = True
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(10)  # every job is settled by now (terminate fails what is left)

    def _run(self):
        while True:
            tags = self.signal.take(0.1)
            for tag in tags:
                with self._lock:
                    entry = self._pending.pop(tag, None)
                    if entry is None:
                        self._early.add(tag)
                if entry is not None:
                    self._complete(*entry)
            with self._lock:
                if self._stopping and not self._pending:
                    self._thread = None
                    return

    @staticmethod
    def _complete(job, signature, future):
        if future.cancelled():
            return
        try:
            value = signature.result(job, 0)
        except TaskCancelled:
            if super(Future, future).cancel():
                return
            value, error = None, TaskCancelled(f"task '{job.task}' was cancelled", item=0)
        except BaseException as e:  # pylint: disable=broad-except
            value, error = None, e
        else:
            error = None
        try:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile


_live_pools = weakref.WeakSet()
# Every pool's future completer, the pool's gone or not (its thread keeps it): their threads are
# joined before the interpreter finalizes, which a thread still in the extension would not
# survive.
_completers = weakref.WeakSet()


class Pool:
    """Worker processes running the tasks of a C++ worker program (which calls
    ``shmpool::init(argc, argv)`` first in ``main()`` and registers tasks with ``SHMPOOL_TASK``).

    ``executable`` is that program; ``workers`` how many (0: one per core). The other keyword
    arguments are PoolOptions (docs/pool.md), durations in seconds: max_retries, task_timeout,
    max_start_failures, kill_grace, slot_bytes, max_result_bytes, start_method ("exec" or
    "fork_server"), shared_blocks (names, SharedArrays or SharedMemory blocks every worker
    attaches once), prefault_shared_blocks, environment (a dict for the workers), initializer (a
    task's name), progress_bar, threads_per_worker, idle_spin, measure_busy,
    max_tasks_per_worker, max_memory_per_worker, on_worker_exit (called with a WorkerEvent),
    on_progress (called with a Progress). Callbacks run on a thread of the pool's.

    As a context manager: a normal exit closes the pool and waits for its work; an exception
    (Ctrl-C's KeyboardInterrupt included) terminates it. Every wait for work can be interrupted
    by Ctrl-C.
    """

    def __init__(self, executable, workers=0, *, max_retries=1, task_timeout=0,
                 max_start_failures=5, kill_grace=0.2, slot_bytes=256 << 10,
                 max_result_bytes=1 << 30, start_method="exec", shared_blocks=(),
                 prefault_shared_blocks=False, environment=None, initializer=None,
                 progress_bar=False, threads_per_worker=0, idle_spin=20e-6, measure_busy=False,
                 max_tasks_per_worker=0, max_memory_per_worker=0, on_worker_exit=None,
                 on_progress=None):
        self._owner = os.getpid()
        self._handle = None
        self._state = "starting"
        executable = os.fspath(executable)
        if os.sep not in executable and not os.path.isfile(executable):
            executable = shutil.which(executable) or executable  # as subprocess finds it
        if not os.path.isfile(executable):
            raise FileNotFoundError(2, "no such worker program", executable)
        if not os.access(executable, os.X_OK):
            raise PermissionError(13, "the worker program is not executable", executable)
        self.executable = os.path.abspath(executable)
        if workers < 0:
            raise ValueError(f"workers must not be negative (got {workers})")
        for name, callback in (("on_worker_exit", on_worker_exit), ("on_progress", on_progress)):
            if callback is not None and not callable(callback):
                raise TypeError(f"{name} must be callable")
        environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self._signatures = describe_tasks(self.executable, environment)
        if initializer is not None and initializer not in self._signatures:
            raise ValueError(self._unknown_task(initializer))
        options = {
            "executable": self.executable, "workers": workers, "max_retries": max_retries,
            "task_timeout": task_timeout, "max_start_failures": max_start_failures,
            "kill_grace": kill_grace, "slot_bytes": slot_bytes,
            "max_result_bytes": max_result_bytes, "start_method": start_method,
            "shared_blocks": [_block_name(b) for b in shared_blocks],
            "prefault_shared_blocks": prefault_shared_blocks,
            "environment": [f"{k}={v}" for k, v in environment.items()],
            "initializer": initializer, "progress_bar": progress_bar,
            "threads_per_worker": threads_per_worker, "idle_spin": idle_spin,
            "measure_busy": measure_busy, "max_tasks_per_worker": max_tasks_per_worker,
            "max_memory_per_worker": max_memory_per_worker,
        }
        self._futures = _FutureCompleter()
        _completers.add(self._futures)
        self._handle = _core.PoolHandle(options, on_worker_exit, on_progress)
        self._state = "running"
        _live_pools.add(self)

    # -- the work -------------------------------------------------------------------------------

    @property
    def tasks(self):
        """{name: TaskSignature} of the worker program's tasks."""
        return {name: TaskSignature(tuple(s.arg_types), s.result_type, s.packed)
                for name, s in self._signatures.items()}

    def map(self, task, iterable, chunksize=None):
        """task(item) for every item, results in a list in input order; raises the error of the
        lowest failed item. A numpy array of the argument's type goes in with one copy."""
        return self._run_job(task, iterable, False, chunksize)

    def map_array(self, task, array, chunksize=None):
        """task(x) for every element of a 1-D numpy array (or sequence of numbers), results in a
        numpy array: for tasks of one number returning one number, with no Python object per
        item either way (map's fast path; map itself returns a list). The input is converted to
        the argument's type only where numpy can do it safely (no truncation), else TypeError."""
        import numpy as np  # pylint: disable=import-outside-toplevel

        signature = self._signature(task)
        in_type = _NUMPY_TYPES.get(signature.arg_types[0]) if signature.arity == 1 else None
        out_type = _NUMPY_TYPES.get(signature.result_type)
        if not signature.packed or in_type is None or out_type is None:
            raise TypeError(f"map_array needs a task of one number returning one number; task "
                            f"'{task}' takes ({', '.join(signature.arg_types)}) and returns "
                            f"{signature.result_type}: use map")
        values = np.asarray(array)
        if values.ndim != 1:
            raise ValueError(f"map_array takes a 1-D array, not one of shape {values.shape}")
        if values.dtype != np.dtype(in_type):
            if not np.can_cast(values.dtype, in_type, "same_kind") or (
                    values.size and not np.array_equal(values.astype(in_type), values)):
                raise TypeError(f"task '{task}' takes {signature.arg_types[0]}: an array of "
                                f"{values.dtype} does not convert to it exactly")
            values = values.astype(in_type)
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1 (got {chunksize})")
        items = signature.encode_calls(np.ascontiguousarray(values), False)
        job = self._handle.submit(signature, items, chunksize or 0)
        self._wait(job)
        out = np.empty(len(values), out_type)
        signature.results_into(job, out)
        return out

    def starmap(self, task, iterable, chunksize=None):
        """task(*args) for every tuple of arguments, results in a list in input order."""
        return self._run_job(task, iterable, True, chunksize)

    def imap(self, task, iterable, chunksize=1, window=None):
        """task(item) for every item, lazily, results in input order: at most `window` chunks
        of `chunksize` items (default 2 per worker) run ahead of the consumer, so an endless
        iterable is fine. A failed item raises its error at its position."""
        return self._stream(task, iterable, chunksize, window, ordered=True)

    def imap_unordered(self, task, iterable, chunksize=1, window=None):
        """As imap, results in the order they complete."""
        return self._stream(task, iterable, chunksize, window, ordered=False)

    def submit(self, task, *args):
        """Runs task(*args) in a worker; returns a Future."""
        signature = self._signature(task)
        if len(args) != signature.arity:
            raise TypeError(f"task '{task}' takes {signature.arity} arguments, got {len(args)}")
        items = signature.encode_calls([args], True)
        tag = self._futures.next_tag()
        job = self._handle.submit(signature, items, 1, True, self._futures.signal, tag)
        future = Future(job)
        self._futures.add(tag, job, signature, future)
        return future

    def apply(self, task, *args):
        """task(*args) in a worker, waiting for its result."""
        future = self.submit(task, *args)
        try:
            future._job.wait()  # pylint: disable=protected-access
        except BaseException:
            future.cancel(kill=True)
            raise
        return future.result()

    def for_each_index(self, task, n, *leading, grain=0):
        """task(*leading, begin, end) over [0, n) in ranges of `grain` indices (0: n / (4 ×
        workers)); the task's last two parameters are std::size_t. Raises the first error."""
        signature = self._signature(task)
        if n < 0:
            raise ValueError(f"n must not be negative (got {n})")
        if grain == 0:
            grain = max(1, n // (4 * self.size))
        items = signature.encode_ranges(tuple(leading), n, grain)
        job = self._handle.submit(signature, items, 1)
        self._wait(job)
        signature.results(job)

    # -- the pool -------------------------------------------------------------------------------

    def close(self):
        """No more work is accepted; queued work still runs."""
        self._check_owner()
        if self._state == "running":
            self._handle.close()
            self._state = "closed"

    def terminate(self):
        """Stops now: the workers are killed, queued work fails with PoolClosed. Not from a
        callback of the pool (RuntimeError)."""
        self._check_owner()
        self._check_not_in_callback("terminate")
        if self._handle is not None and self._state != "terminated":
            self._handle.terminate()
            self._state = "terminated"
            self._futures.stop(wait=True)

    def join(self, timeout=None):
        """Waits for the queued work and the workers' exit, after close() or terminate().
        Whether they are over (False only when `timeout` seconds passed first). Not from a
        callback of the pool (RuntimeError)."""
        self._check_owner()
        self._check_not_in_callback("join")
        if self._state == "running":
            raise ValueError("join() needs close() or terminate() first: the pool is running")
        done = self._handle.join(timeout)
        if done:
            self._futures.stop(wait=True)
        return done

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            try:
                self.join()
            except BaseException:  # Ctrl-C while the work finishes: stop now
                self.terminate()
                raise
        else:
            self.terminate()

    def __del__(self):
        if getattr(self, "_handle", None) is None or os.getpid() != self._owner:
            return
        if self._state == "running":
            warnings.warn(f"unclosed shmpool.Pool of {self.executable!r}: terminated",
                          ResourceWarning, source=self)
        self._futures.stop(wait=False)

    @property
    def size(self):
        """Workers in all."""
        return self._handle.size

    def worker_pids(self):
        """The pids of the workers (empty once the pool is stopped)."""
        return self._handle.worker_pids()

    def stats(self):
        """What the pool did so far (PoolStats)."""
        return PoolStats(**self._handle.stats())

    @property
    def control_block(self):
        """The name of the pool's control block (in /dev/shm while the pool runs)."""
        return self._handle.control_block

    def __repr__(self):
        return f"<shmpool.Pool {self._state} executable={self.executable!r}>"

    # -- machinery ------------------------------------------------------------------------------

    def _check_owner(self):
        if os.getpid() != self._owner:
            raise RuntimeError(f"this shmpool.Pool belongs to process {self._owner}, of which "
                               f"this process is a fork: a forked child cannot use its "
                               f"parent's pool (create a pool of its own)")

    @staticmethod
    def _check_not_in_callback(what):
        # The pool stops its callback thread when it stops: not from that thread.
        if _core.in_pool_callback():
            raise RuntimeError(f"a callback of the pool (on_worker_exit, on_progress) cannot "
                               f"{what} it")

    def _unknown_task(self, task):
        known = ", ".join(sorted(self._signatures)) or "none"
        return f"no task named {task!r} in {self.executable!r} (its tasks: {known})"

    def _signature(self, task):
        self._check_owner()
        try:
            return self._signatures[task]
        except (KeyError, TypeError):
            raise ValueError(self._unknown_task(task)) from None

    @staticmethod
    def _wait(job):
        try:
            job.wait()
        except BaseException:
            job.cancel(kill=True)  # Ctrl-C: its running items' workers are killed (and replaced)
            raise

    def _run_job(self, task, iterable, star, chunksize):
        signature = self._signature(task)
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1 (got {chunksize})")
        items = signature.encode_calls(iterable, star)
        job = self._handle.submit(signature, items, chunksize or 0)
        self._wait(job)
        return signature.results(job)

    def _stream(self, task, iterable, chunksize, window, ordered):
        signature = self._signature(task)
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1 (got {chunksize})")
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1 (got {window})")
        return self._results(signature, iter(iterable), chunksize, window or 2 * self.size,
                             ordered)

    def _results(self, signature, items, chunksize, window, ordered):
        signal = None if ordered else _core.DoneSignal()
        outstanding = collections.OrderedDict()  # tag: (job, index of its first item)
        tags = itertools.count()
        first = 0
        exhausted = False
        kill = False
        try:
            while True:
                while not exhausted and len(outstanding) < window:
                    batch = list(itertools.islice(items, chunksize))
                    if not batch:
                        exhausted = True
                        break
                    tag = next(tags)
                    job = self._handle.submit(signature, signature.encode_calls(batch, False, first),
                                              chunksize, False, signal, tag)
                    outstanding[tag] = (job, first)
                    first += len(batch)
                if not outstanding:
                    return
                if ordered:
                    tag, (job, start) = next(iter(outstanding.items()))
                    kill = True
                    job.wait()
                    kill = False
                    del outstanding[tag]
                    for i in range(len(job)):
                        yield signature.result(job, i, start)
                else:
                    kill = True
                    done = [t for t in signal.take() if t in outstanding]
                    kill = False
                    for tag in done:
                        job, start = outstanding.pop(tag)
                        for i in range(len(job)):
                            yield signature.result(job, i, start)
        finally:
            # The consumer stopped early, an item failed, or Ctrl-C: nothing more runs.
            for job, _ in outstanding.values():
                job.cancel(kill)


# Wire types of numbers as numpy dtypes (little-endian, as the workers run on this machine).
_NUMPY_TYPES = {"i8": "<i1", "i16": "<i2", "i32": "<i4", "i64": "<i8", "u8": "<u1", "u16": "<u2",
                "u32": "<u4", "u64": "<u8", "f32": "<f4", "f64": "<f8", "bool": "?"}


def _block_name(block):
    # What the extension passes for a std::string argument (wire_type.cpp): a name, shmpool's
    # SharedArray or SharedMemory, or CPython's SharedMemory; not any object with a .name.
    if isinstance(block, str):
        return block
    name = getattr(block, "_shmpool_block_name", None)
    if name is None and type(block).__module__ == "multiprocessing.shared_memory":
        name = getattr(block, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"shared_blocks takes block names, SharedArrays or SharedMemory blocks, "
                        f"not {type(block).__name__}")
    return name


@atexit.register
def _terminate_pools():
    # Before the interpreter goes: no pool thread may call into it afterwards.
    for pool in list(_live_pools):
        if os.getpid() == pool._owner:  # pylint: disable=protected-access
            try:
                pool.terminate()
            except Exception as e:  # pylint: disable=broad-except
                warnings.warn(f"shmpool: could not terminate {pool!r} at exit: {e}",
                              RuntimeWarning)
    for completer in list(_completers):
        completer.stop(wait=True)
