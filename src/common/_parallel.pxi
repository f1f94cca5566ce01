# The kernels' one parallel loop: run task(ctx, 0..ntasks-1) on fastopt's thread pool
# (fastopt._threadpool), or in this thread when one thread is asked for.  Tasks are fixed
# blocks: which thread runs a block never changes its result.
from cpython.pycapsule cimport PyCapsule_GetPointer
from fastopt._threadpool import runner as _pool_runner

cdef extern from *:
    """
    typedef void (*fo_task_fn)(void *ctx, Py_ssize_t task);
    typedef void (*fo_run_fn)(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads);
    static fo_run_fn fo_run = NULL;
    static void fo_parallel(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
        Py_ssize_t t;
        if (nthreads > 1 && ntasks > 1 && fo_run != NULL) { fo_run(fn, ctx, ntasks, nthreads); return; }
        for (t = 0; t < ntasks; t++) fn(ctx, t);
    }
    """
    ctypedef void (*fo_task_fn)(void* ctx, Py_ssize_t task) noexcept nogil
    ctypedef void (*fo_run_fn)(fo_task_fn fn, void* ctx, Py_ssize_t ntasks, int nthreads) noexcept nogil
    fo_run_fn fo_run
    void fo_parallel(fo_task_fn fn, void* ctx, Py_ssize_t ntasks, int nthreads) noexcept nogil

fo_run = <fo_run_fn>PyCapsule_GetPointer(_pool_runner, b"fastopt._threadpool.run")


include "_table.pxi"


cdef inline int _nthreads(Py_ssize_t n, int n_threads) noexcept nogil:
    """Threads worth starting for n elements (one below PARALLEL_MIN)."""
    cdef Py_ssize_t nb = _nblocks(n)
    if n < PARALLEL_MIN or n_threads < 2:
        return 1
    if nb < n_threads:
        return <int>nb
    return n_threads
