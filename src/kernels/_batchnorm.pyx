"""Fused batch-normalization kernels over x viewed as (N, C, S), S = prod(spatial).

Statistics are per channel c, over the N*S values x[:, c, :].  The work is cut
into fixed units that do not depend on the thread count:

* plane mode (S >= PLANE_MIN): a unit is a chunk of at most CHUNK contiguous
  values of one plane x[n, c, :]; units are numbered (n, c, chunk);
* row mode (smaller S, e.g. the (N, C) case): a unit is a tile of R rows and
  CB channels x[r0:r0+R, c0:c0+CB, :], numbered (row block, channel block), and
  yields partials for its channels.  Usually CB = C (whole rows).  Each row
  block keeps 2*C double partials, so when row blocks of about ROW_ELEMS values
  would need more than 1/PARTIAL_SHARE of x's size for them (wide rows, or few
  values per channel), R grows until they fit and the channels are cut into
  blocks (runs of at least RUN_MIN contiguous values) to keep units small.
  With a single row block, units write their channels' sums directly: no
  partial arrays.  (Tiles serve the reductions only; the elementwise passes,
  which keep no partial sums, use whole rows.)

Each unit writes double partial sums; partials are added in unit order, so
the results are bit-identical for any thread count, and all cores work even
when C is smaller than the thread count.  The partial sums take at most 1/16
of x's size (plane mode 1/128).  The statistics pass sums
d = x - k and d*d with a per-channel shift k = x[0, c, 0] (in double; 0 when
x[0, c, 0] is not finite), so data far from zero (x = 1e4 + 0.01 N(0, 1))
keeps its variance.
"""

from libc.math cimport isfinite
from libc.stdlib cimport malloc, free, calloc
from libc.string cimport memset

include "_openmp.pxi"
include "_parallel.pxi"

cdef enum:
    CHUNK = 16384          # plane-mode unit size (elements)
    PLANE_MIN = 512        # S from which plane mode is used
    ROW_ELEMS = 262144     # row-mode target elements per unit
    MIN_UNITS = 8          # row mode: at least this many units when N (or C) allows
    PARTIAL_SHARE = 16     # row mode: partial sums at most 1/PARTIAL_SHARE of x's bytes
    RUN_MIN = 1024         # row mode, channel blocks: at least this many contiguous values
    STREAM_MIN = 4194304   # from this many elements (16 MB), outputs bypass the cache


cdef struct Layout:
    Py_ssize_t N, C, S
    bint plane
    Py_ssize_t nch          # chunks per plane (plane mode)
    Py_ssize_t R, CB        # rows and channels per unit (row mode)
    Py_ssize_t nrb, ncb     # row blocks and channel blocks (row mode)
    Py_ssize_t nunits
    int nt
    bint stream             # write outputs with non-temporal stores (large outputs)


