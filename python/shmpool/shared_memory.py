"""A drop-in for ``multiprocessing.shared_memory`` on shmpool's C++ library (docs/python.md).

What differs from CPython's module, each on purpose:
- an attacher never unlinks a block at its exit (gh-82300): only the creator owns a block, and
  shmpool's tracker removes the blocks of a creator that died, at once; Python 3.13's ``track``
  parameter is accepted on every version, default None (this behaviour), True on attach meaning
  3.13's "this process owns it too", False meaning untracked;
- ``close()`` never raises ``BufferError`` and never unmaps memory that a live view (a
  memoryview, a numpy array) points to: the mapping goes with the last view;
- a full ``/dev/shm`` is ``OSError(ENOSPC)`` with a hint when the block is created, never a
  SIGBUS later;
- ``ShareableList`` sizes str items in UTF-8 bytes (gh-88336), refuses str and bytes items that
  end in NUL instead of losing the NULs (gh-96779, gh-106939), and treats a corrupted block as an
  error, never reading out of bounds.
"""

import atexit
import multiprocessing
import os
import secrets
import types
import warnings
from functools import partial

from . import _core

__all__ = ["SharedMemory", "ShareableList"]

_O_CREX = os.O_CREAT | os.O_EXCL
# CPython's private names, which code (and CPython's tests) use.
_USE_POSIX = True
_SHM_SAFE_NAME_LENGTH = 14
_SHM_NAME_PREFIX = "/psm_"
_encoding = "utf8"


# Blocks live as long as CPython's do: a block made in a multiprocessing child belongs to the
# root of its multiprocessing tree (CPython's tracker, shared by the tree, keeps it until the root
# goes), so a child may make a block, hand its name back and exit. The root is this process,
# unless this is a multiprocessing child of a root that named itself here; a plain subprocess is
# a root of its own (as with CPython, whose subprocesses start trackers of their own).
_ROOT_VARIABLE = "SHMPOOL_PYTHON_ROOT"


def _root_pid():
    if multiprocessing.parent_process() is not None and _ROOT_VARIABLE in os.environ:
        return int(os.environ[_ROOT_VARIABLE])
    return os.getpid()


# A spawned child imports this module before multiprocessing tells it its parent (while it is
# "inheriting"): it is no root then.
if multiprocessing.parent_process() is None and \
        not getattr(multiprocessing.current_process(), "_inheriting", False):
    os.environ[_ROOT_VARIABLE] = str(os.getpid())
    try:
        _core.ensure_tracker()  # registered now, so that children can hand it their blocks
    except OSError:  # no tracker to start: creating a block says why, with the fix
        pass


# The blocks this process owns through this module, for the warning at exit. A forked child
# owns none of its parent's.
_owned = set()
os.register_at_fork(after_in_child=_owned.clear)


@atexit.register
def _warn_leaked():
    # CPython's resource tracker warns, in these words, about the blocks its processes leave
    # behind; code and CPython's tests look for them. shmpool's tracker removes the blocks when
    # this process is gone.
    leaked = sorted(n for n in _owned if os.path.exists("/dev/shm/" + n))
    if leaked:
        warnings.warn(f"resource_tracker: There appear to be {len(leaked)} leaked shared_memory "
                      f"objects to clean up at shutdown: {', '.join(leaked)} (shmpool's tracker "
                      f"removes them as this process exits)", UserWarning, stacklevel=1)


def _hand_to_root(name):
    root = _root_pid()
    if root == os.getpid():
        _owned.add(name)
        return
    try:
        _core.transfer_ownership(name, root)
    except (OSError, ValueError):  # the root is gone, or not a shmpool process: keep it
        _owned.add(name)


def _make_filename():
    """A random name: CPython's prefix and length."""
    nbytes = (_SHM_SAFE_NAME_LENGTH - len(_SHM_NAME_PREFIX)) // 2
    assert nbytes >= 2, "_SHM_NAME_PREFIX too long"
    name = _SHM_NAME_PREFIX + secrets.token_hex(nbytes)
    assert len(name) <= _SHM_SAFE_NAME_LENGTH
    return name


