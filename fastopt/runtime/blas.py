"""Optionally run NumPy's OpenBLAS jobs on fastopt's thread pool (off by default).

By default fastopt leaves every BLAS library alone: after ``import fastopt``
NumPy, SciPy and PyTorch compute with their own threads exactly as before.

Opt in with ``FASTOPT_BLAS_THREADS=shared`` (before importing fastopt) or
:func:`share_blas_threads`.  OpenBLAS (>= 0.3.27, pthreads build) then hands its
parallel jobs to fastopt's pool (``openblas_set_threads_callback_function``), so
the process has one set of worker threads instead of two sets that spin on the
same cores.  :func:`restore_blas_threads` sends them back to OpenBLAS's own
workers.  Either may be called while other threads multiply: no product changes
and nothing waits for ever.

How (``src/common/fo_threadpool.h`` has the details): OpenBLAS reads its callback
pointer once per call, without a lock, and a callback's jobs use the same
per-thread mailboxes and work buffers as OpenBLAS's own workers.  Setting and
clearing the pointer while other threads multiply therefore left both kinds of
jobs in flight on the same mailbox: a lost job, and NumPy hung for good.  So the
pointer is set once, the first time a library is shared, and never cleared; the
callback either runs the jobs on fastopt's pool, on per-thread slots that
OpenBLAS's workers never use, or hands them to OpenBLAS's own queue
(``exec_blas_async``), exactly as OpenBLAS does without a callback.  Sharing is a
flag the callback reads.  A library without those entry points is left alone.

Why sharing is not the default: fastopt's own pool already removes the slowdown
it was for (see the user guide, "Threads and BLAS"), and it relies on OpenBLAS internals
(``exec_blas_async``, ``blas_num_threads``, ``MAX_THREADS``) that a future
OpenBLAS may change.
"""

import contextlib
import ctypes
import os
import re
import sys
import threading

from .. import _threadpool
from .threads import _count

# Setter names in the scipy-openblas builds of NumPy (ILP64) and SciPy (LP64), and plain OpenBLAS.
_SETTERS = (
    "scipy_openblas_set_threads_callback_function64_",
    "scipy_openblas_set_threads_callback_function",
    "openblas_set_threads_callback_function64_",
    "openblas_set_threads_callback_function",
)
# openblas_get_config and openblas_get_parallel, same builds, same order.
_CONFIGS = tuple(name.replace("set_threads_callback_function", "get_config") for name in _SETTERS)
_PARALLEL = tuple(name.replace("set_threads_callback_function", "get_parallel") for name in _SETTERS)

_slots = {}     # library path -> its slot in the pool's callback table (callback installed)
_shared = []    # library paths whose jobs run on fastopt's pool now
_lock = threading.Lock()  # one share/restore at a time


def _openblas_mappings():
    """{path: [(start, end), ...]} of the OpenBLAS libraries mapped into this process (Linux),
    with the anonymous mapping right after each (its .bss: ``blas_num_threads`` lives there)."""
    found, last = {}, None
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 5:
                    continue
                start, end = (int(x, 16) for x in parts[0].split("-"))
                path = parts[5].strip() if len(parts) == 6 else ""
                if "openblas" in os.path.basename(path).lower():
                    found.setdefault(path, []).append((start, end))
                    last = (path, end)
                    continue
                if not path and last is not None and start == last[1]:
                    found[last[0]].append((start, end))
                last = None
    except OSError:
        pass
    return found


def _loaded_openblas_paths():
    """Paths of the OpenBLAS libraries mapped into this process (Linux)."""
    return list(_openblas_mappings())


