/* The float8 Adam pass of src/kernels/fo_lowbit.h / fo_f8.h phase by phase (issue 23), at the
 * level it is compiled for, on 1..T threads (each its own contiguous share of the blocks, as
 * the pool's blocks of 16384 do), in cache or out of it.  The state is that of 10 real Adam
 * steps (the kernels' own pass from zero state, Gaussian gradients).  Each phase is timed
 * alone over n elements (best of 7 batches of REPS):
 *   full            fo_adam_f8_mode, the kernels' pass (decode, update, absmax, codes)
 *   roofline        the bytes of the step with one add each, swept per block of 16384 (p += g,
 *                   then each codes buffer += 1: _lowbit.roofline before December 6)
 *   roofline 1pass  the same bytes in one loop per block of 256 (p, g and both codes)
 *   roofline 256    the same per block of 256, buffer by buffer (_lowbit.roofline now)
 *   pass 1          the full block's first pass: decode, new state into L1, absmax
 *   pass 2          its second: the parameter update fused with both buffers' codes
 *   decode m+v      fo_f8_vdec of both buffers, into L1
 *   state+absmax    the new moments from decoded ones (read from arrays), stored, absmax
 *   param           the parameter update from the new moments (square root, division)
 *   encode m / v    fo_f8_vcodes4 of each buffer
 * and variants of the passes measured for fo_f8.h's notes (Adam only): pass 1 with 8 codes
 * per load (dec8: fo_f8_vdec per vector, as before fo_f8_vdec2), pass 2 without the square
 * roots issued ahead (plain: as before FO_PQ_AHEAD), the update in pass 1 (varA), the codes
 * before the update in pass 2 (varB), pass 2 hand-pipelined (varP: the square roots a group
 * ahead, the quotients between the two buffers' codes).
 * Build (the rendered fo_hyper.h of any build tree; -march=x86-64-v3 for avx2, -v4 and
 * -mprefer-vector-width=512 for avx512):
 *
 *   gcc -O3 -fno-math-errno -fno-trapping-math -std=c11 -march=x86-64-v3 -pthread \
 *       -Isrc/kernels -Isrc/common -Ibuild/cython/avx2/src/kernels \
 *       benchmarks/c/f8_phases.c -o f8_phases -lm
 *   [F8_CLOCK=cpu] ./f8_phases [N [THREADS [REPS]]]        (N a multiple of 256 * THREADS)
 *
 * F8_CLOCK=cpu times thread 0's CPU time instead of the wall clock (on a loaded machine);
 * F8_PHASES=full,pass (a comma-separated list of substrings of the names) times only those.
 * Prints ns per element (wall: the time of thread 0's share, the threads starting and ending
 * together at barriers / N). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "fo_lowbit.h"
FO_PASSES2(adam, AdamHyper)

#define MODE FO_GS1   /* fastopt bench's Adam: no weight decay, gscale 1 */
#define KIND 2        /* m e3m4, v e4m4 */

