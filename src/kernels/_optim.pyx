"""Fused, in-place optimizer kernels over flat float32 buffers.

These functions trust their arguments: ``fastopt.kernels`` checks dtype,
shape, layout, aliasing and hyperparameters before calling them.

Parallel layout: the buffer is cut into fixed blocks of ``BLOCK`` elements;
threads of fastopt's pool take whole blocks (``_parallel.pxi``).  Every element is therefore computed by the same
code whatever the thread count, so results are bit-identical for 1 or N
threads.  Reductions keep one double partial sum per block and add the
partials in block order.
"""

from libc.math cimport sqrtf, sqrt
from libc.stdlib cimport malloc, free

include "_openmp.pxi"
include "_parallel.pxi"

def parallel_threshold():
    """Number of elements from which the kernels use more than one thread."""
    return PARALLEL_MIN


def block_size():
    """Elements per parallel block."""
    return BLOCK

# ---------------------------------------------------------------- SGD


cdef void _sgd_block(float* p,                 # IN/OUT
                     const float* g,           # IN
                     float* buf,               # IN/OUT (unused if not has_mom)
                     Py_ssize_t n, float lr, float momentum, float one_minus_damp,
                     float wd, bint has_wd, bint has_mom, bint nesterov) noexcept nogil:
    cdef Py_ssize_t i
    cdef float gi, bi
    if not has_mom:
        for i in range(n):
            gi = g[i]
            if has_wd:
                gi = gi + wd * p[i]
            p[i] = p[i] - lr * gi
    elif nesterov:
        for i in range(n):
            gi = g[i]
            if has_wd:
                gi = gi + wd * p[i]
            bi = momentum * buf[i] + one_minus_damp * gi
            buf[i] = bi
            p[i] = p[i] - lr * (gi + momentum * bi)
    else:
        for i in range(n):
            gi = g[i]
            if has_wd:
                gi = gi + wd * p[i]
            bi = momentum * buf[i] + one_minus_damp * gi
            buf[i] = bi
            p[i] = p[i] - lr * bi


cdef struct SgdArgs:
    float* p
    const float* g
    float* buf
    Py_ssize_t n
    float lr, momentum, one_minus_damp, wd
    bint has_wd, has_mom, nesterov


cdef void _sgd_task(void* ctx, Py_ssize_t b) noexcept nogil:
    cdef SgdArgs* a = <SgdArgs*>ctx
    cdef Py_ssize_t off = b * BLOCK
    _sgd_block(a.p + off, a.g + off, a.buf + off if a.has_mom else NULL, _blen(b, a.n),
               a.lr, a.momentum, a.one_minus_damp, a.wd, a.has_wd, a.has_mom, a.nesterov)


def sgd_step(float[::1] param, const float[::1] grad, float[::1] momentum_buf,
             double lr, double momentum, double dampening, bint nesterov, double weight_decay,
             int n_threads):
    """SGD (with momentum) in place.  momentum_buf is ignored when momentum == 0
    (pass param's memory is not allowed; pass any float32 array, e.g. param[:0])."""
    cdef Py_ssize_t n = param.shape[0]
    cdef Py_ssize_t nb = _nblocks(n)
    cdef int nt = _nthreads(n, n_threads)
    # Branches are decided on the double values (as the reference does), the
    # arithmetic is float32.
    cdef bint has_mom = momentum != 0.0
    cdef bint has_wd = weight_decay != 0.0
    cdef float flr = <float>lr, fmom = <float>momentum, fwd = <float>weight_decay
    cdef float omd = <float>(1.0 - dampening)
    cdef float* bufp = NULL
    if n == 0:
        return
    if has_mom:
        bufp = &momentum_buf[0]
    cdef SgdArgs a
    a.p = &param[0]
    a.g = &grad[0]
    a.buf = bufp
    a.n = n
    a.lr = flr
    a.momentum = fmom
    a.one_minus_damp = omd
    a.wd = fwd
    a.has_wd = has_wd
    a.has_mom = has_mom
    a.nesterov = nesterov
    with nogil:
        fo_parallel(_sgd_task, &a, nb, nt)

# ---------------------------------------------------------------- RMSprop


