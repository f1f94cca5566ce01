"""The in-process roofline: the kernels' memory traffic with no real arithmetic.

Each function moves the bytes of one kernel pass (same fixed blocks, same
thread count, same compile flags as ``_optim``/``_batchnorm``) with one add
per element.  Its time is what moving those bytes costs on this machine right
now; ``fastopt bench`` reports kernel time against it.
"""


include "_openmp.pxi"
include "_parallel.pxi"

from libc.stdlib cimport malloc, free

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


cdef struct UpdArgs:
    float* a
    float* b
    float* c
    const float* g
    int k
    Py_ssize_t n


cdef void _upd_task(void* ctx, Py_ssize_t blk) noexcept nogil:
    cdef UpdArgs* u = <UpdArgs*>ctx
    cdef Py_ssize_t off = blk * BLOCK
    cdef Py_ssize_t ln = u.n - off if u.n - off < BLOCK else BLOCK
    _upd_block(u.a + off, u.b + off, u.c + off, u.g + off, u.k, ln)


def update(list inout, const float[::1] g, int n_threads):
    """In-place pass: each of 1-3 buffers in ``inout`` is read and written, ``g`` is read."""
    cdef int k = len(inout)
    cdef float[::1] a = inout[0]
    cdef float[::1] b = inout[1] if k > 1 else inout[0]
    cdef float[::1] c = inout[2] if k > 2 else inout[0]
    cdef Py_ssize_t n = g.shape[0], nb = (g.shape[0] + BLOCK - 1) // BLOCK, blk, off, ln
    cdef int nt = _nthreads(n, n_threads)
    if n == 0:
        return
    cdef UpdArgs u
    u.a = &a[0]
    u.b = &b[0]
    u.c = &c[0]
    u.g = &g[0]
    u.k = k
    u.n = n
    with nogil:
        fo_parallel(_upd_task, &u, nb, nt)


cdef void _map_block(const float* x, const float* y, float* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if y == NULL:
        for i in range(n):
            out[i] = x[i] + 1.0
    else:
        for i in range(n):
            out[i] = x[i] + y[i]


cdef struct MapArgs:
    const float* x
    const float* y
    float* out
    Py_ssize_t n


cdef void _map_task(void* ctx, Py_ssize_t blk) noexcept nogil:
    cdef MapArgs* m = <MapArgs*>ctx
    cdef Py_ssize_t off = blk * BLOCK
    cdef Py_ssize_t ln = m.n - off if m.n - off < BLOCK else BLOCK
    _map_block(m.x + off, m.y + off if m.y != NULL else NULL, m.out + off, ln)


def map(const float[::1] x, const float[::1] y, float[::1] out, int n_threads):
    """out = x (+ y): read one or two buffers (y may be None), write a third."""
    cdef Py_ssize_t n = x.shape[0], nb = (x.shape[0] + BLOCK - 1) // BLOCK, blk, off, ln
    cdef int nt = _nthreads(n, n_threads)
    cdef const float* yp = NULL
    if n == 0:
        return
    if y is not None:
        yp = &y[0]
    cdef MapArgs m
    m.x = &x[0]
    m.y = yp
    m.out = &out[0]
    m.n = n
    with nogil:
        fo_parallel(_map_task, &m, nb, nt)


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


cdef struct RedArgs:
    const float* x
    const float* y
    Py_ssize_t n
    double* partial


cdef void _red_task(void* ctx, Py_ssize_t blk) noexcept nogil:
    cdef RedArgs* r = <RedArgs*>ctx
    cdef Py_ssize_t off = blk * BLOCK
    cdef Py_ssize_t ln = r.n - off if r.n - off < BLOCK else BLOCK
    r.partial[blk] = fo_sum2(r.x + off, r.y + off if r.y != NULL else NULL, ln)


def reduce(const float[::1] x, const float[::1] y, int n_threads):
    """Read one or two buffers (y may be None) into a sum."""
    cdef Py_ssize_t n = x.shape[0], nb = (x.shape[0] + BLOCK - 1) // BLOCK, blk, off, ln
    cdef int nt = _nthreads(n, n_threads)
    cdef const float* yp = NULL
    cdef double total = 0.0
    if n == 0:
        return 0.0
    if y is not None:
        yp = &y[0]
    cdef RedArgs r
    cdef double* partial = <double*>malloc(nb * sizeof(double))
    if partial == NULL:
        raise MemoryError()
    r.x = &x[0]
    r.y = yp
    r.n = n
    r.partial = partial
    with nogil:
        fo_parallel(_red_task, &r, nb, nt)
        for blk in range(nb):
            total += partial[blk]
    free(partial)
    return total