static int cpuclock;   /* F8_CLOCK=cpu: the thread's CPU time (one thread: leaves out the time it was not running) */
static double now(void) {
    struct timespec t;
    clock_gettime(cpuclock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static ptrdiff_t N;
static int T, REPS;
static float *p, *g, *ma, *va, *d0, *d1, *ys0, *ys1;
static uint8_t *mc, *vc, *cout;
static uint32_t *mx0, *mx1;
static fo_f8_q q[2];
static AdamHyper_f32 h;
static AdamHyper_vec A;
static pthread_barrier_t bar;
static volatile uint32_t sink;

static float gauss(void) {   /* Box-Muller */
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

/* each phase over blocks [b0, b1) of 256 */
static void ph_full(ptrdiff_t b0, ptrdiff_t b1) {
    fo_adam_f8_mode(p + 256 * b0, g + 256 * b0, mc + 256 * b0, ma + b0, vc + 256 * b0, va + b0,
                    256 * (b1 - b0), q, &h, MODE, KIND);
}
static void ph_roof(ptrdiff_t b0, ptrdiff_t b1) {
    for (ptrdiff_t o = 256 * b0; o < 256 * b1; o += 16384) {
        ptrdiff_t e = o + 16384 < 256 * b1 ? o + 16384 : 256 * b1, i;
        for (i = o; i < e; i++) p[i] += g[i];
        for (i = o; i < e; i++) mc[i] += 1;
        for (i = o; i < e; i++) vc[i] += 1;
    }
}
static void ph_roof256(ptrdiff_t b0, ptrdiff_t b1) {   /* _lowbit.roofline's: per 256, buffer by buffer */
    for (ptrdiff_t o = 256 * b0; o < 256 * b1; o += 256) {
        ptrdiff_t i;
        for (i = o; i < o + 256; i++) p[i] += g[i];
        for (i = o; i < o + 256; i++) mc[i] += 1;
        for (i = o; i < o + 256; i++) vc[i] += 1;
    }
}
static void ph_roof1(ptrdiff_t b0, ptrdiff_t b1) {
    for (ptrdiff_t b = b0; b < b1; b++) {
        float* restrict pp = p + 256 * b; const float* restrict gg = g + 256 * b;
        uint8_t* restrict m = mc + 256 * b; uint8_t* restrict v = vc + 256 * b;
        for (int i = 0; i < 256; i++) { pp[i] += gg[i]; m[i] += 1; v[i] += 1; }
    }
}
static void ph_dec(ptrdiff_t b0, ptrdiff_t b1) {
    FO_ALIGNED(64) float db0[256], db1[256];
    fo_f8_dv v0 = fo_f8_dv_init(&q[0]), v1 = fo_f8_dv_init(&q[1]);
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_vf s0 = fo_f8_vscale(&q[0], fo_f8_scale(&q[0], ma[b]), 0);
        fo_vf s1 = fo_f8_vscale(&q[1], fo_f8_scale(&q[1], va[b]), 1);
        for (int i = 0; i < 256; i += FO_W) {
            FO_PS(store)(db0 + i, fo_f8_vdec(&v0, mc + 256 * b, NULL, 0, i, s0, 0));
            FO_PS(store)(db1 + i, fo_f8_vdec(&v1, vc + 256 * b, NULL, 0, i, s1, 1));
        }
        __asm__ volatile("" : : "r"(db0), "r"(db1) : "memory");
    }
}
static void ph_state(ptrdiff_t b0, ptrdiff_t b1) {
    FO_ALIGNED(64) float yb0[256], yb1[256];
    uint32_t s = 0;
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_vi a0 = FO_SI(setzero)(), a1 = FO_SI(setzero)();
        for (int i = 0; i < 256; i += FO_W) {
            ptrdiff_t k = 256 * b + i; fo_vf m, v;
            fo_adam_state_vec(&A, MODE, FO_PS(loadu)(g + k), FO_PS(loadu)(p + k), FO_PS(load)(d0 + k),
                              FO_PS(load)(d1 + k), &m, &v);
            FO_PS(store)(yb0 + i, m); FO_PS(store)(yb1 + i, v);
            a0 = FO_EPU32(max)(a0, fo_vabsbits(m)); a1 = FO_EPU32(max)(a1, fo_vabsbits(v));
        }
        __asm__ volatile("" : : "r"(yb0), "r"(yb1) : "memory");
        s += fo_vhmax(a0) + fo_vhmax(a1);
    }
    sink += s;
}
static float* pc;   /* a copy of p the param phase writes */
static void ph_param(ptrdiff_t b0, ptrdiff_t b1) {
    for (ptrdiff_t k = 256 * b0; k < 256 * b1; k += FO_W)
        FO_PS(storeu)(pc + k, fo_adam_param_vec(&A, MODE, FO_PS(loadu)(g + k), FO_PS(loadu)(p + k),
                                                FO_PS(load)(ys0 + k), FO_PS(load)(ys1 + k)));
}
static void ph_enc(ptrdiff_t b0, ptrdiff_t b1, int j) {
    const float* y = j ? ys1 : ys0;
    const uint32_t* mx = j ? mx1 : mx0;
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_f8_venc E; fo_f8_venc_init(&E, &q[j], mx[b]);
        const float* yy = y + 256 * b;
        for (int i = 0; i < 256; i += 4 * FO_W) {
            if (j) fo_f8_vcodes4(cout + 256 * b + i, &E, FO_PS(load)(yy + i), FO_PS(load)(yy + i + FO_W),
                                 FO_PS(load)(yy + i + 2 * FO_W), FO_PS(load)(yy + i + 3 * FO_W), 1);
            else fo_f8_vcodes4(cout + 256 * b + i, &E, FO_PS(load)(yy + i), FO_PS(load)(yy + i + FO_W),
                               FO_PS(load)(yy + i + 2 * FO_W), FO_PS(load)(yy + i + 3 * FO_W), 0);
        }
    }
}
/* pass 1 of the kernels' full block (decode, new state into L1, absmax), as FO_P2_INT8_FULL */
static void ph_pass1(ptrdiff_t b0, ptrdiff_t b1) {
    FO_ALIGNED(64) float buf0[256], buf1[256];
    fo_f8_dv v0 = fo_f8_dv_init(&q[0]), v1 = fo_f8_dv_init(&q[1]);
    uint32_t s = 0;
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_vf va0 = fo_f8_vscale(&q[0], fo_f8_scale(&q[0], ma[b]), 0);
        fo_vf va1 = fo_f8_vscale(&q[1], fo_f8_scale(&q[1], va[b]), 1);
        const uint8_t *c0 = mc + 256 * b, *c1 = vc + 256 * b;
        const float *gg = g + 256 * b, *pp = p + 256 * b;
        fo_vi mx0 = FO_SI(setzero)(), mx1 = FO_SI(setzero)(), mx2 = FO_SI(setzero)(), mx3 = FO_SI(setzero)();
        for (int i = 0; i < 256; i += 2 * FO_W) {
            fo_vf m, v, mb, vb, x0, x0b, x1, x1b;
            fo_f8_vdec2(&v0, c0, NULL, 0, i, va0, 0, &x0, &x0b);
            fo_f8_vdec2(&v1, c1, NULL, 0, i, va1, 1, &x1, &x1b);
            fo_adam_state_vec(&A, MODE, FO_PS(loadu)(gg + i), FO_PS(loadu)(pp + i), x0, x1, &m, &v);
            fo_adam_state_vec(&A, MODE, FO_PS(loadu)(gg + i + FO_W), FO_PS(loadu)(pp + i + FO_W), x0b, x1b, &mb, &vb);
            FO_PS(store)(buf0 + i, m); FO_PS(store)(buf1 + i, v);
            FO_PS(store)(buf0 + i + FO_W, mb); FO_PS(store)(buf1 + i + FO_W, vb);
            mx0 = FO_EPU32(max)(mx0, fo_vabsbits(m)); mx1 = FO_EPU32(max)(mx1, fo_vabsbits(v));
            mx2 = FO_EPU32(max)(mx2, fo_vabsbits(mb)); mx3 = FO_EPU32(max)(mx3, fo_vabsbits(vb));
        }
        __asm__ volatile("" : : "r"(buf0), "r"(buf1) : "memory");
        s += fo_vhmax(FO_EPU32(max)(mx0, mx2)) + fo_vhmax(FO_EPU32(max)(mx1, mx3));
    }
    sink += s;
}
/* pass 1 with 8 codes per load (fo_f8_vdec per vector: the kernels' decode before fo_f8_vdec2) */
static void ph_pass1_8(ptrdiff_t b0, ptrdiff_t b1) {
    FO_ALIGNED(64) float buf0[256], buf1[256];
    fo_f8_dv v0 = fo_f8_dv_init(&q[0]), v1 = fo_f8_dv_init(&q[1]);
    uint32_t s = 0;
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_vf va0 = fo_f8_vscale(&q[0], fo_f8_scale(&q[0], ma[b]), 0);
        fo_vf va1 = fo_f8_vscale(&q[1], fo_f8_scale(&q[1], va[b]), 1);
        const uint8_t *c0 = mc + 256 * b, *c1 = vc + 256 * b;
        const float *gg = g + 256 * b, *pp = p + 256 * b;
        fo_vi mx0 = FO_SI(setzero)(), mx1 = FO_SI(setzero)(), mx2 = FO_SI(setzero)(), mx3 = FO_SI(setzero)();
        for (int i = 0; i < 256; i += 2 * FO_W) {
            fo_vf m, v, mb, vb;
            fo_adam_state_vec(&A, MODE, FO_PS(loadu)(gg + i), FO_PS(loadu)(pp + i),
                              fo_f8_vdec(&v0, c0, NULL, 0, i, va0, 0), fo_f8_vdec(&v1, c1, NULL, 0, i, va1, 1), &m, &v);
            fo_adam_state_vec(&A, MODE, FO_PS(loadu)(gg + i + FO_W), FO_PS(loadu)(pp + i + FO_W),
                              fo_f8_vdec(&v0, c0, NULL, 0, i + FO_W, va0, 0),
                              fo_f8_vdec(&v1, c1, NULL, 0, i + FO_W, va1, 1), &mb, &vb);
            FO_PS(store)(buf0 + i, m); FO_PS(store)(buf1 + i, v);
            FO_PS(store)(buf0 + i + FO_W, mb); FO_PS(store)(buf1 + i + FO_W, vb);
            mx0 = FO_EPU32(max)(mx0, fo_vabsbits(m)); mx1 = FO_EPU32(max)(mx1, fo_vabsbits(v));
            mx2 = FO_EPU32(max)(mx2, fo_vabsbits(mb)); mx3 = FO_EPU32(max)(mx3, fo_vabsbits(vb));
        }
        __asm__ volatile("" : : "r"(buf0), "r"(buf1) : "memory");
        s += fo_vhmax(FO_EPU32(max)(mx0, mx2)) + fo_vhmax(FO_EPU32(max)(mx1, mx3));
    }
    sink += s;
}
/* pass 2 of the kernels' full block: the parameter update fused with both buffers' codes */
static uint8_t* cout2;
static void ph_pass2(ptrdiff_t b0, ptrdiff_t b1) {
    float am0, am1;
    for (ptrdiff_t b = b0; b < b1; b++)
        fo_adam_f8_pq(pc + 256 * b, g + 256 * b, ys0 + 256 * b, ys1 + 256 * b, cout + 256 * b, &am0,
                      cout2 + 256 * b, &am1, q, mx0[b], mx1[b], &A, MODE, KIND);
}
/* pass 2 as before the ahead square roots: per 4 vectors the update (fo_adam_param_vec), then
   the codes of m and of v */
