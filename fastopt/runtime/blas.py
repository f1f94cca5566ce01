"""Optionally run NumPy's OpenBLAS jobs on fastopt's thread pool (off by default).

By default fastopt leaves every BLAS library alone: after ``import fastopt``
NumPy, SciPy and PyTorch compute with their own threads exactly as before.

Opt in with ``FASTOPT_BLAS_THREADS=shared`` (before importing fastopt) or
:func:`share_blas_threads`.  OpenBLAS (>= 0.3.27) then hands its parallel jobs
to fastopt's pool (``openblas_set_threads_callback_function``), so the process
has one set of worker threads instead of two sets that spin on the same cores.
Callers are serialized: OpenBLAS's callback path keeps one work buffer per job
position, shared by all callers, which its own pool serializes (without the
lock two Python threads multiplying at once got wrong products).

Why it is not the default: the callback path bypasses OpenBLAS's own
bookkeeping for the positions it uses, and OpenBLAS's threaded LU
(``getrf``, behind ``np.linalg.solve``/``inv``/``det`` on large matrices) still
queues jobs on OpenBLAS's own workers, which use the same per-position buffers.
A large LU in one thread at the same moment as a product in another would
share them.  fastopt's own pool already removes the slowdown the sharing was
for (see the user guide, "Threads and BLAS"), so nobody has to take that risk.
"""

import contextlib
import ctypes
import os
import sys

from .. import _threadpool

# Setter names in the scipy-openblas builds of NumPy (ILP64) and SciPy (LP64), and plain OpenBLAS.
_SETTERS = (
    "scipy_openblas_set_threads_callback_function64_",
    "scipy_openblas_set_threads_callback_function",
    "openblas_set_threads_callback_function64_",
    "openblas_set_threads_callback_function",
)

_installed = {}  # library path -> setter address


def _loaded_openblas_paths():
    """Paths of the OpenBLAS libraries mapped into this process (Linux)."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if "openblas" in os.path.basename(path).lower() and path not in paths:
                        paths.append(path)
    except OSError:
        pass
    return paths


def share_blas_threads():
    """Run every loaded OpenBLAS's parallel jobs on fastopt's thread pool (opt-in).

    Returns the list of library paths handled (empty off Linux, or when no
    loaded OpenBLAS has the threads callback).  Call it again after loading
    another OpenBLAS copy (e.g. SciPy's); undo with :func:`restore_blas_threads`.
    """
    if not sys.platform.startswith("linux"):
        return []
    for path in _loaded_openblas_paths():
        if path in _installed:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                address = ctypes.cast(fn, ctypes.c_void_p).value
                _threadpool.set_blas_callback(address, True)
                _installed[path] = address
                break
    return list(_installed)


def restore_blas_threads():
    """Give every handled OpenBLAS its own thread pool back."""
    for path, address in list(_installed.items()):
        _threadpool.set_blas_callback(address, False)
        del _installed[path]


def shared_libraries():
    """The OpenBLAS libraries whose jobs currently run on fastopt's threads."""
    return list(_installed)


# (get, set) thread-count functions, same builds as above.
_NUM_THREADS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@contextlib.contextmanager
def limited_blas_threads(n):
    """Every loaded OpenBLAS runs on at most ``n`` threads inside the block (Linux).

    For programs that own their process, such as ``fastopt train``; a library
    should leave this to its user (``threadpoolctl.threadpool_limits`` does the
    same for every BLAS and OpenMP runtime).
    """
    saved = []
    for path in _loaded_openblas_paths() if sys.platform.startswith("linux") else []:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _NUM_THREADS:
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                old = get()
                set_.argtypes = [ctypes.c_int]
                if old > n:
                    set_(n)
                    saved.append((set_, old))
                break
    try:
        yield
    finally:
        for set_, old in saved:
            set_(old)


def _init_from_env():
    mode = os.environ.get("FASTOPT_BLAS_THREADS", "").strip().lower()
    if mode in ("", "native"):
        return
    if mode != "shared":
        raise ImportError(f"fastopt: FASTOPT_BLAS_THREADS must be 'native' (the default) or "
                          f"'shared', got {mode!r}")
    share_blas_threads()