cdef Layout _layout(Py_ssize_t N, Py_ssize_t C, Py_ssize_t S, int n_threads,
                    bint reduction=True) noexcept nogil:
    """The units for x of shape (N, C, S); ``reduction``: bound the partial sums (tiles if needed)."""
    cdef Layout L
    cdef Py_ssize_t max_rb, nrb, want
    L.N = N
    L.C = C
    L.S = S
    L.plane = S >= PLANE_MIN
    L.CB = C
    if L.plane:
        L.nch = (S + CHUNK - 1) // CHUNK
        L.R = 1
        L.nrb = L.ncb = 1
        L.nunits = N * C * L.nch
    else:
        L.nch = 1
        # Units of about ROW_ELEMS values (few units: small partial arrays), but at
        # least MIN_UNITS of them when N allows (so every core gets work).  Depends
        # on the shape only, never on the thread count.
        L.R = ROW_ELEMS // (C * S) if C * S < ROW_ELEMS else 1
        if L.R > (N + MIN_UNITS - 1) // MIN_UNITS:
            L.R = (N + MIN_UNITS - 1) // MIN_UNITS
        if L.R < 1:
            L.R = 1
        # Each row block keeps 2*C double partials (16*C bytes); x has 4*N*C*S bytes, so
        # at most N*S / (4*PARTIAL_SHARE) row blocks keep them within 1/PARTIAL_SHARE of x.
        max_rb = N * S // (4 * PARTIAL_SHARE)
        if max_rb < 1:
            max_rb = 1
        if reduction and (N + L.R - 1) // L.R > max_rb:
            L.R = (N + max_rb - 1) // max_rb
            nrb = (N + L.R - 1) // L.R
            # Taller row blocks: cut the channels so that units stay about ROW_ELEMS
            # values, with runs of at least RUN_MIN, and MIN_UNITS units when C allows
            # (and x is large enough to run on several threads).
            L.CB = ROW_ELEMS // (L.R * S) if L.R * S < ROW_ELEMS else 1
            if L.CB * S < RUN_MIN:
                L.CB = (RUN_MIN + S - 1) // S
            want = (MIN_UNITS + nrb - 1) // nrb
            if N * C * S >= PARALLEL_MIN and L.CB > (C + want - 1) // want:
                L.CB = (C + want - 1) // want
            if L.CB > C:
                L.CB = C
            if L.CB < 1:
                L.CB = 1
            want = (C + L.CB - 1) // L.CB       # channel blocks of equal size
            L.CB = (C + want - 1) // want
        L.nrb = (N + L.R - 1) // L.R
        L.ncb = (C + L.CB - 1) // L.CB
        L.nunits = L.nrb * L.ncb
    L.stream = N * C * S >= STREAM_MIN
    L.nt = n_threads
    if N * C * S < PARALLEL_MIN or n_threads < 2 or L.nunits < 2:
        L.nt = 1
    elif L.nunits < n_threads:
        L.nt = <int>L.nunits
    return L