static void ph_pass2_plain(ptrdiff_t b0, ptrdiff_t b1) {
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_f8_venc E0, E1;
        fo_f8_venc_init(&E0, &q[0], mx0[b]); fo_f8_venc_init(&E1, &q[1], mx1[b]);
        const float *y0 = ys0 + 256 * b, *y1 = ys1 + 256 * b, *gg = g + 256 * b; float* pp = pc + 256 * b;
        for (int i = 0; i < 256; i += 4 * FO_W) {
            for (int u = 0; u < 4; u++) { int ii = i + u * FO_W;
                FO_PS(storeu)(pp + ii, fo_adam_param_vec(&A, MODE, FO_PS(loadu)(gg + ii), FO_PS(loadu)(pp + ii),
                                                         FO_PS(load)(y0 + ii), FO_PS(load)(y1 + ii))); }
            fo_f8_vcodes4(cout + 256 * b + i, &E0, FO_PS(load)(y0 + i), FO_PS(load)(y0 + i + FO_W),
                          FO_PS(load)(y0 + i + 2 * FO_W), FO_PS(load)(y0 + i + 3 * FO_W), 0);
            fo_f8_vcodes4(cout2 + 256 * b + i, &E1, FO_PS(load)(y1 + i), FO_PS(load)(y1 + i + FO_W),
                          FO_PS(load)(y1 + i + 2 * FO_W), FO_PS(load)(y1 + i + 3 * FO_W), 1);
        }
    }
}
/* variant A: the parameter update in pass 1 (the unsplit rule), pass 2 the codes alone */
static float* pc2;
static void ph_varA(ptrdiff_t b0, ptrdiff_t b1) {
    FO_ALIGNED(64) float buf0[256], buf1[256];
    fo_f8_dv v0 = fo_f8_dv_init(&q[0]), v1 = fo_f8_dv_init(&q[1]);
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_vf va0 = fo_f8_vscale(&q[0], fo_f8_scale(&q[0], ma[b]), 0);
        fo_vf va1 = fo_f8_vscale(&q[1], fo_f8_scale(&q[1], va[b]), 1);
        const uint8_t *c0 = mc + 256 * b, *c1 = vc + 256 * b;
        const float *gg = g + 256 * b; float* pp = pc2 + 256 * b;
        fo_vi mx0 = FO_SI(setzero)(), mx1 = FO_SI(setzero)(), mx2 = FO_SI(setzero)(), mx3 = FO_SI(setzero)();
        for (int i = 0; i < 256; i += 2 * FO_W) {
            fo_vf m, v, mb, vb;
            fo_vf pa = fo_adam_vec(&A, MODE, FO_PS(loadu)(gg + i), FO_PS(loadu)(pp + i),
                              fo_f8_vdec(&v0, c0, NULL, 0, i, va0, 0), fo_f8_vdec(&v1, c1, NULL, 0, i, va1, 1), &m, &v);
            fo_vf pb = fo_adam_vec(&A, MODE, FO_PS(loadu)(gg + i + FO_W), FO_PS(loadu)(pp + i + FO_W),
                              fo_f8_vdec(&v0, c0, NULL, 0, i + FO_W, va0, 0),
                              fo_f8_vdec(&v1, c1, NULL, 0, i + FO_W, va1, 1), &mb, &vb);
            FO_PS(storeu)(pp + i, pa); FO_PS(storeu)(pp + i + FO_W, pb);
            FO_PS(store)(buf0 + i, m); FO_PS(store)(buf1 + i, v);
            FO_PS(store)(buf0 + i + FO_W, mb); FO_PS(store)(buf1 + i + FO_W, vb);
            mx0 = FO_EPU32(max)(mx0, fo_vabsbits(m)); mx1 = FO_EPU32(max)(mx1, fo_vabsbits(v));
            mx2 = FO_EPU32(max)(mx2, fo_vabsbits(mb)); mx3 = FO_EPU32(max)(mx3, fo_vabsbits(vb));
        }
        uint32_t m0 = fo_vhmax(FO_EPU32(max)(mx0, mx2)), m1 = fo_vhmax(FO_EPU32(max)(mx1, mx3));
        float am;
        fo_f8_quant_k(buf0, 256, cout + 256 * b, &am, &q[0], m0, 0);
        fo_f8_quant_k(buf1, 256, cout2 + 256 * b, &am, &q[1], m1, 1);
    }
}
/* variant B: pass 2 with both buffers' codes before the parameter update */
static void ph_varB(ptrdiff_t b0, ptrdiff_t b1) {
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_f8_venc E0, E1;
        fo_f8_venc_init(&E0, &q[0], mx0[b]); fo_f8_venc_init(&E1, &q[1], mx1[b]);
        const float *y0 = ys0 + 256 * b, *y1 = ys1 + 256 * b, *gg = g + 256 * b; float* pp = pc + 256 * b;
        for (int i = 0; i < 256; i += 4 * FO_W) {
            fo_f8_vcodes4(cout + 256 * b + i, &E0, FO_PS(load)(y0 + i), FO_PS(load)(y0 + i + FO_W),
                          FO_PS(load)(y0 + i + 2 * FO_W), FO_PS(load)(y0 + i + 3 * FO_W), 0);
            fo_f8_vcodes4(cout2 + 256 * b + i, &E1, FO_PS(load)(y1 + i), FO_PS(load)(y1 + i + FO_W),
                          FO_PS(load)(y1 + i + 2 * FO_W), FO_PS(load)(y1 + i + 3 * FO_W), 1);
            for (int u = 0; u < 4; u++) { int ii = i + u * FO_W;
                FO_PS(storeu)(pp + ii, fo_adam_param_vec(&A, MODE, FO_PS(loadu)(gg + ii), FO_PS(loadu)(pp + ii),
                                                         FO_PS(load)(y0 + ii), FO_PS(load)(y1 + ii))); }
        }
    }
}
/* variant P: pass 2 software-pipelined (Adam, no decay): the square roots of group k + 1, the
   codes of m of group k, the denominators and quotients of group k, the codes of v, the
   parameters of group k */
