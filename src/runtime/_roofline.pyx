"""The in-process roofline: the kernels' memory traffic with no real arithmetic.

Each method moves the bytes of one kernel pass (same fixed blocks, same thread count, the
loops vectorized for the same instruction-set level as the kernels) with one add per
element.  Its time is what moving those bytes costs on this machine right now; ``fastopt
bench`` reports kernel time against it.

Compiled once (not per level): only the three loops differ between levels, and
``fo_roofline.h`` compiles them for each level inside this one module.
``fastopt.runtime.dispatch`` sets ``ext._roofline`` to the :class:`Roofline` of the level in
use.
"""

include "_openmp.pxi"
include "_parallel.pxi"

from libc.stdlib cimport malloc, free

cdef extern from "fo_roofline.h":
    ctypedef struct fo_rl_fns:
        void (*upd)(float*, float*, float*, const float*, int, Py_ssize_t) noexcept nogil
        void (*map)(const float*, const float*, float*, Py_ssize_t) noexcept nogil
        double (*sum2)(const float*, const float*, Py_ssize_t) noexcept nogil
    const fo_rl_fns fo_roofline_fns[3]

#: The levels, in the order of ``fo_roofline_fns`` (fastopt/runtime/levels.py).
LEVELS = ("baseline", "avx2", "avx512")


cdef struct UpdArgs:
    float* a
    float* b
    float* c
    const float* g
    int k
    Py_ssize_t n
    const fo_rl_fns* fns


cdef void _upd_task(void* ctx, Py_ssize_t blk) noexcept nogil:
    cdef UpdArgs* u = <UpdArgs*>ctx
    cdef Py_ssize_t off = blk * BLOCK
    cdef Py_ssize_t ln = u.n - off if u.n - off < BLOCK else BLOCK
    u.fns.upd(u.a + off, u.b + off, u.c + off, u.g + off, u.k, ln)


cdef struct MapArgs:
    const float* x
    const float* y
    float* out
    Py_ssize_t n
    const fo_rl_fns* fns


cdef void _map_task(void* ctx, Py_ssize_t blk) noexcept nogil:
    cdef MapArgs* m = <MapArgs*>ctx
    cdef Py_ssize_t off = blk * BLOCK
    cdef Py_ssize_t ln = m.n - off if m.n - off < BLOCK else BLOCK
    m.fns.map(m.x + off, m.y + off if m.y != NULL else NULL, m.out + off, ln)


cdef struct RedArgs:
    const float* x
    const float* y
    Py_ssize_t n
    double* partial
    const fo_rl_fns* fns


cdef void _red_task(void* ctx, Py_ssize_t blk) noexcept nogil:
    cdef RedArgs* r = <RedArgs*>ctx
    cdef Py_ssize_t off = blk * BLOCK
    cdef Py_ssize_t ln = r.n - off if r.n - off < BLOCK else BLOCK
    r.partial[blk] = r.fns.sum2(r.x + off, r.y + off if r.y != NULL else NULL, ln)


cdef class Roofline:
    """The roofline passes of one instruction-set level (a name of ``LEVELS``)."""

    cdef const fo_rl_fns* fns
    cdef readonly str level

    def __init__(self, str level):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.level = level
        self.fns = &fo_roofline_fns[LEVELS.index(level)]

    def __repr__(self):
        return f"Roofline({self.level!r})"

    def update(self, list inout, const float[::1] g, int n_threads):
        """In-place pass: each of 1-3 buffers in ``inout`` is read and written, ``g`` is read."""
        cdef int k = len(inout)
        cdef float[::1] a = inout[0]
        cdef float[::1] b = inout[1] if k > 1 else inout[0]
        cdef float[::1] c = inout[2] if k > 2 else inout[0]
        cdef Py_ssize_t n = g.shape[0], nb = (g.shape[0] + BLOCK - 1) // BLOCK
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
        u.fns = self.fns
        with nogil:
            fo_parallel(_upd_task, &u, nb, nt)

    def map(self, const float[::1] x, const float[::1] y, float[::1] out, int n_threads):
        """out = x (+ y): read one or two buffers (y may be None), write a third."""
        cdef Py_ssize_t n = x.shape[0], nb = (x.shape[0] + BLOCK - 1) // BLOCK
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
        m.fns = self.fns
        with nogil:
            fo_parallel(_map_task, &m, nb, nt)

    def reduce(self, const float[::1] x, const float[::1] y, int n_threads):
        """Read one or two buffers (y may be None) into a sum."""
        cdef Py_ssize_t n = x.shape[0], nb = (x.shape[0] + BLOCK - 1) // BLOCK, blk
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
        r.fns = self.fns
        with nogil:
            fo_parallel(_red_task, &r, nb, nt)
            for blk in range(nb):
                total += partial[blk]
        free(partial)
        return total
