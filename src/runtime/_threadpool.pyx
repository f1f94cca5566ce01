"""fastopt's thread pool (see ``fo_threadpool.h``), and the opt-in OpenBLAS callback on it.

Compiled once (not per instruction-set level): the process has one pool.  The kernel
modules get its entry point through the capsule :data:`runner` when they are imported.
"""

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "fo_threadpool.h":
    ctypedef void (*fo_task_fn)(void* ctx, Py_ssize_t task) noexcept nogil
    ctypedef struct fo_pool_t:
        int nworkers
        long spin_ns
        unsigned long long forks
        unsigned long long jobs
        unsigned long long serial_busy
    fo_pool_t fo_pool
    void fo_pool_init(long spin_ns) noexcept nogil
    void fo_run_tasks(fo_task_fn fn, void* ctx, Py_ssize_t ntasks, int nthreads) noexcept nogil
    void fo_blas_install(size_t setter_address, int on) noexcept nogil

import os as _os


def _spin_ns_from_env():
    raw = _os.environ.get("FASTOPT_SPIN_US", "").strip()
    if not raw:
        return 50_000
    try:
        us = float(raw)
    except ValueError:
        raise ImportError(f"fastopt: FASTOPT_SPIN_US must be a number of microseconds, got {raw!r}") from None
    if not 0 <= us <= 1e6:
        raise ImportError(f"fastopt: FASTOPT_SPIN_US must be between 0 and 1e6, got {raw!r}")
    return int(us * 1000)


fo_pool_init(_spin_ns_from_env())

#: PyCapsule holding ``fo_run_tasks`` (the kernels' parallel-for).
runner = PyCapsule_New(<void*>fo_run_tasks, b"fastopt._threadpool.run", NULL)


def stats():
    """Pool counters: workers started, parallel jobs run, calls run serially because the
    pool was busy, resets after fork, and the spin time in microseconds."""
    return dict(workers=fo_pool.nworkers, jobs=fo_pool.jobs, serial_busy=fo_pool.serial_busy,
                forks=fo_pool.forks, spin_us=fo_pool.spin_ns / 1000.0)


def set_blas_callback(size_t setter_address, bint on):
    """Install (on) or remove the callback that runs an OpenBLAS's jobs on this pool."""
    fo_blas_install(setter_address, on)