static void ph_varP(ptrdiff_t b0, ptrdiff_t b1) {
    for (ptrdiff_t b = b0; b < b1; b++) {
        fo_f8_venc E0, E1;
        fo_f8_venc_init(&E0, &q[0], mx0[b]); fo_f8_venc_init(&E1, &q[1], mx1[b]);
        const float *y0 = ys0 + 256 * b, *y1 = ys1 + 256 * b; float* pp = pc + 256 * b;
        fo_vf s0 = FO_PS(sqrt)(FO_PS(load)(y1)), s1 = FO_PS(sqrt)(FO_PS(load)(y1 + FO_W));
        fo_vf s2 = FO_PS(sqrt)(FO_PS(load)(y1 + 2 * FO_W)), s3 = FO_PS(sqrt)(FO_PS(load)(y1 + 3 * FO_W));
        for (int i = 0; i < 256; i += 4 * FO_W) {
            fo_vf t0 = s0, t1 = s1, t2 = s2, t3 = s3;
            if (i + 4 * FO_W < 256) {
                s0 = FO_PS(sqrt)(FO_PS(load)(y1 + i + 4 * FO_W)); s1 = FO_PS(sqrt)(FO_PS(load)(y1 + i + 5 * FO_W));
                s2 = FO_PS(sqrt)(FO_PS(load)(y1 + i + 6 * FO_W)); s3 = FO_PS(sqrt)(FO_PS(load)(y1 + i + 7 * FO_W));
            }
            fo_f8_vcodes4(cout + 256 * b + i, &E0, FO_PS(load)(y0 + i), FO_PS(load)(y0 + i + FO_W),
                          FO_PS(load)(y0 + i + 2 * FO_W), FO_PS(load)(y0 + i + 3 * FO_W), 0);
#define DQ(t, u) FO_PS(div)(FO_PS(load)(y0 + i + u * FO_W), FO_PS(add)(FO_PS(mul)(t, A.c2), A.eps))
            fo_vf q0 = DQ(t0, 0), q1 = DQ(t1, 1), q2 = DQ(t2, 2), q3 = DQ(t3, 3);
            fo_f8_vcodes4(cout2 + 256 * b + i, &E1, FO_PS(load)(y1 + i), FO_PS(load)(y1 + i + FO_W),
                          FO_PS(load)(y1 + i + 2 * FO_W), FO_PS(load)(y1 + i + 3 * FO_W), 1);
#define PU(qq, u) FO_PS(storeu)(pp + i + u * FO_W, FO_PS(sub)(FO_PS(loadu)(pp + i + u * FO_W), FO_PS(mul)(qq, A.c1)))
            PU(q0, 0); PU(q1, 1); PU(q2, 2); PU(q3, 3);
        }
    }
}
static void ph_encm(ptrdiff_t b0, ptrdiff_t b1) { ph_enc(b0, b1, 0); }
static void ph_encv(ptrdiff_t b0, ptrdiff_t b1) { ph_enc(b0, b1, 1); }

