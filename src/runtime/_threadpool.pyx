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
        unsigned long long tasks_master, tasks_workers
        unsigned long long wakes_spin, wakes_sleep, wakes_empty, master_sleeps
        unsigned long long wake_ns, wake_count
        unsigned long long serial_small, wakes_samecpu, prewakes
        long sleep_wake_ns, broadcast_ns
        int small_forced, sleeping
    fo_pool_t fo_pool
    void fo_pool_init(long spin_ns) noexcept nogil
    void fo_pool_prewake(int nthreads) noexcept nogil
    void fo_run_tasks(fo_task_fn fn, void* ctx, Py_ssize_t ntasks, int nthreads) noexcept nogil
    int fo_blas_register(size_t setter, size_t exec_async, size_t exec_wait, size_t num_threads,
                         int max_cpu) noexcept nogil
    void fo_blas_set_shared(int k, int on) noexcept nogil
    unsigned long long fo_blas_calls(int k, int shared) noexcept nogil
    const int FO_BACKEND_POOL
    const int FO_BACKEND_OPENMP
    const int FO_HAVE_OPENMP_BACKEND
    int fo_backend
    int fo_omp_used
    unsigned long long fo_omp_fork_fallbacks
    int fo_set_backend(int b) noexcept nogil
    ctypedef struct fo_trace_rec_t:
        pass
    int fo_trace_start(long long cap) noexcept nogil
    long long fo_trace_stop(fo_trace_rec_t** recs) noexcept nogil

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
    pool was busy, resets after fork, the spin time in microseconds; and diagnostics: tasks
    run by the calling thread and by the workers, worker wake-ups by how the worker waited
    (spinning, asleep) and those that found no task left, times the caller slept waiting for
    the workers, and the mean time from publishing a job to a worker starting on it; calls
    run on the caller alone because waking a worker would not pay (serial_small), wake-ups
    that found the caller's CPU and left it the job (wakes_samecpu), and the filtered costs
    of a wake-up those decisions use (sleep_wake_us, broadcast_us); :func:`prewake` calls that
    woke sleeping workers (prewakes), and the workers asleep now (sleeping)."""
    cdef unsigned long long n = fo_pool.wake_count
    return dict(workers=fo_pool.nworkers, jobs=fo_pool.jobs, serial_busy=fo_pool.serial_busy,
                forks=fo_pool.forks, spin_us=fo_pool.spin_ns / 1000.0,
                tasks_master=fo_pool.tasks_master, tasks_workers=fo_pool.tasks_workers,
                wakes_spin=fo_pool.wakes_spin, wakes_sleep=fo_pool.wakes_sleep,
                wakes_empty=fo_pool.wakes_empty, master_sleeps=fo_pool.master_sleeps,
                wake_us=(fo_pool.wake_ns / n / 1000.0) if n else None,
                serial_small=fo_pool.serial_small, wakes_samecpu=fo_pool.wakes_samecpu,
                sleep_wake_us=fo_pool.sleep_wake_ns / 1000.0,
                broadcast_us=fo_pool.broadcast_ns / 1000.0,
                prewakes=fo_pool.prewakes, sleeping=fo_pool.sleeping)


def prewake(nthreads):
    """A parallel kernel call on up to ``nthreads`` threads is coming from this thread: wake
    the pool's sleeping workers now, so that they are spinning, not asleep, when it is
    published (see ``fo_pool_prewake`` in ``fo_threadpool.h``; counted in
    ``stats()["prewakes"]``).  Does nothing when no worker sleeps, for one thread, or on the
    OpenMP backend.  Results do not change.

    ``nthreads`` is an int >= 1 (TypeError for anything else, a bool included; ValueError
    below 1)."""
    if type(nthreads) is not int:
        raise TypeError(f"nthreads must be an int, got {type(nthreads).__name__}")
    if nthreads < 1:
        raise ValueError(f"nthreads must be >= 1, got {nthreads}")
    if fo_backend == FO_BACKEND_POOL and nthreads > 1:
        fo_pool_prewake(<int>min(nthreads, 1 << 20))


def force_small(on):
    """A test hook: with ``on``, every parallel call of the pool (gang jobs excepted) runs on
    the caller alone, as a small call whose wake-up would not pay does (counted in
    ``stats()["serial_small"]``), whatever the measured costs; off (the default), the pool
    decides by them.  Returns the previous setting.  Results are the same bits either way.

    ``on`` is a bool (or the int 0 or 1); anything else raises TypeError, the setting
    unchanged."""
    cdef int previous = fo_pool.small_forced
    if not (type(on) is bool or (type(on) is int and on in (0, 1))):
        raise TypeError(f"on must be a bool (or 0 or 1), got {on!r}")
    fo_pool.small_forced = 1 if on else 0
    return bool(previous)


#: The threading backends, by name (``fastopt.runtime.threads.set_backend``).
BACKENDS = {"pool": FO_BACKEND_POOL, "openmp": FO_BACKEND_OPENMP}

#: Whether this build can run the OpenMP backend (compiled with OpenMP).
HAVE_OPENMP = bool(FO_HAVE_OPENMP_BACKEND)


def backend():
    """The backend the kernels' parallel calls run on now: "pool" or "openmp"."""
    return "openmp" if fo_backend == FO_BACKEND_OPENMP else "pool"


