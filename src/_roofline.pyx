# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The in-process roofline: the kernels' memory traffic with no real arithmetic.

Each function moves the bytes of one kernel pass (same fixed blocks, same
thread count, same compile flags as ``_optim``/``_batchnorm``) with one add
per element.  Its time is what moving those bytes costs on this machine right
now; ``fastopt bench`` reports kernel time against it.
"""

from cython.parallel cimport prange

include "_openmp.pxi"

cdef enum:
    BLOCK = 16384
    PARALLEL_MIN = 65536


cdef inline int _nt(Py_ssize_t n, int n_threads) noexcept nogil:
    return 1 if (n < PARALLEL_MIN or n_threads < 2) else n_threads


cdef void _upd_block(float* a, float* b, float* c, const float* g, int k, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if k == 3:
        for i in range(n):
            a[i] = a[i] + g[i]
            b[i] = b[i] + g[i]
            c[i] = c[i] + g[i]
    elif k == 2:
        for i in range(n):
            a[i] = a[i] + g[i]
            b[i] = b[i] + g[i]
    else:
        for i in range(n):
            a[i] = a[i] + g[i]


def update(list inout, const float[::1] g, int n_threads):
    """In-place pass: each of 1-3 buffers in ``inout`` is read and written, ``g`` is read."""
    cdef int k = len(inout)
    cdef float[::1] a = inout[0]
    cdef float[::1] b = inout[1] if k > 1 else inout[0]
    cdef float[::1] c = inout[2] if k > 2 else inout[0]
    cdef Py_ssize_t n = g.shape[0], nb = (g.shape[0] + BLOCK - 1) // BLOCK, blk, off, ln
    cdef int nt = _nt(n, n_threads)
    if n == 0:
        return
    with nogil:
        if nt == 1:
            for blk in range(nb):
                off = blk * BLOCK
                ln = n - off if n - off < BLOCK else BLOCK
                _upd_block(&a[off], &b[off], &c[off], &g[off], k, ln)
        else:
            for blk in prange(nb, schedule="static", num_threads=nt):
                off = blk * BLOCK
                ln = n - off if n - off < BLOCK else BLOCK
                _upd_block(&a[off], &b[off], &c[off], &g[off], k, ln)


cdef void _map_block(const float* x, const float* y, float* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if y == NULL:
        for i in range(n):
            out[i] = x[i] + 1.0
    else:
        for i in range(n):
            out[i] = x[i] + y[i]


def map(const float[::1] x, const float[::1] y, float[::1] out, int n_threads):
    """out = x (+ y): read one or two buffers (y may be None), write a third."""
    cdef Py_ssize_t n = x.shape[0], nb = (x.shape[0] + BLOCK - 1) // BLOCK, blk, off, ln
    cdef int nt = _nt(n, n_threads)
    cdef const float* yp = NULL
    if n == 0:
        return
    if y is not None:
        yp = &y[0]
    with nogil:
        if nt == 1:
            for blk in range(nb):
                off = blk * BLOCK
                ln = n - off if n - off < BLOCK else BLOCK
                _map_block(&x[off], yp + off if yp != NULL else NULL, &out[off], ln)
        else:
            for blk in prange(nb, schedule="static", num_threads=nt):
                off = blk * BLOCK
                ln = n - off if n - off < BLOCK else BLOCK
                _map_block(&x[off], yp + off if yp != NULL else NULL, &out[off], ln)


cdef extern from *:
    """
    static double fo_sum2(const float* x, const float* y, Py_ssize_t n) {
        double s = 0.0;
        Py_ssize_t i;
        if (y == NULL) {
            #pragma omp simd reduction(+:s)
            for (i = 0; i < n; i++) s += x[i];
        } else {
            #pragma omp simd reduction(+:s)
            for (i = 0; i < n; i++) s += (double)x[i] + (double)y[i];
        }
        return s;
    }
    """
    double fo_sum2(const float* x, const float* y, Py_ssize_t n) noexcept nogil


def reduce(const float[::1] x, const float[::1] y, int n_threads):
    """Read one or two buffers (y may be None) into a sum."""
    cdef Py_ssize_t n = x.shape[0], nb = (x.shape[0] + BLOCK - 1) // BLOCK, blk, off, ln
    cdef int nt = _nt(n, n_threads)
    cdef const float* yp = NULL
    cdef double total = 0.0
    if n == 0:
        return 0.0
    if y is not None:
        yp = &y[0]
    with nogil:
        if nt == 1:
            for blk in range(nb):
                off = blk * BLOCK
                ln = n - off if n - off < BLOCK else BLOCK
                total += fo_sum2(&x[off], yp + off if yp != NULL else NULL, ln)
        else:
            for blk in prange(nb, schedule="static", num_threads=nt):
                off = blk * BLOCK
                ln = n - off if n - off < BLOCK else BLOCK
                total += fo_sum2(&x[off], yp + off if yp != NULL else NULL, ln)
    return total
