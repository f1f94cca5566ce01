"""Weight averaging: the exponential moving average of parameters, in one fused pass.

    ema <- ema + c * (param - ema),    c = 1 - decay (rounded once to the buffers' dtype)

Its own small module (not a kernel of the optimizer table ``fastopt/specs.py``: it has no
gradient and no hyperparameter groups), compiled per instruction-set level as every kernel
module.  ``ema_update`` runs over one flat array, ``ema_update_multi`` over the arrays of a
``fastopt._plan.MultiTensor`` whose row 0 is the averages (written) and row 1 the parameters
(read).  Elementwise, in fixed blocks: the same bits for any thread count, layout and level
(the build compiles without floating-point contraction), and the same bits as its NumPy twin
``fastopt.reference.ema_update`` (``ema += c * (param - ema)`` in the buffers' dtype).

These functions trust their arguments: ``fastopt.kernels.ema_update`` and
``fastopt.optim.EMA`` check them.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
cimport numpy as cnp

from fastopt._plan import MultiTensor

cnp.import_array()

include "_openmp.pxi"
include "_parallel.pxi"


cdef inline char* _data(object a) noexcept:
    return <char*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef void _ema_block_f32(float* e, const float* p, Py_ssize_t n, float c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        e[i] = e[i] + c * (p[i] - e[i])


cdef void _ema_block_f64(double* e, const double* p, Py_ssize_t n, double c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        e[i] = e[i] + c * (p[i] - e[i])


cdef void _ema_task_f32(void* ctx, Py_ssize_t task) noexcept nogil:
    cdef const Table* T = <const Table*>ctx
    cdef float c = (<const float*>T.hyper)[0]
    cdef Py_ssize_t k, lo, hi, t, off, n
    _task_chunks(T, task, &lo, &hi)
    for k in range(lo, hi):
        n = _chunk(T, k, &t, &off)
        off *= sizeof(float)
        _ema_block_f32(<float*>_at(T, 0, t, off), <const float*>_at(T, 1, t, off), n, c)


cdef void _ema_task_f64(void* ctx, Py_ssize_t task) noexcept nogil:
    cdef const Table* T = <const Table*>ctx
    cdef double c = (<const double*>T.hyper)[0]
    cdef Py_ssize_t k, lo, hi, t, off, n
    _task_chunks(T, task, &lo, &hi)
    for k in range(lo, hi):
        n = _chunk(T, k, &t, &off)
        off *= sizeof(double)
        _ema_block_f64(<double*>_at(T, 0, t, off), <const double*>_at(T, 1, t, off), n, c)


cdef void _run_ema(Table* T, Py_ssize_t ntasks, bint f64, double decay, int n_threads):
    cdef float c32 = <float>(1.0 - decay)
    cdef double c64 = 1.0 - decay
    cdef int nt = 1
    if T.n == 0:
        return
    if T.n >= PARALLEL_MIN and n_threads > 1:
        nt = <int>ntasks if ntasks < n_threads else n_threads
    T.hyper = &c64 if f64 else <void*>&c32
    with nogil:
        fo_parallel(_ema_task_f64 if f64 else _ema_task_f32, T, ntasks, nt)


def ema_update(ema, param, double decay, int n_threads):
    """ema += (1 - decay) * (param - ema), in place, over one flat array (any shape)."""
    cdef char* ptr[2]
    cdef Table T
    ptr[0] = _data(ema)
    ptr[1] = _data(param)
    T.ptr = ptr
    T.ntensors = 1
    T.n = cnp.PyArray_SIZE(<cnp.ndarray>ema)
    T.first = NULL
    T.ctensor = NULL
    T.coffset = NULL
    T.clength = NULL
    T.tgroup = NULL
    _run_ema(&T, _nblocks(T.n), cnp.PyArray_TYPE(<cnp.ndarray>ema) == cnp.NPY_DOUBLE, decay,
             n_threads)


def ema_update_multi(mt, double decay, int n_threads):
    """ema_update over every array of the MultiTensor ``mt`` (row 0: the averages, row 1: the
    parameters)."""
    if not isinstance(mt, MultiTensor):
        raise TypeError(f"expected a fastopt._plan.MultiTensor, got {type(mt).__name__}")
    cdef const PlanView* v = <const PlanView*>PyCapsule_GetPointer(
        (<object>mt).capsule, b"fastopt.Table")
    cdef Table T = v.T
    _run_ema(&T, v.ntasks, v.type_num == cnp.NPY_DOUBLE, decay, n_threads)