typedef void (*phase_fn)(ptrdiff_t, ptrdiff_t);
#define PHASE(name, f) do { if (wanted(name)) printf("%s %.3f\n", name, timeit(f)); } while (0)
static phase_fn cur;
static int quit;
static double best;

static void run_share(int t) {
    ptrdiff_t nb = N / 256, b0 = nb * t / T, b1 = nb * (t + 1) / T;
    for (int k = 0; k < REPS; k++) cur(b0, b1);
}
static void* worker(void* arg) {
    int t = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&bar);
        if (quit) return NULL;
        for (int r = 0; r < 7; r++) {
            pthread_barrier_wait(&bar);
            run_share(t);
            pthread_barrier_wait(&bar);
        }
    }
}
static const char* only;   /* F8_PHASES: the names of the phases to time (a substring each) */
static int wanted(const char* name) {
    char key[64];
    const char *o = only, *e;
    if (!only) return 1;
    for (; *o; o = *e ? e + 1 : e) {
        size_t k;
        e = strchr(o, ',');
        if (!e) e = o + strlen(o);
        k = (size_t)(e - o) < sizeof key - 1 ? (size_t)(e - o) : sizeof key - 1;
        memcpy(key, o, k);
        key[k] = 0;
        if (k && strstr(name, key)) return 1;
    }
    return 0;
}
static double timeit(phase_fn f) {
    cur = f;
    best = 1e9;
    pthread_barrier_wait(&bar);
    for (int r = 0; r < 7; r++) {
        pthread_barrier_wait(&bar);
        double t0 = now();
        run_share(0);
        pthread_barrier_wait(&bar);
        double t1 = (now() - t0) / REPS;
        if (t1 < best) best = t1;
    }
    return 1e9 * best / N;
}