def set_backend(str name):
    """Run the kernels' parallel calls on ``name`` ("pool" or "openmp") from now on (checked
    by the caller, ``fastopt.runtime.threads.set_backend``)."""
    if fo_set_backend(BACKENDS[name]) != 0:
        raise ValueError("the openmp threading backend needs a build with OpenMP")


def openmp_stats():
    """Whether an OpenMP region ran in this process, and how many times a forked child of
    a process that had run one moved from the openmp backend to the pool."""
    return dict(used=bool(fo_omp_used), fork_fallbacks=fo_omp_fork_fallbacks)


def blas_register(size_t setter, size_t exec_async, size_t exec_wait, size_t num_threads,
                  int max_cpu):
    """Install, for good, the callback that runs one OpenBLAS's parallel jobs (see
    ``fo_threadpool.h``), in native mode.  The arguments are addresses in that library:
    ``openblas_set_threads_callback_function``, ``exec_blas_async``, ``exec_blas_async_wait``,
    ``blas_num_threads``, and its ``MAX_CPU_NUMBER``.  Returns the library's slot, or -1 when
    the callback cannot be installed (no free slot, or no threads here)."""
    if max_cpu < 2:
        raise ValueError(f"max_cpu must be >= 2, got {max_cpu}")
    if not (setter and exec_async and exec_wait and num_threads):
        raise ValueError("every address must be non-zero")
    return fo_blas_register(setter, exec_async, exec_wait, num_threads, max_cpu)


def blas_set_shared(int slot, bint on):
    """Run the jobs of the library in ``slot`` on this pool (on) or on its own workers (off)."""
    fo_blas_set_shared(slot, on)


def blas_calls(int slot):
    """(calls run on this pool, calls run on OpenBLAS's own workers) of the library in ``slot``."""
    return fo_blas_calls(slot, 1), fo_blas_calls(slot, 0)


#: The layout of one record of :func:`trace_stop` (a NumPy dtype spelling): the job, the
#: thread's slot (0: the caller), the task (-1: published, -2: the caller returned, -3: a
#: worker saw the job), its start and end in CLOCK_MONOTONIC nanoseconds and the CPU the thread
#: was on when the record was written (-1 where unknown).
TRACE_DTYPE = [("job", "<u4"), ("slot", "<i4"), ("task", "<i8"), ("t0", "<i8"), ("t1", "<i8"),
               ("cpu", "<i4"), ("pad", "<i4")]


def trace_start(long long capacity):
    """Record every task the kernels' parallel calls run, on either backend, up to
    ``capacity`` records (a diagnostic for ``benchmarks/pool_trace.py``: call it and
    :func:`trace_stop` from the one thread that runs kernels)."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if fo_trace_start(capacity) != 0:
        raise MemoryError("no memory for the trace")


def trace_stop():
    """Stop recording; the records as bytes (``numpy.frombuffer(b, TRACE_DTYPE)``)."""
    cdef fo_trace_rec_t* recs
    cdef long long n = fo_trace_stop(&recs)
    if n <= 0:
        return b""
    return (<char*>recs)[:n * sizeof(fo_trace_rec_t)]
