/* The int8 Adam pass of src/kernels/fo_lowbit.h phase by phase (issue 23): one thread, the
 * state of a real Adam run (benchmarks/lowbit_phases_dump.py writes it with the maps' kernel
 * tables), each phase timed alone over n elements (best of 7 batches of REPS):
 *   full            fo_adam_int8_mode, the kernels' pass (decode, update, absmax, codes)
 *   decode m+v      both buffers' values: fo_vdecode_vbmi (avx512 build on a CPU with
 *                   AVX-512 VBMI), else fo_vlut per vector (stored to L1)
 *   state+absmax    the new moments from decoded ones, stored, and their absmax
 *   param           the parameter update from the new moments (square root, division)
 *   encode m / v    fo_int8_vcodes4 of each buffer (the kernels' encoder), and where it is
 *                   the arithmetic rule (FO_LB_FAST), without the exact recompute (nofix)
 * and how many elements the encoder flags for the exact recompute.  Build it against the
 * sources (not build/cython's copies) and one rendered fo_hyper.h, at the avx512 level
 * (or the avx2 level: -march=x86-64-v3 and build/cython/avx2's fo_hyper.h; -DFO_LB_FAST=1 etc.
 * select the variants that fo_lowbit.h describes):
 *
 *   python benchmarks/lowbit_phases_dump.py /tmp/state.bin
 *   gcc -O3 -fno-math-errno -fno-trapping-math -std=c11 -march=x86-64-v4 \
 *       -mprefer-vector-width=512 -Isrc/kernels -Isrc/common -Ibuild/cython/avx512/src/kernels \
 *       benchmarks/c/lowbit_phases.c -o lowbit_phases -lm
 *   ./lowbit_phases /tmp/state.bin [REPS [N]]
 *
 * Prints ns per element (LBP_CLOCK=cpu: of the thread's CPU time, for a loaded machine).
 * -I<another copy of src/kernels> first compares two versions. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fo_lowbit.h"
FO_PASSES2(adam, AdamHyper)

/* 256 values of one block: the kernels' decode (fo_vpredecode where it decodes up front,
   else fo_vlut per vector) */
static inline void decode_block(const fo_qtab* q, const uint8_t* c, float* out) {
    if (fo_vpredecode(q, c, out, FO_QBLOCK)) return;
    for (int i = 0; i < FO_QBLOCK; i += FO_W) FO_PS(store)(out + i, fo_vlut(q->values, c + i));
}

