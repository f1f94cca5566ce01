/* The int8 default maps by arithmetic instead of tables (issue 23): checks and times.
 * The figures and the verdict (slower, not used by the kernels) are in src/kernels/fo_lowbit.h.
 *
 *   check    the arithmetic decode (i8arith.h) against both maps' 256 values, bit for bit;
 *            with I8_CHECK_ENC=NR the arithmetic encoder (enc_arith: the piecewise-linear
 *            candidate of FO_LB_FAST's rule, then one exact correction) against the
 *            definition for every float32 x in [-1, 1] (absmax 1) and NR random (x, absmax),
 *            with the candidate alone as the control (it must differ)
 *   equal    one pass of the kernels' int8 Adam from the dumped state: a hash of the
 *            parameters and codes (the same in both builds below), and the arithmetic
 *            encoder's codes against the kernels' on the new state
 *   times    one thread, N elements (default 64K) of the state of
 *            benchmarks/lowbit_phases_dump.py, best of 7 batches of REPS: the whole pass
 *            (fo_adam_int8_mode) with the build's decode; the decode of both buffers by the
 *            table (fo_vlut, the kernels'), by arithmetic (exact) and by one fma per lane (wrong
 *            values, a lower bound); each buffer's encoder: the kernels' (tables), enc_arith,
 *            and the candidate alone (wrong near thresholds, a lower bound)
 * Build twice, the kernels' decode in the pass and the exact arithmetic one (-DARITH_PASS,
 * through fo_lowbit.h's FO_LB_VDEC_HOOK), and run the two alternately (thread CPU time on a
 * loaded machine: LBP_CLOCK=cpu):
 *
 *   python benchmarks/lowbit_phases_dump.py /tmp/state.bin
 *   gcc -O3 -fno-math-errno -fno-trapping-math -std=c11 -march=x86-64-v3 -Isrc/kernels \
 *       -Isrc/common -Ibuild/cython/avx2/src/kernels -Ibenchmarks/c [-DARITH_PASS] \
 *       benchmarks/c/i8arith.c -o i8arith -lm
 *   LBP_CLOCK=cpu ./i8arith /tmp/state.bin [REPS [N]]
 *   I8_CHECK_ENC=20000000 ./i8arith /tmp/state.bin 1 256     # ~3 min of CPU
 * It exits 1 when a check fails. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include "i8arith.h"
static fo_adec AD[2];
static const float* V1;   /* the unsigned map's values */
#ifdef ARITH_PASS
#define FO_LB_VDEC_HOOK(v, c) fo_adec8((v) == V1 ? &AD[1] : &AD[0], (c), 1)
#endif
#include "fo_lowbit.h"
FO_PASSES2(adam, AdamHyper)

/* The encoder by arithmetic with one exact correction: the candidate code k of the
   piecewise-linear rule (fo_vcode_raw: region, fixed-point index, sign; FO_LB_FAST's rule
   without its flags and recompute), then k + (x/d > t[k]) - (x/d <= t[k-1]) by the true
   quotient and two threshold lookups (tt[k + 1] = t[k], tt[0] = -inf, tt[256] = +inf).
   Exact when the candidate is within one code of the definition's (checked below). */
static inline fo_vi enc_arith(fo_vi u, const fo_venc* E, const uint32_t* tt, const int posonly) {
    unsigned bad;
    fo_vi k = fo_vcode_raw(u, E, posonly, &bad);
    fo_vf x = FO_PS(div)(FO_SI2PS(u), E->d);
    fo_vf lo = FO_SI2PS(fo_lut8x32(tt, k)), hi = FO_SI2PS(fo_lut8x32(tt + 1, k));
    k = FO_EPI32(sub)(k, FO_SI(castps)(FO_PS(cmp)(x, hi, _CMP_GT_OQ)));
    return FO_EPI32(add)(k, FO_SI(castps)(FO_PS(cmp)(x, lo, _CMP_LE_OQ)));
}
static inline fo_vi enc_nofix(fo_vi u, const fo_venc* E, const int posonly) {
    unsigned bad;
    return fo_vcode_raw(u, E, posonly, &bad);
}
static void mk_tt(const fo_qtab* q, uint32_t* tt) {
    tt[0] = 0xff800000u; tt[256] = 0x7f800000u;
    for (int k = 0; k < 255; k++)
        tt[k + 1] = fo_f2u((float)(((double)q->values[k] + (double)q->values[k + 1]) / 2));
}
/* enc_arith against the definition, #{k : t[k] < x / d} (fo_count_below, a binary search of
   the 255 float32 midpoints), for every float32 x in [-1, 1] with d = 1 (both zeros, the
   subnormals, every midpoint itself: the ties) and for NR random (x, d), x in [-d, d]: the
   number of lanes that differ; fix = 0: of the candidate alone (the control: it must differ) */
