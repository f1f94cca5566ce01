"""How many threads the kernels use.

By default fastopt follows the OpenMP runtime (``omp_get_max_threads()``): all
cores, or ``OMP_NUM_THREADS`` when it is set, and whatever
``threadpoolctl.threadpool_limits(..., user_api="openmp")`` imposes, the way
scikit-learn's OpenMP code does.  :func:`set_num_threads` overrides that.
"""

import operator
import os

from ._dispatch import ext

_explicit = None
_forked = False


def _after_fork_in_child():
    # GNU libgomp cannot start a parallel region in a child forked after the
    # parent used one (it hangs): kernels in a forked child run on one thread.
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Use ``n`` threads in every kernel (``None``: back to the OpenMP default)."""
    global _explicit
    if n is None:
        _explicit = None
        return
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int >= 1 or None, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _explicit = n


def get_num_threads():
    """Threads a large kernel call will use (small arrays run on one thread).

    Always 1 in a process forked after fastopt was imported (GNU OpenMP does
    not survive a fork).
    """
    if _forked:
        return 1
    if _explicit is not None:
        return _explicit
    return ext._optim.omp_max_threads()


class num_threads:
    """Context manager: ``with fastopt.num_threads(1): ...`` restores the previous setting."""

    def __init__(self, n):
        self._n = n
        self._saved = None

    def __enter__(self):
        self._saved = _explicit
        set_num_threads(self._n)
        return self

    def __exit__(self, *exc):
        set_num_threads(self._saved)
        return False
