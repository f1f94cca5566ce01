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


# The fixed blocks a flat buffer is cut into (shared by every kernel module, so the roofline
# moves its bytes in the same blocks as the kernels), and the size from which a call uses
# more than one thread.
cdef enum:
    BLOCK = 16384            # elements per block (64 KiB of float32)
    PARALLEL_MIN = 65536     # below this many elements, one thread

cdef inline Py_ssize_t _nblocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


cdef inline int _nthreads(Py_ssize_t n, int n_threads) noexcept nogil:
    """Threads worth starting for n elements (one below PARALLEL_MIN)."""
    cdef Py_ssize_t nb = _nblocks(n)
    if n < PARALLEL_MIN or n_threads < 2:
        return 1
    if nb < n_threads:
        return <int>nb
    return n_threads


cdef inline Py_ssize_t _blen(Py_ssize_t b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t rest = n - b * BLOCK
    return BLOCK if rest > BLOCK else rest


# ---- the multi-tensor table: one kernel call over many arrays.
#
# A call's work is a list of tasks; a task is a run of chunks; a chunk is a piece of one
# tensor (tensor t, offset, length <= BLOCK).  ``ptr[k * ntensors + t]`` is the base of
# tensor t in buffer k (0: param, 1: grad, 2...: state).  With ``first == NULL`` the table
# is one tensor of ``n`` elements cut into BLOCK-sized chunks, one per task (the flat
# path, no allocation).  Elementwise kernels therefore compute every element with the same
# code for any layout and thread count.
cdef struct Table:
    char** ptr
    Py_ssize_t ntensors
    Py_ssize_t n
    const Py_ssize_t* first     # ntasks + 1 entries: task i covers chunks first[i]..first[i+1]-1
    const Py_ssize_t* ctensor
    const Py_ssize_t* coffset
    const Py_ssize_t* clength
    const int* tgroup           # per tensor: which hyperparameter set (NULL: all use the first)
    const void* hyper           # the kernel's hyperparameter struct(s), one per group


cdef inline void _task_chunks(const Table* T, Py_ssize_t task, Py_ssize_t* lo,
                              Py_ssize_t* hi) noexcept nogil:
    if T.first == NULL:
        lo[0] = task
        hi[0] = task + 1
    else:
        lo[0] = T.first[task]
        hi[0] = T.first[task + 1]


cdef inline Py_ssize_t _chunk(const Table* T, Py_ssize_t c, Py_ssize_t* t,
                              Py_ssize_t* off) noexcept nogil:
    """Chunk c's tensor and offset (written to t, off); returns its length."""
    if T.first == NULL:
        t[0] = 0
        off[0] = c * BLOCK
        return _blen(c, T.n)
    t[0] = T.ctensor[c]
    off[0] = T.coffset[c]
    return T.clength[c]


cdef inline int _group(const Table* T, Py_ssize_t t) noexcept nogil:
    """The hyperparameter group of tensor t."""
    return 0 if T.tgroup == NULL else T.tgroup[t]


cdef inline char* _at(const Table* T, int k, Py_ssize_t t, Py_ssize_t byte_off) noexcept nogil:
    """The address of byte ``byte_off`` of tensor t in buffer k."""
    return T.ptr[k * T.ntensors + t] + byte_off