int main(int argc, char** argv) {
    cpuclock = getenv("F8_CLOCK") && !strcmp(getenv("F8_CLOCK"), "cpu");
    N = argc > 1 ? atol(argv[1]) : 65536;
    T = argc > 2 ? atoi(argv[2]) : 1;
    REPS = argc > 3 ? atoi(argv[3]) : (int)(2e7 / N + 1);
    ptrdiff_t nb = N / 256;
    p = aligned_alloc(64, 4 * N); g = aligned_alloc(64, 4 * N); pc = aligned_alloc(64, 4 * N);
    d0 = aligned_alloc(64, 4 * N); d1 = aligned_alloc(64, 4 * N);
    ys0 = aligned_alloc(64, 4 * N); ys1 = aligned_alloc(64, 4 * N);
    cout2 = aligned_alloc(64, N); pc2 = aligned_alloc(64, 4 * N); mc = aligned_alloc(64, N); vc = aligned_alloc(64, N); cout = aligned_alloc(64, N);
    ma = malloc(4 * nb); va = malloc(4 * nb); mx0 = malloc(4 * nb); mx1 = malloc(4 * nb);
    fo_f8_init(&q[0], 1); fo_f8_init(&q[1], 0);
    memset(mc, 0, N); memset(vc, 0, N);
    for (ptrdiff_t b = 0; b < nb; b++) ma[b] = va[b] = 0;
    for (ptrdiff_t i = 0; i < N; i++) p[i] = gauss();
    /* 10 Adam steps from zero state, lr 1e-3 */
    for (int t = 1; t <= 10; t++) {
        for (ptrdiff_t i = 0; i < N; i++) g[i] = 1e-2f * gauss();
        h = (AdamHyper_f32){1.0f, 1e-3f / (1 - powf(0.9f, t)), 1.0f / sqrtf(1 - powf(0.999f, t)), 0.9f, 0.1f,
                            0.999f, 0.001f, 1e-8f, 0, 1, 0, 0};
        fo_adam_f8_mode(p, g, mc, ma, vc, va, N, q, &h, MODE, KIND);
    }
    fo_adam_vec_init(&A, &h);
    /* the decoded state, the new state and its absmax per block */
    fo_f8_dv v0 = fo_f8_dv_init(&q[0]), v1 = fo_f8_dv_init(&q[1]);
    for (ptrdiff_t b = 0; b < nb; b++) {
        float D0 = fo_f8_scale(&q[0], ma[b]), D1 = fo_f8_scale(&q[1], va[b]);
        uint32_t a0 = 0, a1 = 0;
        for (int i = 0; i < 256; i++) {
            ptrdiff_t k = 256 * b + i;
            d0[k] = fo_f8_dec(&v0, mc[k], D0); d1[k] = fo_f8_dec(&v1, vc[k], D1);
            fo_adam_state_f32(&h, MODE, g[k], p[k], d0[k], d1[k], &ys0[k], &ys1[k]);
            uint32_t t = fo_f2u(ys0[k]) & 0x7fffffffu; a0 = t > a0 ? t : a0;
            t = fo_f2u(ys1[k]) & 0x7fffffffu; a1 = t > a1 ? t : a1;
        }
        mx0[b] = a0; mx1[b] = a1;
    }
    memcpy(pc, p, 4 * N); memcpy(pc2, p, 4 * N);
    pthread_barrier_init(&bar, NULL, T);
    pthread_t th[64];
    for (int t = 1; t < T; t++) pthread_create(&th[t], NULL, worker, (void*)(intptr_t)t);
    only = getenv("F8_PHASES");
    printf("n=%ld threads=%d reps=%d W=%d clock=%s\n", (long)N, T, REPS, FO_W, cpuclock ? "cpu" : "wall");
    /* (the full pass and the roofline keep running on the evolving state: fine for timing) */
    PHASE("full           ", ph_full);
    PHASE("roofline       ", ph_roof);
    PHASE("roofline 1pass ", ph_roof1);
    PHASE("roofline 256   ", ph_roof256);
    PHASE("pass 1         ", ph_pass1);
    PHASE("pass 1 dec8    ", ph_pass1_8);
    PHASE("pass 2         ", ph_pass2);
    PHASE("pass 2 plain   ", ph_pass2_plain);
    PHASE("varA p in 1    ", ph_varA);
    PHASE("varB codes 1st ", ph_varB);
    PHASE("varP pipelined ", ph_varP);
    PHASE("decode m+v     ", ph_dec);
    PHASE("state+absmax   ", ph_state);
    PHASE("param          ", ph_param);
    PHASE("encode m       ", ph_encm);
    PHASE("encode v       ", ph_encv);
    quit = 1;
    pthread_barrier_wait(&bar);
    for (int t = 1; t < T; t++) pthread_join(th[t], NULL);
    printf("(sink %u)\n", sink);
    return 0;
}