cdef inline Py_ssize_t _plane_unit(Layout* L, Py_ssize_t u, Py_ssize_t* c,
                                   Py_ssize_t* length) noexcept nogil:
    """Plane mode: offset in x of unit u (numbered (n, c, chunk)); sets its channel and length."""
    cdef Py_ssize_t k = u % L.nch, n = u // (L.nch * L.C), start = k * CHUNK
    c[0] = (u // L.nch) % L.C
    length[0] = L.S - start if L.S - start < CHUNK else CHUNK
    return (n * L.C + c[0]) * L.S + start


cdef inline void _row_range(Layout* L, Py_ssize_t u, Py_ssize_t* r0, Py_ssize_t* r1) noexcept nogil:
    """Row mode: the rows [r0, r1) of unit u."""
    r0[0] = (u // L.ncb) * L.R
    r1[0] = r0[0] + L.R if r0[0] + L.R < L.N else L.N


cdef inline void _channel_range(Layout* L, Py_ssize_t u, Py_ssize_t* c0,
                                Py_ssize_t* c1) noexcept nogil:
    """Row mode: the channels [c0, c1) of unit u."""
    c0[0] = (u % L.ncb) * L.CB
    c1[0] = c0[0] + L.CB if c0[0] + L.CB < L.C else L.C


cdef inline Py_ssize_t _partial_count(Layout* L) noexcept nogil:
    """Doubles in each of the two partial-sum arrays of a reduction (0: none allocated)."""
    if L.plane:
        return L.nunits
    if L.nrb == 1:
        return 0            # one row block: each unit writes its channels' sums directly
    return L.nrb * L.C


def layout(Py_ssize_t N, Py_ssize_t C, Py_ssize_t S, int n_threads, bint reduction=True):
    """(mode, units, threads, partial_bytes) for x of shape (N, C, S) (for tests and docs).

    ``partial_bytes`` is what a reduction (statistics or backward sums)
    allocates for its partial sums; mode is "plane", "row" (units of whole
    rows) or "tile" (row mode with channel blocks).  ``reduction=False``: the
    units of the elementwise passes, which keep no partial sums (never tiles).
    """
    cdef Layout L = _layout(N, C, S, n_threads, reduction)
    mode = "plane" if L.plane else ("row" if L.ncb == 1 else "tile")
    partial = 2 * _partial_count(&L) * <Py_ssize_t>sizeof(double) if reduction else 0
    return (mode, L.nunits, L.nt, partial)


# ------------------------------------------------------------------ reductions

# The inner reductions are plain C loops with `omp simd reduction`, so GCC
# vectorizes the double accumulation (it may not reorder a double sum on its
# own).  The order is fixed by the binary: same bits for any thread count.
cdef extern from *:
    """
    static void fo_plane_sums(const float* x, const float* dy, Py_ssize_t n, double k,
                              double* s1, double* s2) {
        double p = 0.0, q = 0.0;
        Py_ssize_t i;
        if (dy == NULL) {
            #pragma omp simd reduction(+:p, q)
            for (i = 0; i < n; i++) { double d = (double)x[i] - k; p += d; q += d * d; }
        } else {
            #pragma omp simd reduction(+:p, q)
            for (i = 0; i < n; i++) { double g = dy[i]; p += g; q += g * ((double)x[i] - k); }
        }
        *s1 = p;
        *s2 = q;
    }
    /* S == 1: add `rows` rows of C values, `stride` apart, into p1, p2 (four rows at a time). */
    static void fo_row_sums(const float* x, const float* dy, Py_ssize_t rows, Py_ssize_t C,
                            Py_ssize_t stride, const double* k, double* p1, double* p2) {
        Py_ssize_t r = 0, c;
        if (dy == NULL) {
            for (; r + 4 <= rows; r += 4) {
                const float* a = x + r * stride;
                const float* b = a + stride;
                const float* e = b + stride;
                const float* f = e + stride;
                #pragma omp simd
                for (c = 0; c < C; c++) {
                    double kc = k[c];
                    double d0 = (double)a[c] - kc, d1 = (double)b[c] - kc;
                    double d2 = (double)e[c] - kc, d3 = (double)f[c] - kc;
                    p1[c] += (d0 + d1) + (d2 + d3);
                    p2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                }
            }
            for (; r < rows; r++) {
                const float* a = x + r * stride;
                #pragma omp simd
                for (c = 0; c < C; c++) {
                    double d0 = (double)a[c] - k[c];
                    p1[c] += d0;
                    p2[c] += d0 * d0;
                }
            }
        } else {
            for (; r + 4 <= rows; r += 4) {
                const float* a = x + r * stride;
                const float* b = a + stride;
                const float* e = b + stride;
                const float* f = e + stride;
                const float* ga = dy + r * stride;
                const float* gb = ga + stride;
                const float* ge = gb + stride;
                const float* gf = ge + stride;
                #pragma omp simd
                for (c = 0; c < C; c++) {
                    double kc = k[c];
                    double g0 = ga[c], g1 = gb[c], g2 = ge[c], g3 = gf[c];
                    p1[c] += (g0 + g1) + (g2 + g3);
                    p2[c] += (g0 * ((double)a[c] - kc) + g1 * ((double)b[c] - kc))
                           + (g2 * ((double)e[c] - kc) + g3 * ((double)f[c] - kc));
                }
            }
            for (; r < rows; r++) {
                const float* a = x + r * stride;
                const float* ga = dy + r * stride;
                #pragma omp simd
                for (c = 0; c < C; c++) {
                    double g0 = ga[c];
                    p1[c] += g0;
                    p2[c] += g0 * ((double)a[c] - k[c]);
                }
            }
        }
    }
    """
    void fo_plane_sums(const float* x, const float* dy, Py_ssize_t n, double k,
                       double* s1, double* s2) noexcept nogil
    void fo_row_sums(const float* x, const float* dy, Py_ssize_t rows, Py_ssize_t C,
                     Py_ssize_t stride, const double* k, double* p1, double* p2) noexcept nogil


cdef void _unit_sums(const float* x, const float* dy, Layout* L, Py_ssize_t u,
                     const double* shift, double* s1, double* s2) noexcept nogil:
    """Sums of unit u: plane mode writes s1[u], s2[u]; row mode s1[rb*C + c], s2[rb*C + c]
    for its row block rb and channels c (s1[c], s2[c] with a single row block).

    Without dy: sums of d = x - shift[c] and d*d.  With dy: sums of dy and dy*d.
    """
    cdef Py_ssize_t C = L.C, S = L.S
    cdef Py_ssize_t c, c0, c1, length, r, r0, r1, off
    cdef double a, b
    cdef double* p1
    cdef double* p2
    if L.plane:
        off = _plane_unit(L, u, &c, &length)
        fo_plane_sums(x + off, dy + off if dy != NULL else NULL, length, shift[c], &s1[u], &s2[u])
        return
    p1 = s1 + (u // L.ncb) * C
    p2 = s2 + (u // L.ncb) * C
    _row_range(L, u, &r0, &r1)
    _channel_range(L, u, &c0, &c1)
    for c in range(c0, c1):
        p1[c] = 0.0
        p2[c] = 0.0
    if S == 1:
        off = r0 * C + c0
        fo_row_sums(x + off, dy + off if dy != NULL else NULL, r1 - r0, c1 - c0, C,
                    shift + c0, p1 + c0, p2 + c0)
        return
    for r in range(r0, r1):
        for c in range(c0, c1):
            off = (r * C + c) * S
            fo_plane_sums(x + off, dy + off if dy != NULL else NULL, S, shift[c], &a, &b)
            p1[c] += a
            p2[c] += b


cdef struct SumsArgs:
    const float* x
    const float* dy
    Layout* L
    const double* shift
    double* s1
    double* s2


cdef void _sums_task(void* ctx, Py_ssize_t u) noexcept nogil:
    cdef SumsArgs* a = <SumsArgs*>ctx
    _unit_sums(a.x, a.dy, a.L, u, a.shift, a.s1, a.s2)


cdef int _reduce(const float* x, const float* dy, Layout* L, const double* shift,
                 double* out1, double* out2) noexcept nogil:
    """Per-channel sums (see _unit_sums) combined in unit order. Returns -1 on allocation failure."""
    cdef Py_ssize_t C = L.C, u, c
    cdef Py_ssize_t count = _partial_count(L)
    cdef double* s1 = out1
    cdef double* s2 = out2
    if count != 0:
        s1 = <double*>malloc(count * sizeof(double))
        s2 = <double*>malloc(count * sizeof(double))
        if s1 == NULL or s2 == NULL:
            free(s1)
            free(s2)
            return -1
    cdef SumsArgs a
    a.x = x
    a.dy = dy
    a.L = L
    a.shift = shift
    a.s1 = s1
    a.s2 = s2
    fo_parallel(_sums_task, &a, L.nunits, L.nt)
    if count == 0:
        return 0            # one row block: the units wrote the complete sums
    for c in range(C):
        out1[c] = 0.0
        out2[c] = 0.0
    if L.plane:
        # unit order is (n, c, chunk): for each channel, add its units in (n, chunk) order
        for u in range(L.nunits):
            c = (u // L.nch) % C
            out1[c] += s1[u]
            out2[c] += s2[u]
    else:
        for u in range(L.nrb):
            for c in range(C):
                out1[c] += s1[u * C + c]
                out2[c] += s2[u * C + c]
    free(s1)
    free(s2)
    return 0


def channel_stats(const float[:, :, ::1] x,            # IN (N, C, S)
                  double[::1] mean,                     # OUT (C,)
                  double[::1] var,                      # OUT (C,) biased variance
                  int n_threads):
    """Per-channel mean and biased variance of x, accumulated in double (one pass over x)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef Layout L = _layout(N, C, S, n_threads)
    cdef double cnt = <double>(N * S), m
    cdef double* shift = <double*>malloc(C * sizeof(double))
    cdef int rc
    if shift == NULL:
        raise MemoryError()
    with nogil:
        for c in range(C):
            # (an infinite or NaN shift would turn x - shift into NaN where the sum is +-inf)
            shift[c] = x[0, c, 0] if isfinite(x[0, c, 0]) else 0.0
        rc = _reduce(&x[0, 0, 0], NULL, &L, shift, &mean[0], &var[0])
        if rc == 0:
            for c in range(C):
                m = mean[c] / cnt                    # mean of d = x - shift
                var[c] = var[c] / cnt - m * m
                if var[c] < 0.0:
                    var[c] = 0.0
                mean[c] = shift[c] + m
    free(shift)
    if rc != 0:
        raise MemoryError()


def backward_sums(const float[:, :, ::1] dy,           # IN (N, C, S)
                  const float[:, :, ::1] x,            # IN (N, C, S)
                  const double[::1] mean,              # IN (C,)
                  double[::1] sum_dy,                  # OUT (C,)
                  double[::1] sum_dy_xmu,              # OUT (C,) sum of dy * (x - mean)
                  int n_threads):
    """One fused pass over x and dy for both backward sums, in double."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Layout L = _layout(N, C, S, n_threads)
    cdef int rc
    with nogil:
        rc = _reduce(&x[0, 0, 0], &dy[0, 0, 0], &L, &mean[0], &sum_dy[0], &sum_dy_xmu[0])
    if rc != 0:
        raise MemoryError()


# ------------------------------------------------------------------ elementwise passes

# Plane-mode elementwise passes.  A large output (y, dx) will not stay in cache,
# so it is written with non-temporal stores: no read-for-ownership of the
# destination, a third less memory traffic.  The arithmetic is the same in the
# vector and the scalar code (explicit multiply, then add).
cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__SSE2__)
    #include <immintrin.h>
    #endif
    static void fo_affine_run(const float* x, float* y, Py_ssize_t n, float m, float a,
                              float b, int stream) {
        Py_ssize_t i = 0;
    #if defined(__AVX512F__)
        if (stream) {
            __m512 vm = _mm512_set1_ps(m), va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
            for (; i < n && ((uintptr_t)(y + i) & 63); i++) y[i] = (x[i] - m) * a + b;
            for (; i + 16 <= n; i += 16)
                _mm512_stream_ps(y + i, _mm512_add_ps(_mm512_mul_ps(
                    _mm512_sub_ps(_mm512_loadu_ps(x + i), vm), va), vb));
            _mm_sfence();
        }
    #elif defined(__AVX__)
        if (stream) {
            __m256 vm = _mm256_set1_ps(m), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
            for (; i < n && ((uintptr_t)(y + i) & 31); i++) y[i] = (x[i] - m) * a + b;
            for (; i + 8 <= n; i += 8)
                _mm256_stream_ps(y + i, _mm256_add_ps(_mm256_mul_ps(
                    _mm256_sub_ps(_mm256_loadu_ps(x + i), vm), va), vb));
            _mm_sfence();
        }
    #elif defined(__SSE2__)
        if (stream) {
            __m128 vm = _mm_set1_ps(m), va = _mm_set1_ps(a), vb = _mm_set1_ps(b);
            for (; i < n && ((uintptr_t)(y + i) & 15); i++) y[i] = (x[i] - m) * a + b;
            for (; i + 4 <= n; i += 4)
                _mm_stream_ps(y + i, _mm_add_ps(_mm_mul_ps(
                    _mm_sub_ps(_mm_loadu_ps(x + i), vm), va), vb));
            _mm_sfence();
        }
    #endif
        for (; i < n; i++) y[i] = (x[i] - m) * a + b;
    }

    static void fo_dx_run(const float* dy, const float* x, float* dx, Py_ssize_t n, float m,
                          float a, float b, float e, int stream) {
        Py_ssize_t i = 0;
    #if defined(__AVX512F__)
        if (stream) {
            __m512 vm = _mm512_set1_ps(m), va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b),
                   ve = _mm512_set1_ps(e);
            for (; i < n && ((uintptr_t)(dx + i) & 63); i++)
                dx[i] = a * dy[i] - b - e * (x[i] - m);
            for (; i + 16 <= n; i += 16) {
                __m512 t = _mm512_sub_ps(_mm512_mul_ps(va, _mm512_loadu_ps(dy + i)), vb);
                __m512 u = _mm512_mul_ps(ve, _mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
                _mm512_stream_ps(dx + i, _mm512_sub_ps(t, u));
            }
            _mm_sfence();
        }
    #elif defined(__AVX__)
        if (stream) {
            __m256 vm = _mm256_set1_ps(m), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b),
                   ve = _mm256_set1_ps(e);
            for (; i < n && ((uintptr_t)(dx + i) & 31); i++)
                dx[i] = a * dy[i] - b - e * (x[i] - m);
            for (; i + 8 <= n; i += 8) {
                __m256 t = _mm256_sub_ps(_mm256_mul_ps(va, _mm256_loadu_ps(dy + i)), vb);
                __m256 u = _mm256_mul_ps(ve, _mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
                _mm256_stream_ps(dx + i, _mm256_sub_ps(t, u));
            }
            _mm_sfence();
        }
    #elif defined(__SSE2__)
        if (stream) {
            __m128 vm = _mm_set1_ps(m), va = _mm_set1_ps(a), vb = _mm_set1_ps(b),
                   ve = _mm_set1_ps(e);
            for (; i < n && ((uintptr_t)(dx + i) & 15); i++)
                dx[i] = a * dy[i] - b - e * (x[i] - m);
            for (; i + 4 <= n; i += 4) {
                __m128 t = _mm_sub_ps(_mm_mul_ps(va, _mm_loadu_ps(dy + i)), vb);
                __m128 u = _mm_mul_ps(ve, _mm_sub_ps(_mm_loadu_ps(x + i), vm));
                _mm_stream_ps(dx + i, _mm_sub_ps(t, u));
            }
            _mm_sfence();
        }
    #endif
        for (; i < n; i++) dx[i] = a * dy[i] - b - e * (x[i] - m);
    }
    """
    void fo_affine_run(const float* x, float* y, Py_ssize_t n, float m, float a, float b,
                       int stream) noexcept nogil
    void fo_dx_run(const float* dy, const float* x, float* dx, Py_ssize_t n, float m, float a,
                   float b, float e, int stream) noexcept nogil


cdef void _unit_affine(const float* x, float* y, Layout* L, Py_ssize_t u, const float* mu,
                       const float* scale, const float* shift) noexcept nogil:
    """y = (x - mu[c]) * scale[c] + shift[c] over unit u."""
    cdef Py_ssize_t C = L.C, S = L.S
    cdef Py_ssize_t c, c0, c1, length, r, r0, r1, s, off
    cdef float m, a, b
    if L.plane:
        off = _plane_unit(L, u, &c, &length)
        fo_affine_run(x + off, y + off, length, mu[c], scale[c], shift[c], L.stream)
        return
    _row_range(L, u, &r0, &r1)
    _channel_range(L, u, &c0, &c1)
    for r in range(r0, r1):
        if S == 1:
            off = r * C
            for c in range(c0, c1):
                y[off + c] = (x[off + c] - mu[c]) * scale[c] + shift[c]
        else:
            for c in range(c0, c1):
                off = (r * C + c) * S
                m = mu[c]
                a = scale[c]
                b = shift[c]
                for s in range(S):
                    y[off + s] = (x[off + s] - m) * a + b


cdef struct AffineArgs:
    const float* x
    float* y
    Layout* L
    const float* mu
    const float* scale
    const float* shift


cdef void _affine_task(void* ctx, Py_ssize_t u) noexcept nogil:
    cdef AffineArgs* a = <AffineArgs*>ctx
    _unit_affine(a.x, a.y, a.L, u, a.mu, a.scale, a.shift)


def affine(const float[:, :, ::1] x,                  # IN (N, C, S)
           float[:, :, ::1] y,                        # OUT (N, C, S)
           const float[::1] mu,                       # IN (C,)
           const float[::1] scale,                    # IN (C,)
           const float[::1] shift,                    # IN (C,)
           int n_threads):
    """y = (x - mu) * scale + shift per channel: the forward normalization pass."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], u
    cdef Layout L = _layout(N, C, S, n_threads, False)  # (no partial sums: whole rows)
    if N * C * S == 0:
        return
    cdef AffineArgs a
    a.x = &x[0, 0, 0]
    a.y = &y[0, 0, 0]
    a.L = &L
    a.mu = &mu[0]
    a.scale = &scale[0]
    a.shift = &shift[0]
    with nogil:
        fo_parallel(_affine_task, &a, L.nunits, L.nt)


cdef void _unit_dx(const float* dy, const float* x, float* dx, Layout* L, Py_ssize_t u,
                   const float* mu, const float* k1, const float* k2, const float* k3) noexcept nogil:
    """dx = k1[c] * dy - k2[c] - k3[c] * (x - mu[c]) over unit u."""
    cdef Py_ssize_t C = L.C, S = L.S
    cdef Py_ssize_t c, c0, c1, length, r, r0, r1, s, off
    cdef float m, a, b, e
    if L.plane:
        off = _plane_unit(L, u, &c, &length)
        fo_dx_run(dy + off, x + off, dx + off, length, mu[c], k1[c], k2[c], k3[c], L.stream)
        return
    _row_range(L, u, &r0, &r1)
    _channel_range(L, u, &c0, &c1)
    for r in range(r0, r1):
        if S == 1:
            off = r * C
            for c in range(c0, c1):
                dx[off + c] = k1[c] * dy[off + c] - k2[c] - k3[c] * (x[off + c] - mu[c])
        else:
            for c in range(c0, c1):
                off = (r * C + c) * S
                m = mu[c]
                a = k1[c]
                b = k2[c]
                e = k3[c]
                for s in range(S):
                    dx[off + s] = a * dy[off + s] - b - e * (x[off + s] - m)


cdef struct DxArgs:
    const float* dy
    const float* x
    float* dx
    Layout* L
    const float* mu
    const float* k1
    const float* k2
    const float* k3


cdef void _dx_task(void* ctx, Py_ssize_t u) noexcept nogil:
    cdef DxArgs* a = <DxArgs*>ctx
    _unit_dx(a.dy, a.x, a.dx, a.L, u, a.mu, a.k1, a.k2, a.k3)


def grad_input(const float[:, :, ::1] dy,              # IN (N, C, S)
               const float[:, :, ::1] x,               # IN (N, C, S)
               float[:, :, ::1] dx,                    # OUT (N, C, S)
               const float[::1] mu,                    # IN (C,)
               const float[::1] k1,                    # IN (C,)
               const float[::1] k2,                    # IN (C,)
               const float[::1] k3,                    # IN (C,)
               int n_threads):
    """dx = k1 * dy - k2 - k3 * (x - mu) per channel: the backward write pass."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], u
    cdef Layout L = _layout(N, C, S, n_threads, False)  # (no partial sums: whole rows)
    if N * C * S == 0:
        return
    cdef DxArgs a
    a.dy = &dy[0, 0, 0]
    a.x = &x[0, 0, 0]
    a.dx = &dx[0, 0, 0]
    a.L = &L
    a.mu = &mu[0]
    a.k1 = &k1[0]
    a.k2 = &k2[0]
    a.k3 = &k3[0]
    with nogil:
        fo_parallel(_dx_task, &a, L.nunits, L.nt)