static long check_enc(const fo_qtab* q, const uint32_t* tt, long NR, const int fix) {
    long bad = 0;
    fo_venc E;
    float t[255];
    memcpy(t, tt + 1, sizeof t);
    fo_venc_init(&E, q, 1.0f);
    for (int sign = 0; sign < 2; sign++)
        for (uint32_t base = 0; base <= 0x3f800000u; base += 8) {
            fo_vi u = FO_SI(or)(fo_viota(base), FO_VSET1I(sign ? 0x80000000u : 0u));
            FO_ALIGNED(32) int32_t ks[8];
            FO_SI(store)((void*)ks, fix ? enc_arith(u, &E, tt, q->posonly) : enc_nofix(u, &E, q->posonly));
            for (int l = 0; l < 8; l++) {
                uint32_t b = base + l;
                if (b > 0x3f800000u) continue;
                bad += ks[l] != fo_count_below(t, fo_u2f(b | (sign ? 0x80000000u : 0u)));
            }
        }
    uint64_t s = 12345;
    for (long r = 0; r < NR; r += 8) {
        s = fo_splitmix64(s);
        float d = fo_u2f(0x30000000u + (uint32_t)(s % 0x1f800000u));    /* absmax in [2^-31, 2^32) */
        fo_venc_init(&E, q, d);
        FO_ALIGNED(32) uint32_t us[8]; FO_ALIGNED(32) int32_t ks[8];
        for (int l = 0; l < 8; l++) {
            s = fo_splitmix64(s);
            float x = d * fo_u2f((uint32_t)(s % 0x3f800001u)) * ((s >> 63) ? -1.0f : 1.0f);
            if (fabsf(x) > d) x = d;
            us[l] = fo_f2u(x);
        }
        {
            fo_vi uv = FO_SI(load)((const void*)us);
            FO_SI(store)((void*)ks, fix ? enc_arith(uv, &E, tt, q->posonly) : enc_nofix(uv, &E, q->posonly));
        }
        for (int l = 0; l < 8; l++) bad += ks[l] != fo_count_below(t, fo_u2f(us[l]) / d);
    }
    return bad;
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
    fo_adec_init(&AD[0], 1); fo_adec_init(&AD[1], 0); V1 = q[1].values;
    /* check: every code of both maps */
    int bad = 0;
    for (int j = 0; j < 2; j++) {
        uint8_t c[256];
        for (int k = 0; k < 256; k++) c[k] = (uint8_t)k;
        for (int k = 0; k < 256; k += 8) {
            float o[8];
            _mm256_storeu_ps(o, fo_adec8(&AD[j], c + k, 1));
            for (int l = 0; l < 8; l++) bad += memcmp(&o[l], &q[j].values[k + l], 4) != 0;
        }
    }
    printf("check: %d of 512 values differ from the tables\n", bad);
    uint32_t n; rd(f, &n, 4);
    size_t nb = (n + 255) / 256;
    float *p = aligned_alloc(64, 4 * n), *g = aligned_alloc(64, 4 * n), *ma = malloc(4 * nb), *va = malloc(4 * nb);
    uint8_t *mc = aligned_alloc(64, n), *vc = aligned_alloc(64, n);
    rd(f, p, 4 * n); rd(f, g, 4 * n); rd(f, mc, n); rd(f, ma, 4 * nb); rd(f, vc, n); rd(f, va, 4 * nb);
    fo_lowbit_init();
    if (nuse > n) nuse = n;
    nb = nuse / 256;
    AdamHyper_f32 h = {1.0f, 1e-3f / (1 - powf(0.9f, 10)), 1.0f / sqrtf(1 - powf(0.999f, 10)), 0.9f, 0.1f, 0.999f, 0.001f, 1e-8f, 0, 1, 0, 0};
    double t;
    float* pc = aligned_alloc(64, 4 * nuse); memcpy(pc, p, 4 * nuse);
    uint8_t *mcc = aligned_alloc(64, nuse), *vcc = aligned_alloc(64, nuse); float *mac = malloc(4 * nb), *vac = malloc(4 * nb);
    memcpy(mcc, mc, nuse); memcpy(vcc, vc, nuse); memcpy(mac, ma, 4 * nb); memcpy(vac, va, 4 * nb);
    /* the pass's output agrees with the table decode's (one step from the same state) */
    {
        float* p1 = aligned_alloc(64, 4 * nuse); memcpy(p1, p, 4 * nuse);
        fo_adam_int8_mode(p1, g, mcc, mac, vcc, vac, nuse, q, &h, 0, 0);
        uint64_t hsh = 1469598103934665603ull;
        for (ptrdiff_t k = 0; k < nuse; k++) { uint32_t u = fo_f2u(p1[k]); hsh = (hsh ^ u ^ ((uint64_t)mcc[k] << 32) ^ ((uint64_t)vcc[k] << 40)) * 1099511628211ull; }
        printf("one step's hash %016llx (the same in both builds: the same bits)\n", (unsigned long long)hsh);
        memcpy(mcc, mc, nuse); memcpy(vcc, vc, nuse); memcpy(mac, ma, 4 * nb); memcpy(vac, va, 4 * nb);
        free(p1);
    }
#ifdef ARITH_PASS
    const char* tag = "arith";
#else
    const char* tag = "table";
#endif
    BEST(reps, t, fo_adam_int8_mode(pc, g, mcc, mac, vcc, vac, nuse, q, &h, 0, 0));
    printf("full (%s decode) %.3f ns/elem\n", tag, 1e9 * t / nuse);
    FO_ALIGNED(64) float db0[256], db1[256];
    uint32_t sink = 0;
    BEST(reps, t, for (size_t b = 0; b < nb; b++) {
         for (int i = 0; i < 256; i += 8) { FO_PS(store)(db0 + i, fo_vlut(q[0].values, mc + 256 * b + i)); FO_PS(store)(db1 + i, fo_vlut(q[1].values, vc + 256 * b + i)); }
         sink += fo_f2u(db0[b & 255]) + fo_f2u(db1[b & 255]); });
    printf("decode m+v table  %.3f\n", 1e9 * t / nuse);
    BEST(reps, t, for (size_t b = 0; b < nb; b++) {
         for (int i = 0; i < 256; i += 8) { FO_PS(store)(db0 + i, fo_adec8(&AD[0], mc + 256 * b + i, 1)); FO_PS(store)(db1 + i, fo_adec8(&AD[1], vc + 256 * b + i, 1)); }
         sink += fo_f2u(db0[b & 255]) + fo_f2u(db1[b & 255]); });
    printf("decode m+v arith  %.3f\n", 1e9 * t / nuse);
    BEST(reps, t, for (size_t b = 0; b < nb; b++) {
         for (int i = 0; i < 256; i += 8) { FO_PS(store)(db0 + i, fo_adec8(&AD[0], mc + 256 * b + i, 0)); FO_PS(store)(db1 + i, fo_adec8(&AD[1], vc + 256 * b + i, 0)); }
         sink += fo_f2u(db0[b & 255]) + fo_f2u(db1[b & 255]); });
    printf("decode m+v 1-fma  %.3f (wrong values: a lower bound)\n", 1e9 * t / nuse);
    /* the encoders, on the new state of one step (as lowbit_phases.c) */
    float *y0 = aligned_alloc(64, 4 * nuse), *y1 = aligned_alloc(64, 4 * nuse);
    uint32_t *mx0 = malloc(4 * nb), *mx1 = malloc(4 * nb);
    for (size_t b = 0; b < nb; b++) {
        uint32_t m0 = 0, m1 = 0;
        for (int i = 0; i < 256; i++) {
            size_t k = 256 * b + i;
            float dm = q[0].values[mc[k]] * ma[b], dv = q[1].values[vc[k]] * va[b];
            fo_adam_state_f32(&h, 0, g[k], p[k], dm, dv, &y0[k], &y1[k]);
            uint32_t t2 = fo_f2u(y0[k]) & 0x7fffffffu; m0 = t2 > m0 ? t2 : m0;
            t2 = fo_f2u(y1[k]) & 0x7fffffffu; m1 = t2 > m1 ? t2 : m1;
        }
        mx0[b] = m0; mx1[b] = m1;
    }
    uint32_t tt[2][257];
    mk_tt(&q[0], tt[0]); mk_tt(&q[1], tt[1]);
    uint8_t* cout = aligned_alloc(64, nuse);
    uint8_t* cref = aligned_alloc(64, nuse);
    for (int j = 0; j < 2; j++) {
        const float* y = j ? y1 : y0;
        /* same codes as the kernels' encoder on this state */
        long diff = 0;
        for (size_t b = 0; b < nb; b++) { fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
            for (int i = 0; i < 256; i += 4 * FO_W) {
                fo_int8_vcodes4(cref + 256 * b + i, &E, FO_PS(load)(y + 256 * b + i), FO_PS(load)(y + 256 * b + i + 8), FO_PS(load)(y + 256 * b + i + 16), FO_PS(load)(y + 256 * b + i + 24), j);
                fo_vcodes4(cout + 256 * b + i, enc_arith(FO_SI(load)((const void*)(y + 256 * b + i)), &E, tt[j], j), enc_arith(FO_SI(load)((const void*)(y + 256 * b + i + 8)), &E, tt[j], j),
                           enc_arith(FO_SI(load)((const void*)(y + 256 * b + i + 16)), &E, tt[j], j), enc_arith(FO_SI(load)((const void*)(y + 256 * b + i + 24)), &E, tt[j], j)); } }
        for (ptrdiff_t k = 0; k < nuse; k++) diff += cout[k] != cref[k];
        printf("encode %s: arith codes differ from the kernels' in %ld of %ld\n", j ? "v" : "m", diff, (long)nuse);
        bad += diff != 0;
        BEST(reps, t, for (size_t b = 0; b < nb; b++) { fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
             for (int i = 0; i < 256; i += 4 * FO_W) fo_int8_vcodes4(cout + 256 * b + i, &E, FO_PS(load)(y + 256 * b + i), FO_PS(load)(y + 256 * b + i + 8), FO_PS(load)(y + 256 * b + i + 16), FO_PS(load)(y + 256 * b + i + 24), j); });
        printf("encode %s table   %.3f\n", j ? "v" : "m", 1e9 * t / nuse);
        BEST(reps, t, for (size_t b = 0; b < nb; b++) { fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
             for (int i = 0; i < 256; i += 4 * FO_W) fo_vcodes4(cout + 256 * b + i, enc_arith(FO_SI(load)((const void*)(y + 256 * b + i)), &E, tt[j], j), enc_arith(FO_SI(load)((const void*)(y + 256 * b + i + 8)), &E, tt[j], j),
                           enc_arith(FO_SI(load)((const void*)(y + 256 * b + i + 16)), &E, tt[j], j), enc_arith(FO_SI(load)((const void*)(y + 256 * b + i + 24)), &E, tt[j], j)); });
        printf("encode %s arith   %.3f\n", j ? "v" : "m", 1e9 * t / nuse);
        BEST(reps, t, for (size_t b = 0; b < nb; b++) { fo_venc E; fo_venc_init(&E, &q[j], fo_divisor(j ? mx1[b] : mx0[b]));
             for (int i = 0; i < 256; i += 4 * FO_W) fo_vcodes4(cout + 256 * b + i, enc_nofix(FO_SI(load)((const void*)(y + 256 * b + i)), &E, j), enc_nofix(FO_SI(load)((const void*)(y + 256 * b + i + 8)), &E, j),
                           enc_nofix(FO_SI(load)((const void*)(y + 256 * b + i + 16)), &E, j), enc_nofix(FO_SI(load)((const void*)(y + 256 * b + i + 24)), &E, j)); });
        printf("encode %s cand.   %.3f (the candidate alone: wrong near thresholds, a lower bound)\n", j ? "v" : "m", 1e9 * t / nuse);
    }
    /* I8_CHECK_ENC=NR: the encoder's exhaustive check (~45 s of CPU per map and variant) */
    if (getenv("I8_CHECK_ENC")) {
        long nr = atol(getenv("I8_CHECK_ENC"));
        for (int j = 0; j < 2; j++) for (int fix = 1; fix >= 0; fix--) {
            const long nd = check_enc(&q[j], tt[j], nr, fix);
            printf("check encode %s%s: %ld lanes differ from the definition (every float32 in [-1, 1], d = 1; %ld random (x, d))\n",
                   j ? "v" : "m", fix ? "" : " (control: the candidate alone)", nd, nr);
            bad += fix ? nd != 0 : nd == 0;
        }
    }
    printf("(sink %u)\n", sink);
    return bad != 0;
}