def _first(lib, names):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def _entry_points(path, ranges):
    """The addresses ``_threadpool.blas_register`` needs, all inside the library at ``path``,
    or None when it lacks one (not OpenBLAS >= 0.3.27 with pthreads, or internals moved)."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    setter, config, parallel = (_first(lib, names) for names in (_SETTERS, _CONFIGS, _PARALLEL))
    if setter is None or config is None or parallel is None:
        return None
    parallel.restype = ctypes.c_int
    if parallel() != 1:                     # 0: single-threaded build, 2: OpenMP build
        return None
    config.restype = ctypes.c_char_p
    match = re.search(rb"MAX_THREADS=(\d+)", config() or b"")
    try:
        exec_async, exec_wait = lib.exec_blas_async, lib.exec_blas_async_wait
        num_threads = ctypes.addressof(ctypes.c_int.in_dll(lib, "blas_num_threads"))
    except (AttributeError, ValueError):
        return None
    addresses = [ctypes.cast(f, ctypes.c_void_p).value for f in (setter, exec_async, exec_wait)]
    addresses.append(num_threads)
    if match is None or int(match.group(1)) < 2:
        return None
    if not all(any(lo <= a < hi for lo, hi in ranges) for a in addresses):
        return None                         # found in another library: not this one's
    return (*addresses, int(match.group(1)))


def share_blas_threads():
    """Run every loaded OpenBLAS's parallel jobs on fastopt's thread pool (opt-in).

    Returns the list of library paths handled (empty off Linux, or when no
    loaded OpenBLAS has the threads callback).  Call it again after loading
    another OpenBLAS copy (e.g. SciPy's); undo with :func:`restore_blas_threads`.
    Safe while other threads multiply.
    """
    if not sys.platform.startswith("linux"):
        return []
    with _lock:
        return _share()


def _share():
    for path, ranges in _openblas_mappings().items():
        if path not in _slots:
            entry = _entry_points(path, ranges)
            if entry is None:
                continue
            slot = _threadpool.blas_register(*entry)
            if slot < 0:
                continue
            _slots[path] = slot
        if path not in _shared:
            _threadpool.blas_set_shared(_slots[path], True)
            _shared.append(path)
    return list(_shared)


def restore_blas_threads():
    """Give every handled OpenBLAS its own thread pool back (safe while other threads multiply)."""
    with _lock:
        for path in list(_shared):
            _threadpool.blas_set_shared(_slots[path], False)
            _shared.remove(path)


def shared_libraries():
    """The OpenBLAS libraries whose jobs currently run on fastopt's threads."""
    return list(_shared)


def _calls():
    """{path: (calls run on fastopt's pool, calls run on OpenBLAS's workers)} since it was first
    shared, for every library fastopt took the callback of (for tests)."""
    return {path: _threadpool.blas_calls(slot) for path, slot in _slots.items()}


# (get, set) thread-count functions, same builds as above.
_NUM_THREADS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


_limits = []          # n of every open limited_blas_threads block, in any thread
_limit_saved = {}     # library path -> (get, set, its thread count before the first block)


def _thread_count_functions(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for get_name, set_name in _NUM_THREADS:
        get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            set_.argtypes = [ctypes.c_int]
            return get, set_
    return None


def _apply_limits():
    """Set every loaded OpenBLAS to the smallest open limit (under ``_lock``); with no block
    open, back to the count it had before the first one."""
    if _limits:
        for path in _loaded_openblas_paths() if sys.platform.startswith("linux") else []:
            if path not in _limit_saved:
                functions = _thread_count_functions(path)
                if functions is not None:
                    _limit_saved[path] = (*functions, functions[0]())
    for path, (get, set_, old) in list(_limit_saved.items()):
        want = min(old, *_limits) if _limits else old
        if get() != want:
            set_(want)
        if not _limits:
            del _limit_saved[path]


@contextlib.contextmanager
def limited_blas_threads(n):
    """Every loaded OpenBLAS runs on at most ``n`` threads inside the block (Linux).

    For programs that own their process, such as ``fastopt train``; a library
    should leave this to its user (``threadpoolctl.threadpool_limits`` does the
    same for every BLAS and OpenMP runtime).  The thread count is one setting for
    the whole process, so blocks open in several threads (or nested) share it: the
    smallest open limit holds until that block ends, and the count from before the
    first block comes back when the last one ends.
    """
    if n is None:
        raise TypeError("n must be an int >= 1, got None")
    n = _count(n)
    with _lock:
        _limits.append(n)
        _apply_limits()
    try:
        yield
    finally:
        with _lock:
            _limits.remove(n)
            _apply_limits()


def _init_from_env():
    mode = os.environ.get("FASTOPT_BLAS_THREADS", "").strip().lower()
    if mode in ("", "native"):
        return
    if mode != "shared":
        raise ImportError(f"fastopt: FASTOPT_BLAS_THREADS must be 'native' (the default) or "
                          f"'shared', got {mode!r}")
    share_blas_threads()