typedef struct { uint32_t hdr[6]; float values[256]; uint32_t *tab, *tabn; uint8_t planes[1024]; uint32_t fast[40]; } mapd;
static void rd(FILE* f, void* p, size_t n) { if (fread(p, 1, n, f) != n) { perror("read"); exit(1); } }
static void readmap(FILE* f, mapd* m, fo_qtab* q) {
    rd(f, m->hdr, 24); rd(f, m->values, 1024);
    m->tab = malloc(4 * m->hdr[5]); m->tabn = malloc(4 * m->hdr[5]);
    rd(f, m->tab, 4 * m->hdr[5]); rd(f, m->tabn, 4 * m->hdr[5]); rd(f, m->planes, 1024); rd(f, m->fast, 160);
    uint32_t shift = m->hdr[0], lo = m->hdr[1], nbm = m->hdr[2];
    q->values = m->values; q->tab = m->tab; q->shift = shift; q->lo = lo; q->nbm = nbm;
    q->LO = lo << shift; q->HI = ((lo + nbm) << shift) - 1; q->mask = (1u << shift) - 1; q->zero = m->hdr[3];
    q->tabn = m->tabn; q->posonly = m->hdr[4]; q->planes = m->planes; q->fast = m->fast;
}
/* LBP_CLOCK=cpu: the thread's CPU time (on a loaded machine, leaves out the time it did not run) */
static clockid_t clk = CLOCK_MONOTONIC;
static double now(void) { struct timespec t; clock_gettime(clk, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
#define BEST(reps, out, ...) do { double b = 1e9; for (int r_ = 0; r_ < 7; r_++) { double t0 = now(); for (int k_ = 0; k_ < reps; k_++) { __VA_ARGS__; } double t1 = (now() - t0) / reps; if (t1 < b) b = t1; } out = b; } while (0)

int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb");
    if (getenv("LBP_CLOCK") && !strcmp(getenv("LBP_CLOCK"), "cpu")) clk = CLOCK_THREAD_CPUTIME_ID;
    int reps = argc > 2 ? atoi(argv[2]) : 50;
    ptrdiff_t nuse = argc > 3 ? atol(argv[3]) : 65536;
    mapd md[2]; fo_qtab q[2];
    readmap(f, &md[0], &q[0]); readmap(f, &md[1], &q[1]);
    uint32_t n; rd(f, &n, 4);
    size_t nb = (n + 255) / 256;
    float *p = aligned_alloc(64, 4 * n), *g = aligned_alloc(64, 4 * n), *ma = malloc(4 * nb), *va = malloc(4 * nb);
    uint8_t *mc = aligned_alloc(64, n), *vc = aligned_alloc(64, n);
    rd(f, p, 4 * n); rd(f, g, 4 * n); rd(f, mc, n); rd(f, ma, 4 * nb); rd(f, vc, n); rd(f, va, 4 * nb);
    fo_lowbit_init();
    if (nuse > n) nuse = n;
    nb = nuse / 256;
    AdamHyper_f32 h = {1.0f, 1e-3f / (1 - powf(0.9f, 10)), 1.0f / sqrtf(1 - powf(0.999f, 10)), 0.9f, 0.1f, 0.999f, 0.001f, 1e-8f, 0, 1, 0, 0};
    AdamHyper_vec A; fo_adam_vec_init(&A, &h);
    /* the decoded state and the new state, per element */
    float *d0 = aligned_alloc(64, 4 * nuse), *d1 = aligned_alloc(64, 4 * nuse), *y0 = aligned_alloc(64, 4 * nuse), *y1 = aligned_alloc(64, 4 * nuse);
    uint32_t *mx0 = malloc(4 * nb), *mx1 = malloc(4 * nb);
    uint8_t* cout = aligned_alloc(64, nuse);
    for (size_t b = 0; b < nb; b++) {
        decode_block(&q[0], mc + 256 * b, d0 + 256 * b);
        decode_block(&q[1], vc + 256 * b, d1 + 256 * b);
        uint32_t m0 = 0, m1 = 0;
        for (int i = 0; i < 256; i++) {
            size_t k = 256 * b + i;
            d0[k] *= ma[b]; d1[k] *= va[b];
            fo_adam_state_f32(&h, 0, g[k], p[k], d0[k], d1[k], &y0[k], &y1[k]);
            uint32_t t = fo_f2u(y0[k]) & 0x7fffffffu; m0 = t > m0 ? t : m0;
            t = fo_f2u(y1[k]) & 0x7fffffffu; m1 = t > m1 ? t : m1;
        }
        mx0[b] = m0; mx1[b] = m1;
    }
    /* flagged lanes */
    long fl[2] = {0, 0}, grp[2] = {0, 0};
    for (size_t b = 0; b < nb; b++) for (int j = 0; j < 2; j++) {
        fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
        const float* y = (j ? y1 : y0) + 256 * b;
        for (int i = 0; i < 256; i += 4 * FO_W) {
            unsigned bb; unsigned any = 0;
            for (int u = 0; u < 4; u++) { fo_vcode_mag(FO_SI(castps)(FO_PS(load)(y + i + u * FO_W)), &E, j, &bb); fl[j] += __builtin_popcount(bb); any |= bb; }
            grp[j] += any != 0;
        }
    }
    printf("n=%ld flagged m %.4f%% v %.4f%% ; 64-groups with a flag m %.2f%% v %.2f%%\n", (long)nuse,
           100.0 * fl[0] / nuse, 100.0 * fl[1] / nuse, 100.0 * grp[0] / (nuse / 64), 100.0 * grp[1] / (nuse / 64));
    double t;
    float* pc = aligned_alloc(64, 4 * nuse); memcpy(pc, p, 4 * nuse);
    uint8_t *mcc = aligned_alloc(64, nuse), *vcc = aligned_alloc(64, nuse); float *mac = malloc(4 * nb), *vac = malloc(4 * nb);
    #define RESET() (memcpy(mcc, mc, nuse), memcpy(vcc, vc, nuse), memcpy(mac, ma, 4 * nb), memcpy(vac, va, 4 * nb))
    RESET();
    BEST(reps, t, fo_adam_int8_mode(pc, g, mcc, mac, vcc, vac, nuse, q, &h, 0, 0));
    printf("full           %.3f ns/elem\n", 1e9 * t / nuse);
    FO_ALIGNED(64) float db0[256], db1[256];
    uint32_t sink = 0;
    BEST(reps, t, for (size_t b = 0; b < nb; b++) { decode_block(&q[0], mc + 256 * b, db0); decode_block(&q[1], vc + 256 * b, db1); sink += fo_f2u(db0[b & 255]) + fo_f2u(db1[b & 255]); });
    printf("decode m+v     %.3f\n", 1e9 * t / nuse);
    FO_ALIGNED(64) float yb0[256], yb1[256];
    BEST(reps, t, for (size_t b = 0; b < nb; b++) { fo_vi a0 = FO_SI(setzero)(), a1 = FO_SI(setzero)(); fo_vf va0 = FO_PS(set1)(ma[b]), va1 = FO_PS(set1)(va[b]);
         for (int i = 0; i < 256; i += FO_W) { size_t k = 256 * b + i; fo_vf m, v;
           fo_adam_state_vec(&A, 0, FO_PS(loadu)(g + k), FO_PS(loadu)(pc + k), FO_PS(mul)(FO_PS(load)(d0 + k), va0), FO_PS(mul)(FO_PS(load)(d1 + k), va1), &m, &v);
           FO_PS(store)(yb0 + i, m); FO_PS(store)(yb1 + i, v); a0 = FO_EPU32(max)(a0, fo_vabsbits(m)); a1 = FO_EPU32(max)(a1, fo_vabsbits(v)); }
         sink += fo_vhmax(a0) + fo_vhmax(a1); });
    printf("state+absmax   %.3f\n", 1e9 * t / nuse);
    BEST(reps, t, for (size_t b = 0; b < nb; b++) { for (int i = 0; i < 256; i += FO_W) { size_t k = 256 * b + i;
           FO_PS(storeu)(pc + k, fo_adam_param_vec(&A, 0, FO_PS(loadu)(g + k), FO_PS(loadu)(pc + k), FO_PS(load)(y0 + k), FO_PS(load)(y1 + k))); } });
    printf("param          %.3f\n", 1e9 * t / nuse);
    for (int j = 0; j < 2; j++) {
        BEST(reps, t, for (size_t b = 0; b < nb; b++) { fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
             const float* y = (j ? y1 : y0) + 256 * b;
             for (int i = 0; i < 256; i += 4 * FO_W) fo_int8_vcodes4(cout + 256 * b + i, &E, FO_PS(load)(y + i), FO_PS(load)(y + i + FO_W), FO_PS(load)(y + i + 2 * FO_W), FO_PS(load)(y + i + 3 * FO_W), j); });
        printf("encode %s       %.3f\n", j ? "v" : "m", 1e9 * t / nuse);
    }
    /* the encode without the recompute (flags ignored), when the build encodes by the rule */
    for (int j = 0; j < 2 && FO_LB_FAST; j++) {
        BEST(reps, t, for (size_t b = 0; b < nb; b++) { fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
             const float* y = (j ? y1 : y0) + 256 * b; unsigned bb; unsigned acc = 0;
             for (int i = 0; i < 256; i += 4 * FO_W) { fo_vi p0 = fo_vcode_mag(FO_SI(castps)(FO_PS(load)(y + i)), &E, j, &bb); acc |= bb;
               fo_vi p1 = fo_vcode_mag(FO_SI(castps)(FO_PS(load)(y + i + FO_W)), &E, j, &bb); acc |= bb;
               fo_vi p2 = fo_vcode_mag(FO_SI(castps)(FO_PS(load)(y + i + 2 * FO_W)), &E, j, &bb); acc |= bb;
               fo_vi p3 = fo_vcode_mag(FO_SI(castps)(FO_PS(load)(y + i + 3 * FO_W)), &E, j, &bb); acc |= bb;
               if (j) fo_vcodes4_hi(cout + 256 * b + i, p0, p1, p2, p3); else fo_vcodes4_signed(cout + 256 * b + i, p0, p1, p2, p3, FO_SI(castps)(FO_PS(load)(y + i)), FO_SI(castps)(FO_PS(load)(y + i + FO_W)), FO_SI(castps)(FO_PS(load)(y + i + 2 * FO_W)), FO_SI(castps)(FO_PS(load)(y + i + 3 * FO_W)), E.z8); }
             sink += acc; });
        printf("encode %s nofix %.3f\n", j ? "v" : "m", 1e9 * t / nuse);
    }
    printf("(sink %u)\n", sink);
    return 0;
}
