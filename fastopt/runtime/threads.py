"""How many threads the kernels use.

The kernels run on fastopt's own thread pool (``src/fo_threadpool.h``).  The
default thread count is the smallest of

* the OpenMP setting (``omp_get_max_threads()``): ``OMP_NUM_THREADS`` and
  ``threadpoolctl.threadpool_limits(..., user_api="openmp")`` are honoured, as
  in scikit-learn;
* the CPUs this process may run on (its affinity mask, ``taskset``);
* the CPU quota of its cgroup (a container limited to 2 CPUs on a 64-core
  host gets 2 threads), as loky and scikit-learn compute it.

:func:`set_num_threads` overrides the default for the whole process;
``with num_threads(n):`` overrides it for the calling thread (or asyncio task)
only, so two threads using it at once do not disturb each other.

Two threading backends run the kernels' parallel calls (the same tasks, the same result
bits on either):

* ``"pool"`` (the default): fastopt's thread pool.  A thread that is descheduled (another
  process on the cores) delays a call by the one block it holds, a forked child starts
  fresh workers, and the pool's workers sleep soon after a call.
* ``"openmp"``: a static-schedule OpenMP parallel region (what fastopt used before the pool),
  kept to compare against and for dedicated machines with pinned threads.  Its caveats: the
  region ends at a barrier, so under load one descheduled thread holds up every call for a
  scheduler time slice; libgomp's idle threads spin for a while after each call (on cores
  NumPy's BLAS threads may want; ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` govern it); and a
  child forked after the parent ran an OpenMP region cannot run one (GNU libgomp waits for the
  parent's threads for ever), so such a child falls back to the pool.

The environment variable ``FASTOPT_THREADING`` (``pool`` or ``openmp``) picks the backend at
import; :func:`set_backend` and ``with threading_backend(name):`` switch it at run time, for
the whole process.
"""

import contextlib
import contextvars
import math
import operator
import os

from .. import _threadpool
from .dispatch import ext

_explicit = None
# The ``with num_threads(n)`` blocks open in this thread or asyncio task, innermost last, as
# (the num_threads object, n) pairs.  Not Token objects: a Token belongs to one entry in one
# context, so one object entered twice, or by two threads or tasks, could not be left.
_local = contextvars.ContextVar("fastopt_num_threads", default=())

#: Upper bound for an explicit thread count (the pool's own limit, plus the caller).
MAX_THREADS = 1024


def _cgroup_cpu_quota():
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def available_cpus():
    """CPUs this process may use: its affinity mask and its cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, quota) if quota else n)


_cpus = available_cpus()


def _after_fork_in_child():
    global _cpus
    _cpus = available_cpus()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _count(n):
    if isinstance(n, bool):
        raise TypeError("n must be an int >= 1 or None, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int >= 1 or None, got {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n must be >= 1 and <= {MAX_THREADS}, got {n}")
    return n


def set_num_threads(n):
    """Use ``n`` threads in every kernel, in every thread (``None``: back to the default)."""
    global _explicit
    _explicit = None if n is None else _count(n)


def num_threads_set_explicitly():
    """True when a process-wide thread count was set with :func:`set_num_threads`.

    (``OMP_NUM_THREADS`` is not counted: it shapes the default.)
    """
    return _explicit is not None


def num_threads_setting():
    """The process-wide thread count set with :func:`set_num_threads`, or None (none set).

    What a caller that sets it for a while saves, to give it back with
    ``set_num_threads(saved)``.
    """
    return _explicit


def cgroup_cpu_quota():
    """CPUs allowed by this process's cgroup CPU quota (rounded up), or None without a quota."""
    return _cgroup_cpu_quota()


def default_num_threads():
    """The thread count used when nothing was set (see the module docstring)."""
    return max(1, min(ext._optim.omp_max_threads(), _cpus))


def get_num_threads():
    """Threads a large kernel call from this thread will use (small arrays run on one)."""
    entries = _local.get()
    if entries and entries[-1][1] is not None:
        return entries[-1][1]
    if _explicit is not None:
        return _explicit
    return default_num_threads()


class num_threads:
    """``with fastopt.num_threads(n): ...``: ``n`` threads for kernel calls made by this
    thread (or asyncio task) inside the block; other threads are not affected.

    ``n=None`` inside an outer block goes back to the process-wide setting.  One object may
    be entered again inside its own block, and by several threads or tasks at once: each
    entry is recorded in the calling thread's (or task's) context and each exit removes that
    context's latest entry of this object, so every thread sees its own blocks only.
    """

    def __init__(self, n):
        self._n = None if n is None else _count(n)

    def __enter__(self):
        _local.set(_local.get() + ((self, self._n),))
        return self

    def __exit__(self, *exc):
        entries = _local.get()
        for i in range(len(entries) - 1, -1, -1):
            if entries[i][0] is self:
                _local.set(entries[:i] + entries[i + 1:])
                return False
        raise RuntimeError("num_threads block left in a thread or task that did not enter it")

    def __repr__(self):
        return f"fastopt.num_threads({self._n!r})"


#: The threading backends (see the module docstring).
BACKENDS = ("pool", "openmp")


def _backend_name(name, what="name"):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be one of {', '.join(map(repr, BACKENDS))}, "
                        f"got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    if name == "openmp" and not _threadpool.HAVE_OPENMP:
        raise ValueError("the 'openmp' threading backend needs fastopt built with OpenMP "
                         "(this build has none)")
    return name


def get_backend():
    """The threading backend the kernels run on: ``"pool"`` or ``"openmp"``."""
    return _threadpool.backend()


def set_backend(name):
    """Run the kernels' parallel calls on backend ``name`` (``"pool"`` or ``"openmp"``) from
    now on, in every thread of the process.  Returns the previous backend."""
    name = _backend_name(name)
    before = get_backend()
    _threadpool.set_backend(name)
    return before


@contextlib.contextmanager
def threading_backend(name):
    """``with threading_backend("openmp"): ...``: the kernels run on backend ``name`` inside
    the block (process-wide), then on the one before it."""
    before = set_backend(name)
    try:
        yield name
    finally:
        _threadpool.set_backend(before)


def _backend_from_env():
    raw = os.environ.get("FASTOPT_THREADING", "").strip().lower()
    if not raw:
        return
    try:
        set_backend(raw)
    except ValueError as e:
        raise ImportError(f"fastopt: FASTOPT_THREADING={raw!r}: {e}") from None


_backend_from_env()