class SharedMemory:
    """A named shared-memory block, as ``multiprocessing.shared_memory.SharedMemory``.

    The creator owns the block: if it dies without ``unlink()``, shmpool's tracker removes it. An
    attacher never removes it. ``buf`` is a writable memoryview; views over it keep the mapping
    alive after ``close()``.
    """

    _name = None
    _track = None
    _mapping = None
    _buf = None
    _flags = os.O_RDWR
    _mode = 0o600
    _prepend_leading_slash = True

    def __init__(self, name=None, create=False, size=0, *, track=None):
        # track (Python 3.13's parameter): None, the default, is CPython's default without its
        # bug: the creator owns the block, an attacher does not. True on attach is 3.13's
        # meaning: this process owns the block too, and it is removed when this process exits.
        # False: nothing is tracked, and the block lives until someone unlinks it.
        self._track = track
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create:
            self._flags = _O_CREX | os.O_RDWR
            if size == 0:
                raise ValueError("'size' must be a positive number different from zero")
        if name is None and not self._flags & os.O_EXCL:
            raise ValueError("'name' can only be None if create=True")
        creating = bool(self._flags & os.O_CREAT)
        exclusive = bool(self._flags & os.O_EXCL)
        if name is None:
            while True:
                name = _make_filename()
                try:
                    self._mapping = self._open(name, True, True, size)
                except FileExistsError:
                    continue
                break
            if track is not False:
                _hand_to_root(name.lstrip("/"))
        else:
            name = "/" + name if self._prepend_leading_slash else name
            self._mapping = self._open(name, creating, exclusive, size)
            if creating and exclusive:
                if track is not False:
                    _hand_to_root(name.lstrip("/"))
            elif track:
                _core.adopt_ownership(name.lstrip("/"))
                _owned.add(name.lstrip("/"))
        self._name = name
        self._size = self._mapping.size
        self._buf = memoryview(self._mapping)

    def _open(self, name, creating, exclusive, size):
        if "\0" in name:
            raise ValueError("embedded null character in the name")
        return _core.open(name.lstrip("/"), creating, exclusive, size if creating else 0,
                          self._track is not False, self._mode)

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

    def __reduce__(self):
        return (self.__class__, (self.name, False, self.size))

    def __repr__(self):
        return f"{self.__class__.__name__}({self.name!r}, size={self.size})"

    @property
    def buf(self):
        "A memoryview of contents of the shared memory block."
        return self._buf

    @property
    def name(self):
        "Unique name that identifies the shared memory block."
        reported_name = self._name
        if self._prepend_leading_slash and self._name.startswith("/"):
            reported_name = self._name[1:]
        return reported_name

    @property
    def size(self):
        "Size in bytes."
        return self._size

    @property
    def _shmpool_block_name(self):
        # What shmpool.Pool passes to a C++ task taking a std::string.
        return self.name

    def close(self):
        """Closes access to the block from this instance. Views of ``buf`` stay valid: the memory
        is unmapped when the last of them goes (CPython raises BufferError here instead, or,
        through ``np.ndarray(buffer=...)``, unmaps memory still in use)."""
        self._buf = None
        self._mapping = None

    def unlink(self):
        """Requests that the block be removed: it goes when every process has closed it."""
        if self._name is None:
            return
        if "\0" in self._name:
            raise ValueError("embedded null character in the name")
        _core.unlink(self._name.lstrip("/"))
        _owned.discard(self._name.lstrip("/"))


class ShareableList:
    """A fixed-length list of int, float, bool, str, bytes and None in a shared block, in
    CPython's layout (byte for byte: CPython's ``ShareableList`` reads and writes the same block).
    """

    def __init__(self, sequence=None, *, name=None):
        if sequence is None and name is not None:
            self._list = _core.List.attach(name)
        else:
            items = [] if sequence is None else list(sequence)
            if name is None:
                while True:
                    candidate = _make_filename().lstrip("/")
                    try:
                        self._list = _core.List.create(candidate, items, True)
                    except FileExistsError:
                        continue
                    break
            else:
                self._list = _core.List.create(name, items, True)
            _hand_to_root(self._list.name)
        self.shm = SharedMemory(self._list.name)

    def _get_packing_format(self, position):
        "Gets the packing format for a single value stored in the list."
        try:
            return self._list.item_format(position)
        except IndexError:
            raise IndexError("Requested position out of range.") from None

    def __getitem__(self, position):
        try:
            return self._list.get(position)
        except IndexError:
            raise IndexError("index out of range") from None

    def __setitem__(self, position, value):
        try:
            self._list.set(position, value)
        except IndexError:
            raise IndexError("assignment index out of range") from None

    def __reduce__(self):
        return partial(self.__class__, name=self.shm.name), ()

    def __len__(self):
        return len(self._list)

    def __repr__(self):
        return f"{self.__class__.__name__}({list(self)}, name={self.shm.name!r})"

    @property
    def format(self):
        "The struct packing format used by all currently stored items."
        return self._list.format

    def count(self, value):
        "L.count(value) -> integer -- return number of occurrences of value."
        return sum(value == entry for entry in self)

    def index(self, value):
        """L.index(value) -> integer -- return first index of value.
        Raises ValueError if the value is not present."""
        for position, entry in enumerate(self):
            if value == entry:
                return position
        raise ValueError(f"{value!r} not in this container")

    __class_getitem__ = classmethod(types.GenericAlias)
