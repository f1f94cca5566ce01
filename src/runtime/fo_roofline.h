/* fo_roofline.h - the roofline's loops, once per instruction-set level, in one module.
 *
 * Why: `fastopt bench` divides a kernel's time by the time of a pass that moves the same
 * bytes with one add per element (the "roofline", src/runtime/_roofline.pyx).  The pass
 * must be vectorized as the kernels of the level being measured are, but nothing else in
 * it depends on the level, and the module's Cython glue (typed memoryviews) is most of its
 * compile time.  So the module is built once, and only these three loops are compiled
 * per level, through GCC's target attribute; fo_roofline_fns[level] picks them.
 *
 * Levels follow fastopt/runtime/levels.py: 0 baseline, 1 avx2 (x86-64-v3), 2 avx512
 * (x86-64-v4, 512-bit vectors preferred).  With another compiler, or off x86-64, every
 * level runs the baseline loops (the kernels there are built per level as usual).
 */
#ifndef FO_ROOFLINE_H
#define FO_ROOFLINE_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FO_RL_TARGET_baseline
#define FO_RL_TARGET_avx2 __attribute__((target("arch=x86-64-v3")))
#define FO_RL_TARGET_avx512 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define FO_RL_PER_LEVEL 1
#endif

/* update: each of k (1-3) buffers read and written, g read; map: out = x (+ y);
   sum2: the sum of x (+ y), in double.
   update loads g and the buffers' elements before it stores any (as the optimizer kernels
   do): written a[i] += g[i]; b[i] += g[i]; ... the compiler must load g[i] and b[i] again
   after the store to a[i] (they may alias), and buffers at the same offset in their pages
   (numpy's large arrays all are) then make those loads wait on the stores' addresses: on
   Zen 3 (avx2, one thread, 16M elements, 4 buffers 4 KiB-aligned plus 16 B, December) that
   pass took 20.2-20.8 ms against 16.9 loads-first and 18.5-19.5 for an Adam-like loop over
   the same buffers, so the float32-state Adam row could run faster than its "roofline"
   (bench: 1.28); with the buffers' page offsets staggered all three took 12.4-15.7 ms. */
#define FO_RL_LOOPS(L)                                                                      \
static FO_RL_TARGET_##L void fo_rl_upd_##L(float *a, float *b, float *c, const float *g,   \
                                           int k, Py_ssize_t n) {                           \
    Py_ssize_t i;                                                                           \
    if (k == 3) {                                                                           \
        for (i = 0; i < n; i++) {                                                           \
            const float x = g[i], y0 = a[i], y1 = b[i], y2 = c[i];                          \
            a[i] = y0 + x; b[i] = y1 + x; c[i] = y2 + x;                                    \
        }                                                                                   \
    } else if (k == 2) {                                                                    \
        for (i = 0; i < n; i++) {                                                           \
            const float x = g[i], y0 = a[i], y1 = b[i];                                     \
            a[i] = y0 + x; b[i] = y1 + x;                                                   \
        }                                                                                   \
    } else { for (i = 0; i < n; i++) a[i] += g[i]; }                                        \
}                                                                                           \
static FO_RL_TARGET_##L void fo_rl_map_##L(const float *x, const float *y, float *out,     \
                                           Py_ssize_t n) {                                  \
    Py_ssize_t i;                                                                           \
    if (y == NULL) { for (i = 0; i < n; i++) out[i] = x[i] + 1.0f; }                        \
    else { for (i = 0; i < n; i++) out[i] = x[i] + y[i]; }                                  \
}                                                                                           \
static FO_RL_TARGET_##L double fo_rl_sum2_##L(const float *x, const float *y, Py_ssize_t n) { \
    double s = 0.0;                                                                         \
    Py_ssize_t i;                                                                           \
    if (y == NULL) {                                                                        \
        _Pragma("omp simd reduction(+:s)")                                                  \
        for (i = 0; i < n; i++) s += x[i];                                                  \
    } else {                                                                                \
        _Pragma("omp simd reduction(+:s)")                                                  \
        for (i = 0; i < n; i++) s += (double)x[i] + (double)y[i];                           \
    }                                                                                       \
    return s;                                                                               \
}

typedef struct {
    void (*upd)(float *, float *, float *, const float *, int, Py_ssize_t);
    void (*map)(const float *, const float *, float *, Py_ssize_t);
    double (*sum2)(const float *, const float *, Py_ssize_t);
} fo_rl_fns;

#ifdef FO_RL_PER_LEVEL
FO_RL_LOOPS(baseline)
FO_RL_LOOPS(avx2)
FO_RL_LOOPS(avx512)
static const fo_rl_fns fo_roofline_fns[3] = {
    {fo_rl_upd_baseline, fo_rl_map_baseline, fo_rl_sum2_baseline},
    {fo_rl_upd_avx2, fo_rl_map_avx2, fo_rl_sum2_avx2},
    {fo_rl_upd_avx512, fo_rl_map_avx512, fo_rl_sum2_avx512},
};
#else
#define FO_RL_TARGET_baseline
FO_RL_LOOPS(baseline)
static const fo_rl_fns fo_roofline_fns[3] = {
    {fo_rl_upd_baseline, fo_rl_map_baseline, fo_rl_sum2_baseline},
    {fo_rl_upd_baseline, fo_rl_map_baseline, fo_rl_sum2_baseline},
    {fo_rl_upd_baseline, fo_rl_map_baseline, fo_rl_sum2_baseline},
};
#endif

#endif /* FO_ROOFLINE_H */