cdef void _rmsprop_block(float* p,             # IN/OUT
                         const float* g,       # IN
                         float* s,             # IN/OUT
                         Py_ssize_t n, float lr, float alpha, float one_minus_alpha, float eps,
                         float wd, bint has_wd, bint eps_inside) noexcept nogil:
    cdef Py_ssize_t i
    cdef float gi, si
    if eps_inside:
        for i in range(n):
            gi = g[i]
            if has_wd:
                gi = gi + wd * p[i]
            si = alpha * s[i] + one_minus_alpha * (gi * gi)
            s[i] = si
            p[i] = p[i] - lr * gi / sqrtf(si + eps)
    else:
        for i in range(n):
            gi = g[i]
            if has_wd:
                gi = gi + wd * p[i]
            si = alpha * s[i] + one_minus_alpha * (gi * gi)
            s[i] = si
            p[i] = p[i] - lr * gi / (sqrtf(si) + eps)


cdef struct RmspropArgs:
    float* p
    const float* g
    float* s
    Py_ssize_t n
    float lr, alpha, one_minus_alpha, eps, wd
    bint has_wd, eps_inside


cdef void _rmsprop_task(void* ctx, Py_ssize_t b) noexcept nogil:
    cdef RmspropArgs* a = <RmspropArgs*>ctx
    cdef Py_ssize_t off = b * BLOCK
    _rmsprop_block(a.p + off, a.g + off, a.s + off, _blen(b, a.n), a.lr, a.alpha,
                   a.one_minus_alpha, a.eps, a.wd, a.has_wd, a.eps_inside)


def rmsprop_step(float[::1] param, const float[::1] grad, float[::1] square_avg,
                 double lr, double alpha, double eps, bint eps_inside_sqrt, double weight_decay,
                 int n_threads):
    """RMSprop in place."""
    cdef Py_ssize_t n = param.shape[0]
    cdef Py_ssize_t nb = _nblocks(n)
    cdef int nt = _nthreads(n, n_threads)
    cdef bint has_wd = weight_decay != 0.0
    cdef float flr = <float>lr, falpha = <float>alpha, feps = <float>eps, fwd = <float>weight_decay
    cdef float oma = <float>(1.0 - alpha)
    if n == 0:
        return
    cdef RmspropArgs a
    a.p = &param[0]
    a.g = &grad[0]
    a.s = &square_avg[0]
    a.n = n
    a.lr = flr
    a.alpha = falpha
    a.one_minus_alpha = oma
    a.eps = feps
    a.wd = fwd
    a.has_wd = has_wd
    a.eps_inside = eps_inside_sqrt
    with nogil:
        fo_parallel(_rmsprop_task, &a, nb, nt)

# ---------------------------------------------------------------- Adam / AdamW


cdef void _adam_block(float* p,                # IN/OUT
                      const float* g,          # IN
                      float* m,                # IN/OUT
                      float* v,                # IN/OUT
                      Py_ssize_t n, float c1, float c2,
                      float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                      float eps, float wd, bint has_wd, float decay, bint decoupled) noexcept nogil:
    # The reference's float32 operations in its order (same bits): the bias corrections
    # c1 = lr / (1 - beta1^t), c2 = 1 / sqrt(1 - beta2^t) scale sqrt(v) and m / denom, where
    # nothing overflows for the moments Adam produces and subnormal moments keep their bits.
    cdef Py_ssize_t i
    cdef float gi, pi, mi, vi
    for i in range(n):
        gi = g[i]
        pi = p[i]
        if decoupled:
            pi = pi * decay
        elif has_wd:
            gi = gi + wd * pi
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = pi - mi / (sqrtf(vi) * c2 + eps) * c1


cdef struct AdamArgs:
    float* p
    const float* g
    float* m
    float* v
    Py_ssize_t n
    float c1, c2, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, wd, decay
    bint has_wd, decoupled


cdef void _adam_task(void* ctx, Py_ssize_t b) noexcept nogil:
    cdef AdamArgs* a = <AdamArgs*>ctx
    cdef Py_ssize_t off = b * BLOCK
    _adam_block(a.p + off, a.g + off, a.m + off, a.v + off, _blen(b, a.n), a.c1, a.c2,
                a.beta1, a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.eps, a.wd, a.has_wd,
                a.decay, a.decoupled)


