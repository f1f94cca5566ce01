"""Share one thread pool between NumPy's OpenBLAS and fastopt's kernels.

Why: NumPy's wheels bundle OpenBLAS built with its own pthreads pool.  After
every multithreaded call its workers busy-wait (about 2**28 cycles, ~0.1 s)
for more work; after every parallel region fastopt's OpenMP workers spin too.
A training step alternates matrix products (OpenBLAS) with optimizer and
batch-norm kernels (OpenMP): each runtime's spinning threads then sit on the
cores the other needs, and the loop ran up to 55x slower than its parts.

What fastopt does: OpenBLAS (>= 0.3.27) lets a program hand its parallel jobs
to a function of its own instead of OpenBLAS's pool
(``openblas_set_threads_callback_function``).  At import fastopt installs one
that runs the jobs on the same OpenMP team as its kernels, so the process has
a single pool: no oversubscription, BLAS stays multithreaded, and neither
side has to stop spinning (which would make each call pay a thread wake-up).
OpenBLAS still decides how many threads a product uses, so
``threadpoolctl.threadpool_limits(..., user_api="blas")`` and
``OPENBLAS_NUM_THREADS`` keep working.

Set ``FASTOPT_BLAS_THREADS=native`` before importing fastopt to leave OpenBLAS
alone.  OpenBLAS copies loaded after fastopt (e.g. SciPy's) are covered by
calling :func:`fastopt.share_blas_threads` again.
"""

import ctypes
import os
import sys

from . import _cpu

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
    """Run every loaded OpenBLAS's parallel jobs on fastopt's OpenMP threads.

    Returns the list of library paths handled.  Does nothing when
    ``FASTOPT_BLAS_THREADS=native`` or without OpenMP.
    """
    if os.environ.get("FASTOPT_BLAS_THREADS", "").strip().lower() == "native":
        return []
    if not sys.platform.startswith("linux") or not _cpu.build_info()[1]:
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
                _cpu.set_blas_callback(address, True)
                _installed[path] = address
                # OpenBLAS's own workers, started when NumPy loaded it, get no more work:
                # they spin out their timeout (~0.1-0.3 s after the import) and then sleep
                # for good.  Stopping them is worse: OpenBLAS starts new ones at its next
                # call, and those spin while the program runs (measured).
                break
    return list(_installed)


def restore_blas_threads():
    """Give every handled OpenBLAS its own thread pool back."""
    for path, address in list(_installed.items()):
        _cpu.set_blas_callback(address, False)
        del _installed[path]


def shared_libraries():
    """The OpenBLAS libraries whose jobs currently run on fastopt's threads."""
    return list(_installed)