def adam_step(float[::1] param, const float[::1] grad, float[::1] exp_avg, float[::1] exp_avg_sq,
              double lr, double beta1, double beta2, double eps, double weight_decay,
              bint decoupled_weight_decay, long long step, int n_threads):
    """Adam / AdamW in place (step counts from 1)."""
    cdef Py_ssize_t n = param.shape[0]
    cdef Py_ssize_t nb = _nblocks(n)
    cdef int nt = _nthreads(n, n_threads)
    cdef float c1 = <float>(lr / (1.0 - beta1 ** step))
    cdef float c2 = <float>(1.0 / sqrt(1.0 - beta2 ** step))
    cdef float fb1 = <float>beta1, fb2 = <float>beta2
    cdef float omb1 = <float>(1.0 - beta1), omb2 = <float>(1.0 - beta2)
    cdef float feps = <float>eps, fwd = <float>weight_decay
    cdef float decay = <float>(1.0 - lr * weight_decay)
    cdef bint has_wd = weight_decay != 0.0
    if n == 0:
        return
    cdef AdamArgs a
    a.p = &param[0]
    a.g = &grad[0]
    a.m = &exp_avg[0]
    a.v = &exp_avg_sq[0]
    a.n = n
    a.c1 = c1
    a.c2 = c2
    a.beta1 = fb1
    a.one_minus_beta1 = omb1
    a.beta2 = fb2
    a.one_minus_beta2 = omb2
    a.eps = feps
    a.wd = fwd
    a.has_wd = has_wd
    a.decay = decay
    a.decoupled = decoupled_weight_decay
    with nogil:
        fo_parallel(_adam_task, &a, nb, nt)

# ---------------------------------------------------------------- norms


cdef double _sumsq_block(const float* g, Py_ssize_t n) noexcept nogil:
    # Four independent double accumulators: vectorizable, and fixed order.
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
    cdef double x0, x1, x2, x3
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        x0 = g[i]
        x1 = g[i + 1]
        x2 = g[i + 2]
        x3 = g[i + 3]
        a0 += x0 * x0
        a1 += x1 * x1
        a2 += x2 * x2
        a3 += x3 * x3
        i += 4
    while i < n:
        x0 = g[i]
        a0 += x0 * x0
        i += 1
    return (a0 + a1) + (a2 + a3)


cdef struct SumsqArgs:
    const float* g
    Py_ssize_t n
    double* partial


cdef void _sumsq_task(void* ctx, Py_ssize_t b) noexcept nogil:
    cdef SumsqArgs* a = <SumsqArgs*>ctx
    a.partial[b] = _sumsq_block(a.g + b * BLOCK, _blen(b, a.n))


def sum_of_squares(const float[::1] grad, int n_threads):
    """Sum of grad**2 accumulated in double; same bits for any thread count."""
    cdef Py_ssize_t n = grad.shape[0]
    cdef Py_ssize_t nb = _nblocks(n), b
    cdef int nt = _nthreads(n, n_threads)
    cdef double total = 0.0
    cdef double* partial
    if n == 0:
        return 0.0
    partial = <double*>malloc(nb * sizeof(double))
    if partial == NULL:
        raise MemoryError()
    cdef SumsqArgs a
    a.g = &grad[0]
    a.n = n
    a.partial = partial
    try:
        with nogil:
            fo_parallel(_sumsq_task, &a, nb, nt)
            for b in range(nb):
                total = total + partial[b]
    finally:
        free(partial)
    return total


cdef void _scale_block(float* g, Py_ssize_t n, float c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] * c


cdef struct ScaleArgs:
    float* g
    Py_ssize_t n
    float c


cdef void _scale_task(void* ctx, Py_ssize_t b) noexcept nogil:
    cdef ScaleArgs* a = <ScaleArgs*>ctx
    _scale_block(a.g + b * BLOCK, _blen(b, a.n), a.c)


def scale(float[::1] grad, float factor, int n_threads):
    """grad *= factor, in place."""
    cdef Py_ssize_t n = grad.shape[0]
    cdef Py_ssize_t nb = _nblocks(n), b
    cdef int nt = _nthreads(n, n_threads)
    if n == 0:
        return
    cdef ScaleArgs a
    a.g = &grad[0]
    a.n = n
    a.c = factor
    with nogil:
        fo_parallel(_scale_task, &a, nb, nt)
