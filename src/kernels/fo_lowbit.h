/* fo_lowbit.h - the C of fastopt's low-precision optimizer state (the _lowbit module).
 *
 * Why a header: these are the hot loops of every optimizer of the kernel table with
 * low-precision state (fastopt/specs.py, lowbit=True) when the state is bfloat16 (stochastic
 * rounding) or block-wise int8 (dynamic quantization).  They are C, so they live in a C
 * file: compilers, linters and editors see them, and one source is compiled at every
 * instruction-set level (fo_simd.h): 512-bit vectors in the avx512 build, 256-bit in the
 * avx2 build, the scalar loops alone in the baseline build.  The formats are specified in
 * fastopt/kernels/_formats.py; the NumPy twins in fastopt/reference/lowbit.py give the same
 * bits (tests/test_lowbit*.py, every level).
 *
 * How: nothing here is particular to an optimizer.  Its update rule is fo_rules.h's (the
 * same one the dense float32/float64 loops run: fo_<name>_f32 for the baseline and every
 * tail, fo_<name>_vec for the vectors, float32 operations in the same order and never
 * contracted: the modules build with -std=c11, so -ffp-contract=off), and the passes below
 * are macros over the kernel, for one state buffer (FO_PASSES1) or two (FO_PASSES2),
 * instantiated by _lowbit.pyx.tp for every such row of the table:
 *   bfloat16  one pass: widen, update, hash the global index, round (fo_<name>_bf16_mode);
 *   int8      per block of FO_QBLOCK = 256 elements: (1) decode, the new state into L1 and
 *             its absmax; (2) the parameter update fused with the first buffer's codes (a
 *             rule given in halves: FO_SPLIT_<name>; else the update is in pass 1);
 *             (3) the other buffer's codes (fo_<name>_int8_mode).  A partial block: decode +
 *             update + absmax in one pass, then the codes.
 *   float8    the same passes over fo_f8.h's codec (which gives their measured costs).
 *             The two-buffer decode pass of a full block runs two vectors per iteration
 *             with two absmax accumulators each (Zen 4, one thread, in cache: Adam int8 1.07
 *             against 1.13 ns/element; float8 within noise).
 * A handful of operations whose form differs by width (masks, narrowing, lane shuffles,
 * table lookups) have one small helper per width below; everything else is written once.
 *
 * Table lookups: the decode takes values[code] and the encoder a bucket entry tabn[b], by
 * scalar loads inserted into lanes (8 at a time; a 512-bit vector is built from two such
 * halves).  On this project's AMD Zen 3 and Zen 4 machines the gather instructions were
 * slower at both widths (Zen 4, avx512 build, Adam int8: 1.9 ns/element with gathers for
 * the values, 1.55 with loads; the buckets alone: 0.51 ns/element against 0.44), and so was
 * a 512-bit decode by two-table permutes of the 256 float values (2.2); FO_LB_GATHER_VALUES=1
 * / FO_LB_GATHER_BUCKETS=1 select the gathers (at either width), to measure on other CPUs
 * (benchmarks/lowbit_elem.py --so; benchmarks/c/lowbit_phases.c).  Where the CPU has AVX-512 VBMI (checked at run time,
 * fo_lowbit_init), the avx512 build decodes a full block's codes up front by byte permutes of
 * the values' four byte planes held in registers (fo_vdecode_vbmi, 0.14 ns/code against
 * 0.21).  The encoder's bucket tables (2944 and 6144 entries) do not fit in registers, and a
 * branchless search of the 255 thresholds by permutes measured 2x slower (0.88 ns/element
 * against 0.44); the avx512 build encodes the default maps without a table instead
 * (fo_vcode_fast: a piecewise-linear index from |x| * fl(1/absmax), the ~0.1% of elements
 * near a threshold recomputed exactly), the avx2 build keeps the scalar lookups (FO_LB_FAST).
 * Per 4W codes the kernels' encoder (fo_vcodes4_fast) takes the codes' bytes straight from
 * the indices' high halves (two word permutes and a pack), applies a signed map's sign to
 * the 64 bytes at once, and tests the flags once (Zen 4, one thread, 256K in cache, Adam
 * int8: 1.16 ns/element against 1.27 with a sign, a pack and a test per vector).  512 bits pay little for int8: Zen 4, one thread,
 * 256K elements in cache, Adam / RMSprop / SGD int8 1.44 / 0.79 / 0.70 ns/element at 512
 * bits with the VBMI decode against 1.48 / 0.78 / 0.72 at 256, and 1.52-1.63 / 0.84 /
 * 0.80-0.84 at 512 without it (the avx2 build's 256 bits are then as fast: on an AVX-512 CPU
 * without VBMI, FASTOPT_ISA=avx2 is an option for int8 state); bfloat16 Adam pays (0.47
 * against 0.64), and so do the dense loops (benchmarks/isa_levels.py).
 *
 * Where the int8 Adam pass's time goes (Zen 4, avx512 build, VBMI, one thread, 64K elements in
 * cache, the state of 30 Adam steps; benchmarks/c/lowbit_phases.c times these functions one
 * phase at a time, December): 1.04 ns/element in all; the decode of both buffers 0.135, the
 * new state and its absmax 0.15, the parameter update 0.28 (its square root and division), the
 * codes of m 0.30 and of v 0.28 (the phases overlap little: their sum is 1.15).  The recompute
 * path costs nothing measurable: 0.10% of the elements are flagged (6% of the groups of 64
 * codes), and the encoder with the flags ignored runs as fast.  The encoder is bound by its
 * permutes: per vector of 16, 18 operations, 5 of them table permutes (region, boundary, A, C,
 * H) plus a share of the packing's; without the A, C and H permutes (wrong codes, to measure)
 * it runs 35% faster (0.20 / 0.17).  Tried and dropped, the same bits each time: the region by
 * the 256-bit build's 16-bit arithmetic instead of the two-table permute (3% slower); the 4W
 * flags joined in mask registers (kunpck) instead of general registers (0-3% slower); a
 * software prefetch of the block 4 ahead (p, g, codes) in the quantized passes (16M, one
 * thread: int8 1.15x, float8 1.4x the time); at 256 bits the table encoder's quotient by a
 * corrected product, q0 = fl(x fl(1/d)) then fl(q0 + (x - q0 d) fl(1/d)) by two fma (the
 * correctly rounded quotient for absmax in [2^-40, 2^126): every x in [0, d] for 24 divisors,
 * 2.4e10 quotients, agreed with the division) instead of the division: 3-5% slower in the avx2
 * Adam int8 pass (the divider is not what bounds it; the scalar lookups are).
 *
 * The avx2 build on AMD Zen 3 (EPYC, family 25 model 1, AVX2 + FMA + F16C, no AVX-512; a
 * 2-vCPU KVM guest at ~2.45 GHz, shared: load average 5-7 during these runs, so thread CPU
 * time, best of 4-6 alternating runs; December, issue 23).  benchmarks/c/lowbit_phases.c,
 * one thread, 64K elements, the state of 30 Adam steps, ns/element: the pass 1.70-1.77; the
 * decode of both buffers (fo_vlut per vector) 0.48, the new state and its absmax 0.20, the
 * parameter update 0.33, the codes of m 0.49 and of v 0.43 (sum 1.93).  Every alternative
 * was slower, the same bits each time (pass / the phase it changes, same run):
 *   gathers for the values (vgatherdps)           2.18 / decode 0.85
 *   gathers for the buckets (vpgatherdd)           1.94 / codes m 0.57, v 0.50
 *   a full block decoded up front by scalar loads  1.88 / decode 0.54
 *   the decode's codes by byte loads (movzx each)  1.75 / decode 0.54
 *   the arithmetic encoder, FO_LB_FAST=1           1.79 / codes m 0.63, v 0.56 (0.58 / 0.51
 *                                                  with the recompute ignored)
 *   bucket entries by float inserts (vinsertps)    1.77 / codes m 0.52, v 0.45
 *   bucket indices through a stack store           1.93 / codes m 0.62
 *   ... and joined by unpacks instead of inserts   1.96 / codes m 0.61
 *   the quotient by two fma (above)                1.84 / codes m 0.54, v 0.47
 *   -mtune=znver3                                  1.75 against 1.70
 * and a software prefetch 4 or 8 blocks ahead (16M, one thread: 1.98 / 1.97 against 1.98).
 * The arithmetic encoder loses here to its four 8-entry permutes per vector: vpermd /
 * vpermps cost Zen 3 twice a vpshufb (0.20 against 0.10 ns per instruction, 8 independent
 * chains); vdivps ymm 0.47, vsqrtps ymm 0.79 ns per instruction.  benchmarks/lowbit_elem.py,
 * one thread, ns/element, tables against FO_LB_FAST=1: 256K Adam / RMSprop / SGD int8 1.80 /
 * 0.96 / 0.93 against 2.01 / 1.11 / 1.00; 16M 2.07 / 1.06 / 0.99 against 2.00 / 1.19 / 1.06
 * (float32 Adam 0.47 at 256K, 1.55 at 16M; float8 Adam 1.02, 1.10).  So the avx2 build keeps
 * the tables and the per-vector lookups on Zen 3 too; int8 Adam is bound by its four lookups
 * per element (~1 cycle each), not by memory (one thread, 16M: 1.96-2.36 ns/element over
 * the runs, against 1.78-1.80 at 256K).
 *
 * The default maps by arithmetic instead of tables (issue 23, Zen 3, December; tried, slower,
 * not used: benchmarks/c/i8arith.c and i8arith.h, which check and time it).  bitsandbytes'
 * maps are closed-form: per decade i = 0..6, N = 2^i (signed map) or 2^(i+1) (unsigned)
 * values fl(s_i/2 fl(b_j + b_{j+1})), s_i = fl32(10^(i-6)), b_k = fma(st, k, 0.1f) for
 * k < N/2 and fma(-st, N - k, 1) above, st = fl(0.9f / N) (torch's linspace).  The decode
 * from a code c: a = |c - 127| (signed) or c + 1, N = a's float32 with its mantissa cleared,
 * j = a - N, (st, s_i/2) by two 8-entry permutes indexed by a's exponent, the sign and the
 * zero code by one multiply: all 256 values of both maps bit for bit (with the fma; st k
 * rounded before the add, 21 / 31 of the values differ).  The encoder: the piecewise-linear
 * candidate of FO_LB_FAST's rule (fo_vcode_raw) and one correction, k + (x/d > t[k]) -
 * (x/d <= t[k-1]), by the true quotient and two threshold lookups: the definition's code for
 * every float32 x in [-1, 1] (d = 1; both zeros, subnormals, every midpoint) and 2e7 random
 * (x, d) (the candidate alone: 2.0e5 / 8.8e4 lanes wrong).  One thread, 64K elements, thread
 * CPU time, 3 alternating runs (load average 2.1), ns/element, arithmetic against tables:
 *   decode m+v     0.87-0.98 against 0.44-0.49 (one fma per lane after the same permutes,
 *                  wrong values, a lower bound: 0.43-0.44, no faster than the lookups)
 *   the pass with that decode        2.38-2.51 against 1.75-1.96 (the same bits)
 *   encode m       1.15-1.23 against 0.51-0.56 (the candidate alone: 0.51-0.57)
 *   encode v       1.04-1.14 against 0.44-0.46 (the candidate alone: 0.42-0.49)
 * The exact decode is ~27 vector operations per 8 codes on the FP/vector pipes (two fma pairs
 * and blends for b_j and b_{j+1}) where the lookup is 8 scalar loads and inserts; an
 * arithmetic encoder costs at least its candidate, which alone costs what the whole table
 * encoder does (a division, one lookup, a compare).  So neither moves int8 Adam toward the
 * ~1.2 ns/element it needs to match PyTorch's fused float32 Adam at 16M on this CPU.
 *
 * These functions trust their arguments: fastopt.kernels.lowbit checks them first.
 */
#ifndef FO_LOWBIT_H
#define FO_LOWBIT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fo_simd.h"
#include "fo_rules.h"

#define FO_QBLOCK 256  /* elements per int8 quantization block (one absmax each) */

#if defined(FO_IVEC)
#define FO_LB_VEC 1
#define FO_W (FO_VBYTES / 4)  /* float32 lanes: 16 (avx512) or 8 (avx2) */
#else
#define FO_LB_VEC 0
#endif

#ifndef FO_LB_GATHER_VALUES
#define FO_LB_GATHER_VALUES 0
#endif
#ifndef FO_LB_GATHER_BUCKETS
#define FO_LB_GATHER_BUCKETS 0
#endif

/* Whether the avx512 build decodes int8 codes with AVX-512 VBMI byte permutes
   (fo_vdecode_vbmi): 1 when the CPU has VBMI (fo_lowbit_init, at import), 0 otherwise or
   when switched off (fo_lowbit_set_vbmi: the tests compare both paths' bits).  Other
   builds: always 0. */
static int fo_lb_vbmi = 0;

/* Reads the CPU once; returns whether the VBMI decode is used. */
static inline int fo_lowbit_init(void) {
#if defined(FO_IVEC) && FO_VBYTES == 64 && defined(__GNUC__) && !defined(FO_LB_NO_VBMI)
    __builtin_cpu_init();
    fo_lb_vbmi = __builtin_cpu_supports("avx512vbmi") ? 1 : 0;
#endif
    return fo_lb_vbmi;
}

/* Turns the VBMI decode off (on = 0) or back on where the CPU has it; returns the state. */
static inline int fo_lowbit_set_vbmi(int on) {
    fo_lb_vbmi = 0;
    if (on) fo_lowbit_init();
    return fo_lb_vbmi;
}

/* The vector width these kernels run at, in bits (0: scalar loops only). */
static inline int fo_lowbit_vector_bits(void) {
#if FO_LB_VEC
    return FO_VBYTES * 8;
#else
    return 0;
#endif
}

/* ======================================================================= scalar pieces */

static inline uint32_t fo_f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float fo_u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* bfloat16 bits -> float32 (exact) */
static inline float fo_bf2f(uint16_t b) { return fo_u2f((uint32_t)b << 16); }

/* MurmurHash3's finalizer */
static inline uint32_t fo_fmix32(uint32_t h) {
    h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
    return h;
}

/* float32 -> bfloat16 bits, rounded up in magnitude when the low 16 bits plus inc (< 2^16)
   carry; NaN kept (quiet), inf kept (its low bits are zero). */
static inline uint16_t fo_bf16_sr(float x, uint32_t inc) {
    uint32_t u = fo_f2u(x);
    uint16_t q = (uint16_t)((u >> 16) | 0x40u);
    uint16_t s = (uint16_t)((u + inc) >> 16);
    return (u & 0x7fffffffu) > 0x7f800000u ? q : s;
}

static inline uint64_t fo_splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* the low 32 bits of the key of (seed, step) for global indices hi * 2^32 + ... */
static inline uint32_t fo_sr_key(uint64_t seed, uint64_t step, uint64_t hi) {
    return (uint32_t)fo_splitmix64(fo_splitmix64(fo_splitmix64(seed) ^ step) ^ hi);
}

/* ---- int8: a quantization map's tables (QuantMap.kernel_tables()) ----
   A value's float32 magnitude bits a, clamped to [LO, HI], select a bucket
   b = (a >> shift) - lo (+ nbm for negative values); tab[b] packs the code c of the
   bucket's lowest value (low 8 bits) and the bucket's one threshold t as its low
   magnitude bits (bits 8..31).  The code is c + (r > t) for a positive value,
   c + (r < t) for a negative one, r = a & mask: the count of thresholds below x. */
typedef struct {
    const float* values;     /* code -> value in [-1, 1] */
    const uint32_t* tab;     /* 2 * nbm packed buckets */
    uint32_t shift, lo, nbm, LO, HI, mask;
    uint8_t zero;            /* the code of 0 */
    /* the vector passes' copy of tab (_qtab_fast in _lowbit.pyx.tp): entry (t' << 8) | c
       with t' = t on the positive side, t ^ mask on the negative one (so "r < t" there is
       "r ^ mask > t'"); posonly: every negative-side entry is 0 and the lowest positive
       bucket's code is 0, so every negative value (and LO) takes code 0 */
    const uint32_t* tabn;
    int posonly;
    /* values' bytes as four planes of 256 (plane b: byte b of each value, little-endian):
       the avx512 build's in-register decode (fo_vdecode_vbmi) */
    const uint8_t* planes;
    /* the vector encoder's arithmetic rule (QuantMap.fast, _formats._fast_tables), NULL for
       a map without it: M, K0, S, z, signed, 3 unused, then per region (8) its upper
       boundary, A, C (float32 bits) and clamp H (fo_vcode_fast) */
    const uint32_t* fast;
} fo_qtab;

static inline uint8_t fo_code(float xn, const fo_qtab* q) {
    uint32_t u = fo_f2u(xn), a = u & 0x7fffffffu, neg = u >> 31;
    uint32_t ac = a < q->LO ? q->LO : (a > q->HI ? q->HI : a);
    uint32_t e = q->tab[(ac >> q->shift) - q->lo + (neg ? q->nbm : 0)];
    uint32_t c = e & 0xffu, t = e >> 8, r = ac & q->mask;
    return (uint8_t)(c + (neg ? (r < t) : (r > t)));
}

/* the index of x's lowest set bit (x != 0) */
static inline int fo_ctz64(uint64_t x) {
#if defined(__GNUC__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1u)) { x >>= 1; n++; }
    return n;
#endif
}

/* the largest |x| bits of x[0..n) */
static inline uint32_t fo_absmax_bits(const float* x, ptrdiff_t n) {
    uint32_t mx = 0, a;
    ptrdiff_t i;
    for (i = 0; i < n; i++) { a = fo_f2u(x[i]) & 0x7fffffffu; mx = a > mx ? a : mx; }
    return mx;
}

/* absmax bits -> (absmax, divisor); 1 when the block is all zeros */
static inline float fo_divisor(uint32_t mx) { return mx ? fo_u2f(mx) : 1.0f; }

#if FO_LB_VEC
/* ======================================================================= vector pieces */

typedef fo_ps fo_vf;
typedef fo_si fo_vi;
#define FO_VSET1I(x) FO_EPI32(set1)((int)(x))
#if FO_VBYTES == 64
#define FO_LB16(op) _mm512_##op##_epi16
#define FO_LBU16(op) _mm512_##op##_epu16
#define FO_LB_CVTT(x) _mm512_cvttps_epi32(x)
#else
#define FO_LB16(op) _mm256_##op##_epi16
#define FO_LBU16(op) _mm256_##op##_epu16
#define FO_LB_CVTT(x) _mm256_cvttps_epi32(x)
#endif

/* ---- the width-specific helpers ---- */
/* t[c[0..7]] (scalar loads into lanes) */
FO_INLINE __m256 fo_lut8f(const float* t, const uint8_t* c) {
    uint64_t w;
    memcpy(&w, c, 8);
    __m128 a = _mm_setr_ps(t[w & 255], t[(w >> 8) & 255], t[(w >> 16) & 255], t[(w >> 24) & 255]);
    __m128 b = _mm_setr_ps(t[(w >> 32) & 255], t[(w >> 40) & 255], t[(w >> 48) & 255], t[w >> 56]);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
}

/* t[b[0..7]] (scalar loads into lanes) */
FO_INLINE __m256i fo_lut8x32(const uint32_t* t, __m256i b) {
    __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
    uint64_t q0 = (uint64_t)_mm_cvtsi128_si64(lo), q1 = (uint64_t)_mm_extract_epi64(lo, 1);
    uint64_t q2 = (uint64_t)_mm_cvtsi128_si64(hi), q3 = (uint64_t)_mm_extract_epi64(hi, 1);
    __m128i a = _mm_cvtsi32_si128((int)t[(uint32_t)q0]);
    a = _mm_insert_epi32(a, (int)t[q0 >> 32], 1);
    a = _mm_insert_epi32(a, (int)t[(uint32_t)q1], 2);
    a = _mm_insert_epi32(a, (int)t[q1 >> 32], 3);
    __m128i c = _mm_cvtsi32_si128((int)t[(uint32_t)q2]);
    c = _mm_insert_epi32(c, (int)t[q2 >> 32], 1);
    c = _mm_insert_epi32(c, (int)t[(uint32_t)q3], 2);
    c = _mm_insert_epi32(c, (int)t[q3 >> 32], 3);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(a), c, 1);
}

#if FO_VBYTES == 64

/* base + (0, 1, ..., W - 1) */
FO_INLINE fo_vi fo_viota(uint32_t base) {
    return _mm512_add_epi32(_mm512_set1_epi32((int)base),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

/* W bfloat16 -> float32 */
FO_INLINE fo_vf fo_vbf16(const uint16_t* s) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)s)), 16));
}

/* fo_bf16_sr on 2W lanes (a, b) with increments (ia, ib), stored as 2W uint16 in order */
FO_INLINE void fo_vsr2(uint16_t* out, fo_vf a, fo_vi ia, fo_vf b, fo_vi ib) {
    __m512i ua = _mm512_castps_si512(a), ub = _mm512_castps_si512(b);
    __m512i q = _mm512_set1_epi32(0x40);
    __m512i sa = _mm512_srli_epi32(_mm512_add_epi32(ua, ia), 16);
    __m512i sb = _mm512_srli_epi32(_mm512_add_epi32(ub, ib), 16);
    sa = _mm512_mask_or_epi32(sa, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_srli_epi32(ua, 16), q);
    sb = _mm512_mask_or_epi32(sb, _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), _mm512_srli_epi32(ub, 16), q);
    _mm512_storeu_si512((void*)out, _mm512_permutexvar_epi64(
        _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_packus_epi32(sa, sb)));
}

/* t[c[0..W-1]] */
FO_INLINE fo_vf fo_vlut(const float* t, const uint8_t* c) {
#if FO_LB_GATHER_VALUES
    return _mm512_i32gather_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)c)), t, 4);
#else
    return _mm512_insertf32x8(_mm512_castps256_ps512(fo_lut8f(t, c)), fo_lut8f(t, c + 8), 1);
#endif
}

/* t[b[0..W-1]]: by halves, as the avx2 build (fo_lut8x32) */
FO_INLINE fo_vi fo_vlut32(const uint32_t* t, fo_vi b) {
#if FO_LB_GATHER_BUCKETS
    return _mm512_i32gather_epi32(b, (const void*)t, 4);
#else
    return _mm512_inserti64x4(_mm512_castsi256_si512(fo_lut8x32(t, _mm512_castsi512_si256(b))),
                              fo_lut8x32(t, _mm512_extracti64x4_epi64(b, 1)), 1);
#endif
}

/* c + (a > b), signed */
FO_INLINE fo_vi fo_vinc_gt(fo_vi c, fo_vi a, fo_vi b) {
    return _mm512_mask_sub_epi32(c, _mm512_cmpgt_epi32_mask(a, b), c, _mm512_set1_epi32(-1));
}

/* 4W codes (each in 0..255, in 4 vectors) stored as 4W bytes in order */
FO_INLINE void fo_vcodes4(uint8_t* out, fo_vi k0, fo_vi k1, fo_vi k2, fo_vi k3) {
    __m512i w = _mm512_packus_epi16(_mm512_packus_epi32(k0, k1), _mm512_packus_epi32(k2, k3));
    _mm512_storeu_si512((void*)out, _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), w));
}

/* the largest lane, unsigned */
FO_INLINE uint32_t fo_vhmax(fo_vi x) { return (uint32_t)_mm512_reduce_max_epu32(x); }

/* fo_vcodes4 of the signed rule's codes from 4W counts p (0..255) and the values' bits u:
   z + p (x >= 0), max(z - p, 0) (x < 0), per byte after the packs (a signed pack keeps
   each value's sign in its byte, in the same lanes as the counts' unsigned pack) */
/* the high 16-bit halves of 4W lanes a0..a3, packed (unsigned saturation: packus) or
   (signed: packs) to bytes in the order fo_vhi4_store puts back in place */
#define FO_VHI4(PACK, a0, a1, a2, a3)                                                          \
    _mm512_##PACK##_epi16(_mm512_permutex2var_epi16((a0), fo_vhiw(), (a1)),                    \
                          _mm512_permutex2var_epi16((a2), fo_vhiw(), (a3)))
FO_INLINE __m512i fo_vhiw(void) {
    return _mm512_setr_epi32(0x00030001, 0x00070005, 0x000b0009, 0x000f000d, 0x00130011,
                             0x00170015, 0x001b0019, 0x001f001d, 0x00230021, 0x00270025,
                             0x002b0029, 0x002f002d, 0x00330031, 0x00370035, 0x003b0039,
                             0x003f003d);
}
FO_INLINE void fo_vhi4_store(uint8_t* out, __m512i w) {
    _mm512_storeu_si512((void*)out, _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), w));
}
/* codes g >> 16 of 4W lanes (each in 0..255 << 16), stored in order */
FO_INLINE void fo_vcodes4_hi(uint8_t* out, fo_vi g0, fo_vi g1, fo_vi g2, fo_vi g3) {
    fo_vhi4_store(out, FO_VHI4(packus, g0, g1, g2, g3));
}
FO_INLINE void fo_vcodes4_signed(uint8_t* out, fo_vi p0, fo_vi p1, fo_vi p2, fo_vi p3,
                                 fo_vi u0, fo_vi u1, fo_vi u2, fo_vi u3, __m512i z8) {
    __m512i w = FO_VHI4(packus, p0, p1, p2, p3);
    __m512i sg = FO_VHI4(packs, u0, u1, u2, u3);
    w = _mm512_mask_subs_epu8(_mm512_add_epi8(w, z8), _mm512_movepi8_mask(sg), z8, w);
    fo_vhi4_store(out, w);
}

/* the int8 fast encoder's helpers (fo_vcode_fast): t[i] for i in 0..7; c + (a > b);
   the lanes whose g & fmask is 0 (g's fraction near an integer) or whose bits are within
   FO_FAST_ULPS of the boundary's (db = their difference), as bits */
FO_INLINE fo_vf fo_vtab8f(fo_vf t, fo_vi i) { return _mm512_permutexvar_ps(i, t); }
FO_INLINE fo_vi fo_vtab8i(fo_vi t, fo_vi i) { return _mm512_permutexvar_epi32(i, t); }
FO_INLINE fo_vi fo_vinc_gtf(fo_vi c, fo_vf a, fo_vf b) {
    return _mm512_mask_sub_epi32(c, _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), c, _mm512_set1_epi32(-1));
}
FO_INLINE unsigned fo_vnear(fo_vi g, fo_vi fmask, fo_vi db, fo_vi ulps) {
    return (unsigned)(_mm512_testn_epi32_mask(g, fmask)
                      | _mm512_cmplt_epi32_mask(_mm512_abs_epi32(db), ulps));
}
/* the lanes whose g & fmask is 0 or whose d is below span, unsigned */
FO_INLINE unsigned fo_vflag(fo_vi g, fo_vi fmask, fo_vi d, fo_vi span) {
    return (unsigned)(_mm512_testn_epi32_mask(g, fmask) | _mm512_cmplt_epu32_mask(d, span));
}

#if defined(__GNUC__) && !defined(FO_LB_NO_VBMI)
#define FO_LB_VBMI 1
/* values[c[0..255]] into out, by in-register byte lookups (AVX-512 VBMI, checked at run
   time: fo_lowbit_use_vbmi): per 64 codes and per byte plane of the values, two 128-entry
   vpermi2b lookups and a blend on the code's top bit, then the four planes interleaved
   into floats.  The codes are first permuted by 4-byte groups so that the in-lane unpacks
   give the floats in order.  Exact (a lookup): the same bits as fo_vlut, 5x fewer
   instructions (Zen 4, one thread, 256 codes in L1: 0.14 ns/code against 0.21). */
__attribute__((target("avx512vbmi"), noinline))
static void fo_vdecode_vbmi(const uint8_t* planes, const uint8_t* c, float* out) {
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i T[16];
    int b, i;
    for (b = 0; b < 16; b++) T[b] = _mm512_loadu_si512((const void*)(planes + 64 * b));
    for (i = 0; i < FO_QBLOCK; i += 64) {
        __m512i idx = _mm512_permutexvar_epi32(order, _mm512_loadu_si512((const void*)(c + i)));
        __mmask64 up = _mm512_movepi8_mask(idx);
        __m512i p[4], a, e, f, g;
        for (b = 0; b < 4; b++)
            p[b] = _mm512_mask_blend_epi8(up, _mm512_permutex2var_epi8(T[4 * b], idx, T[4 * b + 1]),
                                          _mm512_permutex2var_epi8(T[4 * b + 2], idx, T[4 * b + 3]));
        a = _mm512_unpacklo_epi8(p[0], p[1]);
        e = _mm512_unpackhi_epi8(p[0], p[1]);
        f = _mm512_unpacklo_epi8(p[2], p[3]);
        g = _mm512_unpackhi_epi8(p[2], p[3]);
        _mm512_storeu_si512((void*)(out + i), _mm512_unpacklo_epi16(a, f));
        _mm512_storeu_si512((void*)(out + i + 16), _mm512_unpackhi_epi16(a, f));
        _mm512_storeu_si512((void*)(out + i + 32), _mm512_unpacklo_epi16(e, g));
        _mm512_storeu_si512((void*)(out + i + 48), _mm512_unpackhi_epi16(e, g));
    }
}
#endif

#else /* FO_VBYTES == 32 */

FO_INLINE fo_vi fo_viota(uint32_t base) {
    return _mm256_add_epi32(_mm256_set1_epi32((int)base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* a broadcast load and one byte shuffle into the high halves */
FO_INLINE fo_vf fo_vbf16(const uint16_t* s) {
    const __m256i sh = _mm256_setr_epi8(-1, -1, 0, 1, -1, -1, 2, 3, -1, -1, 4, 5, -1, -1, 6, 7,
                                        -1, -1, 8, 9, -1, -1, 10, 11, -1, -1, 12, 13, -1, -1, 14, 15);
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)s)), sh));
}

/* NaN lanes (rare: one test per 2W) replaced by (u >> 16) | 0x40 */
FO_INLINE void fo_vsr2(uint16_t* out, fo_vf a, fo_vi ia, fo_vf b, fo_vi ib) {
    __m256i ua = _mm256_castps_si256(a), ub = _mm256_castps_si256(b);
    __m256i sa = _mm256_srli_epi32(_mm256_add_epi32(ua, ia), 16);
    __m256i sb = _mm256_srli_epi32(_mm256_add_epi32(ub, ib), 16);
    __m256 na = _mm256_cmp_ps(a, a, _CMP_UNORD_Q), nb = _mm256_cmp_ps(b, b, _CMP_UNORD_Q);
    if (!_mm256_testz_ps(_mm256_or_ps(na, nb), _mm256_or_ps(na, nb))) {
        __m256i q = _mm256_set1_epi32(0x40);
        sa = _mm256_blendv_epi8(sa, _mm256_or_si256(_mm256_srli_epi32(ua, 16), q), _mm256_castps_si256(na));
        sb = _mm256_blendv_epi8(sb, _mm256_or_si256(_mm256_srli_epi32(ub, 16), q), _mm256_castps_si256(nb));
    }
    _mm256_storeu_si256((__m256i*)out, _mm256_permute4x64_epi64(_mm256_packus_epi32(sa, sb), 0xd8));
}

FO_INLINE fo_vf fo_vlut(const float* t, const uint8_t* c) {
#if FO_LB_GATHER_VALUES
    return _mm256_i32gather_ps(t, _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)c)), 4);
#else
    return fo_lut8f(t, c);
#endif
}

FO_INLINE fo_vi fo_vlut32(const uint32_t* t, fo_vi b) {
#if FO_LB_GATHER_BUCKETS
    return _mm256_i32gather_epi32((const int*)t, b, 4);
#else
    return fo_lut8x32(t, b);
#endif
}

FO_INLINE fo_vi fo_vinc_gt(fo_vi c, fo_vi a, fo_vi b) {
    return _mm256_sub_epi32(c, _mm256_cmpgt_epi32(a, b));
}

FO_INLINE void fo_vcodes4(uint8_t* out, fo_vi k0, fo_vi k1, fo_vi k2, fo_vi k3) {
    __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(k0, k1), _mm256_packus_epi32(k2, k3));
    _mm256_storeu_si256((__m256i*)out,
                        _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

FO_INLINE fo_vf fo_vtab8f(fo_vf t, fo_vi i) { return _mm256_permutevar8x32_ps(t, i); }
FO_INLINE fo_vi fo_vtab8i(fo_vi t, fo_vi i) { return _mm256_permutevar8x32_epi32(t, i); }
FO_INLINE fo_vi fo_vinc_gtf(fo_vi c, fo_vf a, fo_vf b) {
    return _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GT_OQ)));
}
FO_INLINE unsigned fo_vnear(fo_vi g, fo_vi fmask, fo_vi db, fo_vi ulps) {
    __m256i a = _mm256_cmpeq_epi32(_mm256_and_si256(g, fmask), _mm256_setzero_si256());
    __m256i b = _mm256_cmpgt_epi32(ulps, _mm256_abs_epi32(db));
    return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(a, b)));
}
FO_INLINE unsigned fo_vflag(fo_vi g, fo_vi fmask, fo_vi d, fo_vi span) {
    __m256i a = _mm256_cmpeq_epi32(_mm256_and_si256(g, fmask), _mm256_setzero_si256());
    __m256i b = _mm256_cmpeq_epi32(_mm256_min_epu32(d, FO_EPI32(sub)(span, FO_VSET1I(1))), d);
    return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(a, b)));
}

FO_INLINE void fo_vcodes4_hi(uint8_t* out, fo_vi g0, fo_vi g1, fo_vi g2, fo_vi g3) {
    fo_vcodes4(out, _mm256_srli_epi32(g0, 16), _mm256_srli_epi32(g1, 16),
               _mm256_srli_epi32(g2, 16), _mm256_srli_epi32(g3, 16));
}
FO_INLINE void fo_vcodes4_signed(uint8_t* out, fo_vi p0, fo_vi p1, fo_vi p2, fo_vi p3,
                                 fo_vi u0, fo_vi u1, fo_vi u2, fo_vi u3, __m256i z8) {
    __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(_mm256_srli_epi32(p0, 16), _mm256_srli_epi32(p1, 16)),
                                    _mm256_packus_epi32(_mm256_srli_epi32(p2, 16), _mm256_srli_epi32(p3, 16)));
    __m256i sg = _mm256_packs_epi16(_mm256_packs_epi32(u0, u1), _mm256_packs_epi32(u2, u3));
    w = _mm256_blendv_epi8(_mm256_add_epi8(w, z8), _mm256_subs_epu8(z8, w), sg);
    _mm256_storeu_si256((__m256i*)out,
                        _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

FO_INLINE uint32_t fo_vhmax(fo_vi x) {
    __m128i r = _mm_max_epu32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    r = _mm_max_epu32(r, _mm_shuffle_epi32(r, 0x4e));
    r = _mm_max_epu32(r, _mm_shuffle_epi32(r, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(r);
}

#endif /* FO_VBYTES */

/* ---- written once for every width ---- */

#ifndef FO_LB_VBMI
#define FO_LB_VBMI 0
#endif

/* A full block's codes decoded up front into out by fo_vdecode_vbmi where the CPU has VBMI
   (returns 1), else nothing done (returns 0: the loops look the codes up per vector, fo_vlut,
   as a store and reload would cost the avx2 build 4-9%: adam/rmsprop/sgd int8, Zen 4).
   FO_VDEC(d, ...) is then one vector of values: from out when d, else by fo_vlut. */
FO_INLINE int fo_vpredecode(const fo_qtab* q, const uint8_t* c, float* out, ptrdiff_t n) {
#if FO_LB_VBMI
    if (n == FO_QBLOCK && fo_lb_vbmi > 0) {
        fo_vdecode_vbmi(q->planes, c, out);
        return 1;
    }
#endif
    (void)q; (void)c; (void)out; (void)n;
    return 0;
}
#define FO_VDEC(D, V, C, OUT, I)                                                               \
     ((D) ? FO_PS(load)((OUT) + (I)) : fo_vlut((V), (C) + (I)))

/* fo_fmix32 on every lane */
FO_INLINE fo_vi fo_vfmix(fo_vi x) {
    x = FO_SI(xor)(x, FO_EPI32(srli)(x, 16));
    x = FO_EPI32(mullo)(x, FO_VSET1I(0x85ebca6bu));
    x = FO_SI(xor)(x, FO_EPI32(srli)(x, 13));
    x = FO_EPI32(mullo)(x, FO_VSET1I(0xc2b2ae35u));
    return FO_SI(xor)(x, FO_EPI32(srli)(x, 16));
}

/* |x| bits, for the absmax */
FO_INLINE fo_vi fo_vabsbits(fo_vf x) { return FO_SI(and)(FO_SI(castps)(x), FO_VSET1I(0x7fffffff)); }

/* a map's constants for the vector encoder: the bucket tables' (fo_vcode_tab) and the
   arithmetic rule's (fo_vcode_fast, when q->fast) */
typedef struct {
    fo_vf d; fo_vi LO, HI, nbm, mask8; __m128i sh; const uint32_t* tb;
    int fast;
    fo_vf r, bn, A, C; fo_vi bn8, H, M, K0, z, z8, fmask, ulps, span;
#if FO_VBYTES == 64
    fo_vi R0lo, R0hi;   /* the region of binade e, for e = 96..127 (fo_vregion) */
#endif
    float ds; const fo_qtab* q;
} fo_venc;

#define FO_FAST_EPS 32   /* _formats.FAST_EPS */
#define FO_FAST_ULPS 8   /* _formats.FAST_ULPS */
/* Whether the kernels encode by the arithmetic rule (fo_vcode_fast) where the map has it:
   at 512 bits (Zen 4, one thread, 256K in cache, Adam / RMSprop / SGD int8: 1.18 / 0.64 /
   0.63 ns/element against 1.45 / 0.77 / 0.72 with the tables); not at 256 bits, where its
   chain of ~30 dependent operations per vector measured slower than the lookups (1.63 /
   0.85 / 0.86; Zen 3, avx2 build: 2.01 / 1.11 / 1.00 against 1.80 / 0.96 / 0.93, see the
   top of this file).  -DFO_LB_FAST=1 selects it at 256 bits too, to measure on other CPUs. */
#ifndef FO_LB_FAST
#define FO_LB_FAST (FO_VBYTES == 64)
#endif

/* Whether this build's vectors run map q's arithmetic rule: q has one, and at 512 bits its
   binades below 96 are all in region 0 (fo_vregion's table starts there; the default maps'
   first region boundaries lie in binades 107 and 109) */
FO_INLINE int fo_fast_ok(const fo_qtab* q) {
    if (q->fast == NULL) return 0;
#if FO_VBYTES == 64
    return ((95u * q->fast[0]) & 0xffffu) <= q->fast[1];
#else
    return 1;
#endif
}

FO_INLINE void fo_venc_init(fo_venc* E, const fo_qtab* q, float d) {
    E->d = FO_PS(set1)(d);
    E->LO = FO_VSET1I(q->LO);
    E->HI = FO_VSET1I(q->HI);
    E->nbm = FO_VSET1I(q->nbm);
    E->mask8 = FO_VSET1I(q->mask << 8);
    E->sh = _mm_cvtsi32_si128((int)q->shift);
    E->tb = q->tabn - q->lo;
    E->fast = FO_LB_FAST && fo_fast_ok(q);
    if (fo_fast_ok(q)) {
        const uint32_t* f = q->fast;
        const uint32_t db = fo_f2u(d);
        /* y = |x| * fl(1/d) is within 3 ulps of fl(|x| / d) when 1/d is a normal number;
           otherwise every lane is flagged (fmask 0): exact */
        const int ok = db >= 0x00800000u && db < 0x7e800000u;
        E->r = FO_PS(set1)(ok ? 1.0f / d : 1.0f);
        E->M = FO_VSET1I(f[0]);
        E->K0 = FO_VSET1I(f[1]);
#if FO_VBYTES == 64
        {
            /* fo_vregion's table: the same 16-bit arithmetic on each binade e = 96 + i */
            FO_ALIGNED(64) uint32_t rt[32];
            int i;
            for (i = 0; i < 32; i++) {
                const uint32_t em = ((uint32_t)(96 + i) * f[0]) & 0xffffu;
                rt[i] = (em > f[1] ? em - f[1] : 0u) >> 8;
            }
            E->R0lo = FO_SI(load)((const void*)rt);
            E->R0hi = FO_SI(load)((const void*)(rt + 16));
        }
#endif
        E->z = FO_VSET1I(f[3]);
        E->z8 = FO_VSET1I(0x01010101u * f[3]);
        E->bn = FO_SI2PS(FO_SI(loadu)((const void*)(f + 8)));
        E->bn8 = FO_EPI32(sub)(FO_SI(castps)(E->bn), FO_VSET1I(FO_FAST_ULPS));
        E->A = FO_SI2PS(FO_SI(loadu)((const void*)(f + 16)));
        E->C = FO_SI2PS(FO_SI(loadu)((const void*)(f + 24)));
        E->H = FO_SI(loadu)((const void*)(f + 32));
        E->fmask = FO_VSET1I(ok ? 0xffff & -(2 * FO_FAST_EPS) : 0);
        E->ulps = FO_VSET1I(FO_FAST_ULPS + 1);
        E->span = FO_VSET1I(2 * FO_FAST_ULPS + 1);
        E->ds = d;
        E->q = q;
    }
}

/* fo_code of x / d on every lane (x given by its bits u): |x| / d by a true division (the
   same IEEE quotient as fo_code's), then the bucket lookups of q->tabn (fo_qtab): the same
   rule with the comparison folded into one signed compare, and for maps whose negative
   values all take code 0 (posonly) no sign handling at all (the signed quotient of a
   negative value clamps to LO). */
FO_INLINE fo_vi fo_vcode_tab(fo_vi u, const fo_venc* E, const int posonly) {
    fo_vi ac, e, r8;
    if (posonly) {
        fo_vf q2 = FO_PS(div)(FO_SI2PS(u), E->d);
        ac = FO_EPI32(min)(FO_EPI32(max)(FO_SI(castps)(q2), E->LO), E->HI);
        e = fo_vlut32(E->tb, FO_EPI32(srl)(ac, E->sh));
        r8 = FO_SI(and)(FO_EPI32(slli)(ac, 8), E->mask8);
    } else {
        fo_vf q2 = FO_PS(div)(FO_SI2PS(FO_SI(and)(u, FO_VSET1I(0x7fffffff))), E->d);
        fo_vi neg = FO_EPI32(srai)(u, 31);
        ac = FO_EPU32(min)(FO_EPU32(max)(FO_SI(castps)(q2), E->LO), E->HI);
        e = fo_vlut32(E->tb, FO_EPI32(add)(FO_EPI32(srl)(ac, E->sh), FO_SI(and)(neg, E->nbm)));
        r8 = FO_SI(and)(FO_EPI32(slli)(FO_SI(xor)(ac, neg), 8), E->mask8);
    }
    /* c + (r > t) (positive), c + (r < t) = c + (r ^ mask > t ^ mask) (negative) */
    return fo_vinc_gt(FO_SI(and)(e, FO_VSET1I(0xff)), r8, e);
}

/* The same codes by arithmetic, no table lookup (QuantMap.fast_code describes the rule, its
   NumPy twin): y = |x| * fl(1/d) (maps without negative values: max(x * fl(1/d), 0)); the
   region r of y from its binade e, r0 = max(e M - K0, 0) >> S, and one compare with the
   region's upper boundary; a fixed-point index g = trunc(fl(fl(y A_r) + C_r)), clamped to
   H_r, whose integer part counts the positive thresholds below y (C_r and H_r hold an offset
   FO_FAST_EPS / 2^16); then the sign.  A lane whose g is within FO_FAST_EPS / 2^16 of an
   integer (its fraction below 2 FO_FAST_EPS / 2^16), or whose y is within FO_FAST_ULPS
   ulps of the boundary, is recomputed exactly (fo_code of the true quotient, ~0.1% of
   lanes): elsewhere the code is the definition's for every float32 within FO_FAST_ULPS
   ulps of y, which holds the true quotient (checked over every float32 y in [-1, 1]:
   _lowbit._fast_check, tests/test_lowbit_fast.py). */
/* the region of binade e (biased exponent of y in 0..127): max(e M - K0, 0) >> S in 16-bit
   arithmetic (S = 8); at 512 bits one two-table permute of its values for e = 96..127 (every
   e below 96 is in region 0: the maps' first boundaries lie in binade 107 or above, checked
   by fo_venc_init's table, whose entries below them are 0) */
FO_INLINE fo_vi fo_vregion(const fo_venc* E, fo_vi yb) {
#if FO_VBYTES == 64
    return _mm512_permutex2var_epi32(E->R0lo, _mm512_subs_epu16(_mm512_srli_epi32(yb, 23),
                                                                 _mm512_set1_epi32(96)), E->R0hi);
#else
    return FO_EPI32(srli)(FO_LBU16(subs)(FO_LB16(mullo)(FO_EPI32(srli)(yb, 23), E->M), E->K0), 8);
#endif
}

/* the rule's count of positive thresholds below y (|x| * fl(1/d); posonly: max(x * fl(1/d), 0))
   and the lanes to recompute (*badp): fo_vcode_raw without the sign.  d = y's bits - (the
   boundary's - FO_FAST_ULPS), y >= +0: y is above the boundary when d > FO_FAST_ULPS
   (signed), within FO_FAST_ULPS ulps of it when d <= 2 FO_FAST_ULPS (unsigned) */
FO_INLINE fo_vi fo_vcode_mag(fo_vi u, const fo_venc* E, const int posonly, unsigned* badp) {
    fo_vf y;
    fo_vi yb, r0, r, g, d;
    if (posonly) y = FO_PS(max)(FO_PS(mul)(FO_SI2PS(u), E->r), FO_PS(setzero)());
    else y = FO_PS(mul)(FO_SI2PS(FO_SI(and)(u, FO_VSET1I(0x7fffffff))), E->r);
    yb = FO_SI(castps)(y);
    r0 = fo_vregion(E, yb);
    d = FO_EPI32(sub)(yb, fo_vtab8i(E->bn8, r0));
    r = fo_vinc_gt(r0, d, FO_VSET1I(FO_FAST_ULPS));
    g = FO_LB_CVTT(FO_PS(add)(FO_PS(mul)(y, fo_vtab8f(E->A, r)), fo_vtab8f(E->C, r)));
    g = FO_EPI32(min)(g, fo_vtab8i(E->H, r));
    *badp = fo_vflag(g, E->fmask, d, E->span);
    return g;
}

FO_INLINE fo_vi fo_vcode_raw(fo_vi u, const fo_venc* E, const int posonly, unsigned* badp) {
    fo_vi k = FO_EPI32(srli)(fo_vcode_mag(u, E, posonly, badp), 16);
    if (!posonly) {
        /* z + P (x >= 0), max(z - P, 0) (x < 0): the map's negative thresholds mirror its
           first z positive ones */
        fo_vi neg = FO_EPI32(srai)(u, 31);
        k = FO_EPI32(max)(FO_EPI32(add)(E->z, FO_EPI32(sub)(FO_SI(xor)(k, neg), neg)),
                          FO_SI(setzero)());
    }
    return k;
}

FO_INLINE fo_vi fo_vcode_fast(fo_vi u, const fo_venc* E, const int posonly) {
    unsigned bad;
    fo_vi k = fo_vcode_raw(u, E, posonly, &bad);
    if (bad) {
        FO_ALIGNED(64) uint32_t xs[FO_W];
        FO_ALIGNED(64) int32_t ks[FO_W];
        FO_SI(store)((void*)xs, u);
        FO_SI(store)((void*)ks, k);
        int l;
        for (l = 0; l < FO_W; l++)
            if ((bad >> l) & 1u) ks[l] = fo_code(fo_u2f(xs[l]) / E->ds, E->q);
        k = FO_SI(load)((const void*)ks);
    }
    return k;
}

FO_INLINE fo_vi fo_vcode(fo_vi u, const fo_venc* E, const int posonly) {
    return E->fast ? fo_vcode_fast(u, E, posonly) : fo_vcode_tab(u, E, posonly);
}

/* #{k : t[k] < x} over the map's 255 thresholds t (the definition of a code) */
static int fo_count_below(const float* t, float x) {
    int lo = 0, hi = 255;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (t[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* The test of fo_vcode_raw over every float32 y in [0, 1 + FO_FAST_ULPS ulps], both signs
   (d = 1: y is x's magnitude): the number of lanes it does not flag whose code differs from
   the definition's at y - FO_FAST_ULPS or y + FO_FAST_ULPS ulps (or at y); *nflag: the
   lanes flagged.  Chunks of W consecutive floats whose widened range holds no threshold are
   compared with one code (walking pointers), the others lane by lane.  -1: no fast rule. */
static int64_t fo_int8_fast_check(const fo_qtab* q, int64_t* nflag) {
    float t[255];
    fo_venc E;
    int64_t bad_lanes = 0, flagged = 0;
    int k, sign;
    const uint32_t top = 0x3f800000u + FO_FAST_ULPS + FO_W;
    for (k = 0; k < 255; k++)
        t[k] = (float)(((double)q->values[k] + (double)q->values[k + 1]) / 2);
    if (!fo_fast_ok(q)) return -1;
    fo_venc_init(&E, q, 1.0f);
    for (sign = 0; sign < 2; sign++) {
        const uint32_t sb = sign ? 0x80000000u : 0u;
        const float sg = sign ? -1.0f : 1.0f;
        uint32_t base;
        int wlo = fo_count_below(t, sg * 0.0f), whi = wlo;
        for (base = 0; base < top; base += FO_W) {
            const uint32_t blo = base >= FO_FAST_ULPS ? base - FO_FAST_ULPS : 0;
            const uint32_t bhi = base + FO_W - 1 + FO_FAST_ULPS;
            const float ylo = sg * fo_u2f(blo), yhi = sg * fo_u2f(bhi);
            unsigned bad;
            FO_ALIGNED(64) int32_t ks[FO_W];
            fo_vi kv = q->posonly ? fo_vcode_raw(FO_SI(or)(fo_viota(base), FO_VSET1I(sb)), &E, 1, &bad)
                                  : fo_vcode_raw(FO_SI(or)(fo_viota(base), FO_VSET1I(sb)), &E, 0, &bad);
            int l;
            /* walk the counts at the chunk's widened ends */
            if (!sign) {
                while (wlo < 255 && t[wlo] < ylo) wlo++;
                while (whi < 255 && t[whi] < yhi) whi++;
            } else {
                while (wlo > 0 && !(t[wlo - 1] < ylo)) wlo--;
                while (whi > 0 && !(t[whi - 1] < yhi)) whi--;
            }
            for (l = 0; l < FO_W; l++) flagged += (bad >> l) & 1u;
            if (wlo == whi) {    /* no threshold near: one code for the chunk */
                const unsigned ne = fo_vnear(FO_SI(xor)(kv, FO_VSET1I(wlo)), FO_VSET1I(0xff),
                                             FO_VSET1I(0x40000000), FO_SI(setzero)());
                const unsigned wrong = ~ne & ~bad & ((1u << FO_W) - 1u);
                for (l = 0; l < FO_W; l++) bad_lanes += (wrong >> l) & 1u;
                continue;
            }
            FO_SI(store)((void*)ks, kv);
            for (l = 0; l < FO_W; l++) {
                if ((bad >> l) & 1u) continue;
                {
                    const uint32_t b = base + (uint32_t)l;
                    const int c0 = fo_count_below(t, sg * fo_u2f(b >= FO_FAST_ULPS ? b - FO_FAST_ULPS : 0));
                    const int c1 = fo_count_below(t, sg * fo_u2f(b + FO_FAST_ULPS));
                    const int c = fo_count_below(t, sg * fo_u2f(b));
                    bad_lanes += (ks[l] != c) || (c0 != c) || (c1 != c);
                }
            }
        }
    }
    *nflag = flagged;
    return bad_lanes;
}

#else
static int64_t fo_int8_fast_check(const fo_qtab* q, int64_t* nflag) {
    (void)q; *nflag = 0;
    return -2;   /* no vector encoder in this build */
}
#endif /* FO_LB_VEC */

/* ---- the codecs of the quantized passes: int8 (the tables above) and f8 (fo_f8.h, which
   describes the interface: a buffer's constants fo_<C>_q, decode constants fo_<C>_dv, the
   block's decode multiplier fo_<C>_scale, fo_<C>_dec/_vdec, a buffer's code kind
   fo_<C>_kind, the scalar encoder fo_<C>_escale/_code1 and the vector encoder
   fo_<C>_venc/_venc_init/_vcodes4), from which the block quantizer and the passes below
   are built once */
typedef fo_qtab fo_int8_q;
typedef struct { const float* v; } fo_int8_dv;
FO_INLINE fo_int8_dv fo_int8_dv_init(const fo_qtab* q) { fo_int8_dv d; d.v = q->values; return d; }
static inline float fo_int8_scale(const fo_qtab* q, float a) { (void)q; return a; }
FO_INLINE float fo_int8_dec(const fo_int8_dv* d, uint8_t c, float a) { return d->v[c] * a; }
/* buffer 0's kind is the passes' posonly (compile-time), buffer 1's read from its map */
FO_INLINE int fo_int8_kind(const fo_qtab* q, int kind, int j) { return j ? q[j].posonly : kind & 1; }
static inline float fo_int8_escale(const fo_qtab* q, uint32_t mx) { (void)q; return fo_divisor(mx); }
static inline uint8_t fo_int8_code1(float x, float d, const fo_qtab* q) { return fo_code(x / d, q); }
#if FO_LB_VEC
/* codes c[i..i+W) times va: from the block's predecoded values out when pd, else looked up */
FO_INLINE fo_vf fo_int8_vdec(const fo_int8_dv* d, const uint8_t* c, const float* out, int pd,
                             ptrdiff_t i, fo_vf va, const int kind) {
    (void)kind;
#ifdef FO_LB_VDEC_HOOK   /* another decode of the values d->v, to measure (benchmarks/c/i8arith.c) */
    (void)out; (void)pd;
    return FO_PS(mul)(FO_LB_VDEC_HOOK(d->v, c + i), va);
#else
    return FO_PS(mul)(FO_VDEC(pd, d->v, c, out, i), va);
#endif
}
/* 2W codes (i.. and i + W..) into two vectors: two fo_int8_vdec */
FO_INLINE void fo_int8_vdec2(const fo_int8_dv* d, const uint8_t* c, const float* out, int pd,
                             ptrdiff_t i, fo_vf va, const int kind, fo_vf* f0, fo_vf* f1) {
    *f0 = fo_int8_vdec(d, c, out, pd, i, va, kind);
    *f1 = fo_int8_vdec(d, c, out, pd, i + FO_W, va, kind);
}
#define fo_int8_predecode fo_vpredecode
FO_INLINE int fo_int8_vok(const fo_qtab* q, float a, const int kind) {
    (void)q; (void)a; (void)kind;
    return 1;
}
FO_INLINE fo_vf fo_int8_vscale(const fo_qtab* q, float a, const int kind) {
    (void)q; (void)kind;
    return FO_PS(set1)(a);
}
FO_INLINE int fo_int8_venc_ok(const fo_qtab* q, uint32_t mx, const int kind) {
    (void)q; (void)mx; (void)kind;
    return 1;
}
typedef fo_venc fo_int8_venc;
FO_INLINE void fo_int8_venc_init(fo_venc* E, const fo_qtab* q, uint32_t mx) {
    fo_venc_init(E, q, fo_divisor(mx));
}
/* fo_vcode_fast of 4W values, stored in order: the counts of 4W lanes, their signs applied
   to the packed bytes (fo_vcodes4_signed), one test of the 4W flags, and the flagged lanes'
   codes rewritten (the true quotient, fo_code) */
FO_INLINE void fo_vcodes4_fast(uint8_t* out, const fo_venc* E, fo_vi u0, fo_vi u1, fo_vi u2,
                               fo_vi u3, const int posonly) {
    unsigned b0, b1, b2, b3;
    fo_vi p0 = fo_vcode_mag(u0, E, posonly, &b0), p1 = fo_vcode_mag(u1, E, posonly, &b1);
    fo_vi p2 = fo_vcode_mag(u2, E, posonly, &b2), p3 = fo_vcode_mag(u3, E, posonly, &b3);
    if (posonly) fo_vcodes4_hi(out, p0, p1, p2, p3);
    else fo_vcodes4_signed(out, p0, p1, p2, p3, u0, u1, u2, u3, E->z8);
    if (b0 | b1 | b2 | b3) {
        /* (6% of the 4W groups of Gaussian state, one lane in 16 of those: visit the set bits) */
        uint64_t bad = (uint64_t)b0 | ((uint64_t)b1 << FO_W) | ((uint64_t)b2 << 2 * FO_W)
                       | ((uint64_t)b3 << 3 * FO_W);
        FO_ALIGNED(64) uint32_t xs[4 * FO_W];
        FO_SI(store)((void*)xs, u0);
        FO_SI(store)((void*)(xs + FO_W), u1);
        FO_SI(store)((void*)(xs + 2 * FO_W), u2);
        FO_SI(store)((void*)(xs + 3 * FO_W), u3);
        do {
            const int l = fo_ctz64(bad);
            out[l] = fo_code(fo_u2f(xs[l]) / E->ds, E->q);
            bad &= bad - 1;
        } while (bad);
    }
}

/* the codes of 4W values, stored in order */
FO_INLINE void fo_int8_vcodes4(uint8_t* out, const fo_venc* E, fo_vf x0, fo_vf x1, fo_vf x2,
                               fo_vf x3, const int posonly) {
    if (E->fast) {
        fo_vcodes4_fast(out, E, FO_SI(castps)(x0), FO_SI(castps)(x1), FO_SI(castps)(x2),
                        FO_SI(castps)(x3), posonly);
        return;
    }
    fo_vcodes4(out, fo_vcode_tab(FO_SI(castps)(x0), E, posonly), fo_vcode_tab(FO_SI(castps)(x1), E, posonly),
               fo_vcode_tab(FO_SI(castps)(x2), E, posonly), fo_vcode_tab(FO_SI(castps)(x3), E, posonly));
}
#endif

#include "fo_f8.h"

/* ---- the block quantizer of each codec: fo_<C>_quant(x, n, codes, absmax, q, mx, kind), the
   codes and absmax of x[0..n) whose largest |x| bits mx are already known.  A NaN or an
   infinity in x gives absmax NaN and every code the zero code; all zeros absmax 0 and the
   zero code.  kind: the buffer's code kind (fo_<C>_kind), each value with its own loop. */
#if FO_LB_VEC
#define FO_QUANT_VEC(C)                                                                        \
    if (fo_##C##_venc_ok(q, mx, kind)) {                                                       \
        fo_##C##_venc E;                                                                       \
        fo_##C##_venc_init(&E, q, mx);                                                         \
        for (; i + 4 * FO_W <= n; i += 4 * FO_W)                                               \
            fo_##C##_vcodes4(codes + i, &E, FO_PS(loadu)(x + i), FO_PS(loadu)(x + i + FO_W),   \
                             FO_PS(loadu)(x + i + 2 * FO_W), FO_PS(loadu)(x + i + 3 * FO_W),   \
                             kind);                                                            \
    }
#else
#define FO_QUANT_VEC(C)
#endif
#define FO_QUANT(C)                                                                            \
FO_INLINE void fo_##C##_quant_k(const float* x, ptrdiff_t n, uint8_t* codes, float* absmax,   \
                                const fo_##C##_q* q, uint32_t mx, const int kind) {           \
    ptrdiff_t i = 0;                                                                           \
    float s;                                                                                   \
    (void)kind;                                                                                \
    if (mx >= 0x7f800000u) {                                                                   \
        absmax[0] = NAN;                                                                       \
        memset(codes, q->zero, (size_t)n);                                                     \
        return;                                                                                \
    }                                                                                          \
    absmax[0] = fo_u2f(mx);                                                                    \
    FO_QUANT_VEC(C)                                                                            \
    s = fo_##C##_escale(q, mx);                                                                \
    for (; i < n; i++) codes[i] = fo_##C##_code1(x[i], s, q);                                  \
}                                                                                              \
static inline void fo_##C##_quant(const float* x, ptrdiff_t n, uint8_t* codes, float* absmax,  \
                                  const fo_##C##_q* q, uint32_t mx, int kind) {                \
    if (kind) fo_##C##_quant_k(x, n, codes, absmax, q, mx, 1);                                 \
    else fo_##C##_quant_k(x, n, codes, absmax, q, mx, 0);                                      \
}
FO_QUANT(int8)
FO_QUANT(f8)

/* ======================================================================= the passes
 *
 * Generic over the kernel: FO_PASSES1(NAME, STRUCT, HIGH) for a kernel with one state buffer,
 * FO_PASSES2(NAME, STRUCT) for two, define (per mode: a compile-time constant)
 *   fo_<NAME>_bf16_mode(P, G, s0[, s1], n, base, key, h, mode)
 *   fo_<NAME>_int8_mode(P, G, cd0, ab0[, cd1, ab1], n, q, h, mode, posonly)
 * from the kernel's rule in fo_rules.h (fo_<NAME>_f32, fo_<NAME>_vec, and when
 * FO_SPLIT_<NAME> its halves fo_<NAME>_state_vec / fo_<NAME>_param_vec) and its structs in
 * fo_hyper.h (STRUCT_f32, STRUCT_vec).  _lowbit.pyx.tp instantiates them for every kernel
 * of the table with low-precision state, with the switch over its modes.
 * HIGH: the one-buffer kernel's bfloat16 buffer takes the hash's high half (1) or its low
 * half (0); with two buffers the first takes the high half, the second the low half.
 * int8, full blocks of a split kernel: the new state first, and the parameter update in the
 * pass of the first buffer's codes. */

#define FO_IF(c, ...) FO_IF_(c, __VA_ARGS__)
#define FO_IF_(c, ...) FO_IF_##c(__VA_ARGS__)
#define FO_IF_1(...) __VA_ARGS__
#define FO_IF_0(...)

#if FO_LB_VEC
/* A full block's parameter update from its new state y (y0, y1), fused with the state's
   codes: the one pass after the state's absmax is known, its loads and stores in L1 (a
   block of one buffer is 1 KiB), and the encoder's arithmetic beside the update's divider.
   A buffer whose absmax is NaN or infinite gets the block quantizer's codes.
   FO_PQ_LOOP4: the update of the 4 vectors from element i on (PARAM_CALL reads element ii
   on), beside their codes; FO_PQ_LOOP: the update alone, over the block. */
#define FO_PQ_LOOP4(PARAM_CALL)                                                                \
    {                                                                                          \
        int u;                                                                                 \
        for (u = 0; u < 4; u++) {                                                              \
            const ptrdiff_t ii = i + u * FO_W;                                                 \
            FO_PS(storeu)(p + ii, PARAM_CALL);                                                 \
        }                                                                                      \
    }
#define FO_PQ_LOOP(PARAM_CALL) for (i = 0; i < FO_QBLOCK; i += 4 * FO_W) FO_PQ_LOOP4(PARAM_CALL)
/* FO_PQ_AHEAD: the same loop for a kernel given with an ahead part (FO_AHEAD_<name>,
   fo_rules.h): the ahead values (square roots) of the next 4 vectors are issued before this
   group's first codes (CODES_A), then this group's update from the ahead values issued one
   group earlier, then the other buffer's codes (CODES_B).  AHEAD_CALL reads element ii on,
   PARAM_CALL element ii on with the ahead value a. */
#define FO_PQ_AHEAD(AHEAD_CALL, PARAM_CALL, CODES_A, CODES_B)                                  \
    {                                                                                          \
        fo_vf s_[4];                                                                           \
        int u;                                                                                 \
        for (u = 0; u < 4; u++) {                                                              \
            const ptrdiff_t ii = u * FO_W;                                                     \
            s_[u] = AHEAD_CALL;                                                                \
        }                                                                                      \
        for (i = 0; i < FO_QBLOCK; i += 4 * FO_W) {                                            \
            fo_vf t_[4];                                                                       \
            for (u = 0; u < 4; u++) t_[u] = s_[u];                                             \
            if (i + 4 * FO_W < FO_QBLOCK)                                                      \
                for (u = 0; u < 4; u++) {                                                      \
                    const ptrdiff_t ii = i + 4 * FO_W + u * FO_W;                              \
                    s_[u] = AHEAD_CALL;                                                        \
                }                                                                              \
            CODES_A                                                                            \
            for (u = 0; u < 4; u++) {                                                          \
                const ptrdiff_t ii = i + u * FO_W;                                             \
                const fo_vf a = t_[u];                                                         \
                FO_PS(storeu)(p + ii, PARAM_CALL);                                             \
            }                                                                                  \
            CODES_B                                                                            \
        }                                                                                      \
    }
/* FO_LB_PF = d > 0: per group of 4 vectors of a full block's codes pass, a software prefetch
   of the same group d blocks on (p and g, and the codes of both buffers every 64 elements;
   past a run's end it touches the next run's lines, harmlessly) */
#ifndef FO_LB_PF
#define FO_LB_PF 0
#endif
#if FO_LB_PF
#define FO_PQ_PF(P, G, C0, C1)                                                                 \
    {                                                                                          \
        const ptrdiff_t o_ = FO_LB_PF * FO_QBLOCK + i;                                         \
        int l_;                                                                                \
        for (l_ = 0; l_ < FO_W / 4; l_++) {                                                    \
            _mm_prefetch((const char*)((P) + o_ + 16 * l_), _MM_HINT_T0);                      \
            _mm_prefetch((const char*)((G) + o_ + 16 * l_), _MM_HINT_T0);                      \
        }                                                                                      \
        if ((i & 63) == 0) {                                                                   \
            _mm_prefetch((const char*)((C0) + o_), _MM_HINT_T0);                               \
            _mm_prefetch((const char*)((C1) + o_), _MM_HINT_T0);                               \
        }                                                                                      \
    }
#else
#define FO_PQ_PF(P, G, C0, C1)
#endif
/* whether codec C's codes pass issues a kernel's ahead part early (FO_<C>_AHEAD): float8
   yes; int8 no (its pass is bound by the encoder's scalar lookups, not by the update's
   latency: Zen 3, avx2, one thread, 64K elements, Adam int8 1.83 against 1.72 ns/element with it) */
#ifndef FO_INT8_AHEAD
#define FO_INT8_AHEAD 0
#endif
#ifndef FO_F8_AHEAD
#define FO_F8_AHEAD 1
#endif
#define FO_AHEAD_CODEC_int8 FO_INT8_AHEAD
#define FO_AHEAD_CODEC_f8 FO_F8_AHEAD
/* FO_IFA(a, c, ...) expands to ... when both a and c are 1, FO_IFNA otherwise */
#define FO_IFA(a, c, ...) FO_IFA_(a, c, __VA_ARGS__)
#define FO_IFA_(a, c, ...) FO_IFA_##a##c(__VA_ARGS__)
#define FO_IFA_11(...) __VA_ARGS__
#define FO_IFA_10(...)
#define FO_IFA_01(...)
#define FO_IFA_00(...)
#define FO_IFNA(a, c, ...) FO_IFNA_(a, c, __VA_ARGS__)
#define FO_IFNA_(a, c, ...) FO_IFNA_##a##c(__VA_ARGS__)
#define FO_IFNA_11(...)
#define FO_IFNA_10(...) __VA_ARGS__
#define FO_IFNA_01(...) __VA_ARGS__
#define FO_IFNA_00(...) __VA_ARGS__
#define FO_PQ1(NAME, STRUCT, CODEC)                                                            \
FO_INLINE void fo_##NAME##_##CODEC##_pq(float* p, const float* g, const float* y, uint8_t* codes, \
                              float* absmax, const fo_##CODEC##_q* q, uint32_t mx,             \
                              const STRUCT##_vec* A, const int mode, const int kind) {         \
    ptrdiff_t i;                                                                               \
    fo_##CODEC##_venc E;                                                                       \
    if (mx >= 0x7f800000u || !fo_##CODEC##_venc_ok(q, mx, kind)) {                             \
        FO_PQ_LOOP(fo_##NAME##_param_vec(A, mode, FO_PS(loadu)(g + ii), FO_PS(loadu)(p + ii),  \
                                         FO_PS(load)(y + ii)))                                 \
        fo_##CODEC##_quant_k(y, FO_QBLOCK, codes, absmax, q, mx, kind);                        \
        return;                                                                                \
    }                                                                                          \
    fo_##CODEC##_venc_init(&E, q, mx);                                                         \
    absmax[0] = fo_u2f(mx);                                                                    \
    FO_IFA(FO_AHEAD_##NAME, FO_AHEAD_CODEC_##CODEC, FO_PQ_AHEAD(                                                       \
        fo_##NAME##_ahead_vec(A, mode, FO_PS(load)(y + ii)),                                   \
        fo_##NAME##_param_from_vec(A, mode, FO_PS(loadu)(g + ii), FO_PS(loadu)(p + ii),        \
                                   FO_PS(load)(y + ii), a),                                    \
        , fo_##CODEC##_vcodes4(codes + i, &E, FO_PS(load)(y + i), FO_PS(load)(y + i + FO_W),   \
                               FO_PS(load)(y + i + 2 * FO_W), FO_PS(load)(y + i + 3 * FO_W), kind);)) \
    FO_IFNA(FO_AHEAD_##NAME, FO_AHEAD_CODEC_##CODEC,                                                                   \
    for (i = 0; i < FO_QBLOCK; i += 4 * FO_W) {                                                \
        FO_PQ_LOOP4(fo_##NAME##_param_vec(A, mode, FO_PS(loadu)(g + ii), FO_PS(loadu)(p + ii), \
                                          FO_PS(load)(y + ii)))                                \
        fo_##CODEC##_vcodes4(codes + i, &E, FO_PS(load)(y + i), FO_PS(load)(y + i + FO_W),     \
                             FO_PS(load)(y + i + 2 * FO_W), FO_PS(load)(y + i + 3 * FO_W), kind); \
    })                                                                                         \
}
/* (two buffers: each buffer's code kind k0, k1 a compile-time constant) */
#define FO_PQ2(NAME, STRUCT, CODEC)                                                            \
FO_INLINE void fo_##NAME##_##CODEC##_pq_k(float* p, const float* g, const float* y0,           \
                              const float* y1, uint8_t* codes0, float* absmax0, uint8_t* codes1, \
                              float* absmax1, const fo_##CODEC##_q* q, uint32_t mx0, uint32_t mx1, \
                              const STRUCT##_vec* A, const int mode, const int k0, const int k1) { \
    ptrdiff_t i;                                                                               \
    fo_##CODEC##_venc E0, E1;                                                                  \
    if (mx0 >= 0x7f800000u || mx1 >= 0x7f800000u || !fo_##CODEC##_venc_ok(&q[0], mx0, k0)      \
        || !fo_##CODEC##_venc_ok(&q[1], mx1, k1)) {                                            \
        FO_PQ_LOOP(fo_##NAME##_param_vec(A, mode, FO_PS(loadu)(g + ii), FO_PS(loadu)(p + ii),  \
                                         FO_PS(load)(y0 + ii), FO_PS(load)(y1 + ii)))          \
        fo_##CODEC##_quant_k(y0, FO_QBLOCK, codes0, absmax0, &q[0], mx0, k0);                  \
        fo_##CODEC##_quant_k(y1, FO_QBLOCK, codes1, absmax1, &q[1], mx1, k1);                  \
        return;                                                                                \
    }                                                                                          \
    fo_##CODEC##_venc_init(&E0, &q[0], mx0);                                                   \
    fo_##CODEC##_venc_init(&E1, &q[1], mx1);                                                   \
    absmax0[0] = fo_u2f(mx0);                                                                  \
    absmax1[0] = fo_u2f(mx1);                                                                  \
    FO_IFA(FO_AHEAD_##NAME, FO_AHEAD_CODEC_##CODEC, FO_PQ_AHEAD(                                                       \
        fo_##NAME##_ahead_vec(A, mode, FO_PS(load)(y0 + ii), FO_PS(load)(y1 + ii)),            \
        fo_##NAME##_param_from_vec(A, mode, FO_PS(loadu)(g + ii), FO_PS(loadu)(p + ii),        \
                                   FO_PS(load)(y0 + ii), FO_PS(load)(y1 + ii), a),             \
        FO_PQ_PF(p, g, codes0, codes1)                                                         \
        fo_##CODEC##_vcodes4(codes0 + i, &E0, FO_PS(load)(y0 + i), FO_PS(load)(y0 + i + FO_W), \
                             FO_PS(load)(y0 + i + 2 * FO_W), FO_PS(load)(y0 + i + 3 * FO_W), k0);, \
        fo_##CODEC##_vcodes4(codes1 + i, &E1, FO_PS(load)(y1 + i), FO_PS(load)(y1 + i + FO_W), \
                             FO_PS(load)(y1 + i + 2 * FO_W), FO_PS(load)(y1 + i + 3 * FO_W), k1);)) \
    FO_IFNA(FO_AHEAD_##NAME, FO_AHEAD_CODEC_##CODEC,                                                                   \
    for (i = 0; i < FO_QBLOCK; i += 4 * FO_W) {                                                \
        FO_PQ_LOOP4(fo_##NAME##_param_vec(A, mode, FO_PS(loadu)(g + ii), FO_PS(loadu)(p + ii), \
                                          FO_PS(load)(y0 + ii), FO_PS(load)(y1 + ii)))         \
        fo_##CODEC##_vcodes4(codes0 + i, &E0, FO_PS(load)(y0 + i), FO_PS(load)(y0 + i + FO_W), \
                             FO_PS(load)(y0 + i + 2 * FO_W), FO_PS(load)(y0 + i + 3 * FO_W), k0); \
        fo_##CODEC##_vcodes4(codes1 + i, &E1, FO_PS(load)(y1 + i), FO_PS(load)(y1 + i + FO_W), \
                             FO_PS(load)(y1 + i + 2 * FO_W), FO_PS(load)(y1 + i + 3 * FO_W), k1); \
    })                                                                                         \
}                                                                                              \
FO_INLINE void fo_##NAME##_##CODEC##_pq(float* p, const float* g, const float* y0,             \
                              const float* y1, uint8_t* codes0, float* absmax0, uint8_t* codes1, \
                              float* absmax1, const fo_##CODEC##_q* q, uint32_t mx0, uint32_t mx1, \
                              const STRUCT##_vec* A, const int mode, const int kind) {         \
    if (fo_##CODEC##_kind(q, kind, 1))                                                         \
        fo_##NAME##_##CODEC##_pq_k(p, g, y0, y1, codes0, absmax0, codes1, absmax1, q, mx0, mx1, \
                                   A, mode, fo_##CODEC##_kind(q, kind, 0), 1);                 \
    else                                                                                       \
        fo_##NAME##_##CODEC##_pq_k(p, g, y0, y1, codes0, absmax0, codes1, absmax1, q, mx0, mx1, \
                                   A, mode, fo_##CODEC##_kind(q, kind, 0), 0);                 \
}
#else
#define FO_PQ1(NAME, STRUCT, CODEC)
#define FO_PQ2(NAME, STRUCT, CODEC)
#endif

/* ---- one state buffer */
#if FO_LB_VEC
#define FO_P1_BF16_VEC(NAME, STRUCT, HIGH)                                                     \
    {                                                                                          \
        STRUCT##_vec A;                                                                        \
        fo_vi idx = fo_viota(base), vkey = FO_VSET1I(key), w = FO_VSET1I(FO_W);                \
        fo_vi w2 = FO_VSET1I(2 * FO_W), lo16 = FO_VSET1I(0xffff);                              \
        fo_##NAME##_vec_init(&A, &h);                                                          \
        for (; i + 2 * FO_W <= n; i += 2 * FO_W) {                                             \
            fo_vf ya, yb;                                                                      \
            fo_vf pa = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(G + i), FO_PS(loadu)(P + i),     \
                                       fo_vbf16(s0 + i), &ya);                                 \
            fo_vf pb = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(G + i + FO_W),                   \
                                       FO_PS(loadu)(P + i + FO_W), fo_vbf16(s0 + i + FO_W),    \
                                       &yb);                                                   \
            fo_vi ha = fo_vfmix(FO_SI(xor)(idx, vkey));                                        \
            fo_vi hb = fo_vfmix(FO_SI(xor)(FO_EPI32(add)(idx, w), vkey));                      \
            idx = FO_EPI32(add)(idx, w2);                                                      \
            FO_PS(storeu)(P + i, pa);                                                          \
            FO_PS(storeu)(P + i + FO_W, pb);                                                   \
            if (HIGH) { ha = FO_EPI32(srli)(ha, 16); hb = FO_EPI32(srli)(hb, 16); }            \
            else { ha = FO_SI(and)(ha, lo16); hb = FO_SI(and)(hb, lo16); }                     \
            fo_vsr2(s0 + i, ya, ha, yb, hb);                                                   \
        }                                                                                      \
    }
/* a full block of a split kernel: the new state only; the update waits for the codes */
#define FO_P1_INT8_FULL(NAME, CODEC)                                                           \
        if (nq == FO_QBLOCK) {                                                                 \
            for (; i < FO_QBLOCK; i += 2 * FO_W) {                                             \
                fo_vf xa, xb, ya, yb;                                                          \
                fo_##CODEC##_vdec2(&v0, c0, dec0, dv, i, va0, po, &xa, &xb);                   \
                ya = fo_##NAME##_state_vec(&A, mode, FO_PS(loadu)(g + i), FO_PS(loadu)(p + i), xa); \
                yb = fo_##NAME##_state_vec(&A, mode, FO_PS(loadu)(g + i + FO_W),               \
                                           FO_PS(loadu)(p + i + FO_W), xb);                    \
                FO_PS(store)(buf0 + i, ya);                                                    \
                FO_PS(store)(buf0 + i + FO_W, yb);                                             \
                mx0 = FO_EPU32(max)(mx0, fo_vabsbits(ya));                                     \
                mx1 = FO_EPU32(max)(mx1, fo_vabsbits(yb));                                     \
            }                                                                                  \
            fo_##NAME##_##CODEC##_pq(p, g, buf0, cd0 + j, ab0 + qb, &q[0],                     \
                           fo_vhmax(FO_EPU32(max)(mx0, mx1)), &A, mode,                        \
                           fo_##CODEC##_kind(q, po, 0));                                       \
            j += nq;                                                                           \
            qb += 1;                                                                           \
            continue;                                                                          \
        }
#define FO_P1_INT8_VEC(NAME, CODEC)                                                            \
    if (fo_##CODEC##_vok(&q[0], a0, fo_##CODEC##_kind(q, po, 0))) {                            \
        fo_vf va0 = fo_##CODEC##_vscale(&q[0], a0, fo_##CODEC##_kind(q, po, 0));               \
        fo_vi mx0 = FO_SI(setzero)(), mx1 = FO_SI(setzero)();                                  \
        FO_ALIGNED(64) float dec0[FO_QBLOCK];                                                  \
        const int dv = fo_##CODEC##_predecode(&q[0], c0, dec0, nq);                            \
        FO_IF(FO_SPLIT_##NAME, FO_P1_INT8_FULL(NAME, CODEC))                                   \
        for (; i + 2 * FO_W <= nq; i += 2 * FO_W) {                                            \
            fo_vf ya, yb;                                                                      \
            fo_vf pa = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(g + i), FO_PS(loadu)(p + i),     \
                                       fo_##CODEC##_vdec(&v0, c0, dec0, dv, i, va0, po), &ya); \
            fo_vf pb = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(g + i + FO_W),                   \
                                       FO_PS(loadu)(p + i + FO_W),                             \
                                       fo_##CODEC##_vdec(&v0, c0, dec0, dv, i + FO_W, va0, po), &yb); \
            FO_PS(storeu)(p + i, pa);                                                          \
            FO_PS(storeu)(p + i + FO_W, pb);                                                   \
            FO_PS(store)(buf0 + i, ya);                                                        \
            FO_PS(store)(buf0 + i + FO_W, yb);                                                 \
            mx0 = FO_EPU32(max)(mx0, fo_vabsbits(ya));                                         \
            mx1 = FO_EPU32(max)(mx1, fo_vabsbits(yb));                                         \
        }                                                                                      \
        m0 = fo_vhmax(FO_EPU32(max)(mx0, mx1));                                                \
    }
#define FO_P_VSETUP(NAME, STRUCT) STRUCT##_vec A; fo_##NAME##_vec_init(&A, &h);
#define FO_P1_BF16_BASE(NAME, HIGH)
#define FO_P1_INT8_BASE(NAME, CODEC)
#else
#define FO_P1_BF16_VEC(NAME, STRUCT, HIGH)
#define FO_P1_INT8_VEC(NAME, CODEC)
#define FO_P_VSETUP(NAME, STRUCT)
/* the baseline: per block widen into L1, update, round back (plain loops that the compiler
   vectorizes at SSE2 width; the hash's multiplies keep a fused loop scalar) */
#define FO_P1_BF16_BASE(NAME, HIGH)                                                            \
    for (; i < n; i += FO_QBLOCK) {                                                            \
        FO_ALIGNED(64) float b0[FO_QBLOCK];                                                    \
        const int nq = n - i < FO_QBLOCK ? (int)(n - i) : FO_QBLOCK;                           \
        const uint32_t bi = base + (uint32_t)i;                                                \
        int k;                                                                                 \
        for (k = 0; k < nq; k++) b0[k] = fo_bf2f(s0[i + k]);                                   \
        for (k = 0; k < nq; k++)                                                               \
            P[i + k] = fo_##NAME##_f32(&h, mode, G[i + k], P[i + k], b0[k], &b0[k]);           \
        for (k = 0; k < nq; k++) {                                                             \
            uint32_t r = fo_fmix32((bi + (uint32_t)k) ^ key);                                  \
            s0[i + k] = fo_bf16_sr(b0[k], HIGH ? r >> 16 : r & 0xffffu);                       \
        }                                                                                      \
    }
/* the baseline: decode, then the update in a loop the compiler vectorizes */
#define FO_P1_INT8_BASE(NAME, CODEC)                                                           \
    for (; i < nq; i++) buf0[i] = fo_##CODEC##_dec(&v0, c0[i], a0);                            \
    for (i = 0; i < nq; i++) p[i] = fo_##NAME##_f32(&h, mode, g[i], p[i], buf0[i], &buf0[i]);  \
    m0 = fo_absmax_bits(buf0, nq);
#endif

/* the quantized pass of codec CODEC (int8, f8), with its fused parameter + codes pass */
#define FO_QPASS1(NAME, STRUCT, CODEC)                                                         \
FO_IF(FO_SPLIT_##NAME, FO_PQ1(NAME, STRUCT, CODEC))                                            \
                                                                                               \
FO_INLINE void fo_##NAME##_##CODEC##_mode(float* P, const float* G, uint8_t* cd0, float* ab0,  \
                                     ptrdiff_t n, const fo_##CODEC##_q* q, const STRUCT##_f32* hp, \
                                     const int mode, const int po) {                           \
    const STRUCT##_f32 h = *hp;                                                                \
    FO_ALIGNED(64) float buf0[FO_QBLOCK];                                                      \
    ptrdiff_t i, j = 0, nq, qb = 0;                                                            \
    const fo_##CODEC##_dv v0 = fo_##CODEC##_dv_init(&q[0]);                                    \
    FO_P_VSETUP(NAME, STRUCT)                                                                  \
    (void)po;                                                                                  \
    while (j < n) {                                                                            \
        const float a0 = fo_##CODEC##_scale(&q[0], ab0[qb]);                                   \
        float* p = P + j;                                                                      \
        const float* g = G + j;                                                                \
        const uint8_t* c0 = cd0 + j;                                                           \
        uint32_t m0 = 0, t;                                                                    \
        nq = n - j < FO_QBLOCK ? n - j : FO_QBLOCK;                                            \
        i = 0;                                                                                 \
        FO_P1_INT8_VEC(NAME, CODEC)                                                            \
        FO_P1_INT8_BASE(NAME, CODEC)                                                           \
        for (; i < nq; i++) {                                                                  \
            float y0;                                                                          \
            p[i] = fo_##NAME##_f32(&h, mode, g[i], p[i], fo_##CODEC##_dec(&v0, c0[i], a0), &y0); \
            buf0[i] = y0;                                                                      \
            t = fo_f2u(y0) & 0x7fffffffu; m0 = t > m0 ? t : m0;                                \
        }                                                                                      \
        fo_##CODEC##_quant(buf0, nq, cd0 + j, ab0 + qb, &q[0], m0, fo_##CODEC##_kind(q, po, 0)); \
        j += nq;                                                                               \
        qb += 1;                                                                               \
    }                                                                                          \
}

#define FO_PASSES1(NAME, STRUCT, HIGH)                                                         \
                                                                                               \
FO_INLINE void fo_##NAME##_bf16_mode(float* P, const float* G, uint16_t* s0, ptrdiff_t n,      \
                                     uint32_t base, uint32_t key, const STRUCT##_f32* hp,      \
                                     const int mode) {                                         \
    const STRUCT##_f32 h = *hp;                                                                \
    ptrdiff_t i = 0;                                                                           \
    FO_P1_BF16_VEC(NAME, STRUCT, HIGH)                                                         \
    FO_P1_BF16_BASE(NAME, HIGH)                                                                \
    for (; i < n; i++) {                                                                       \
        float y;                                                                               \
        uint32_t r;                                                                            \
        P[i] = fo_##NAME##_f32(&h, mode, G[i], P[i], fo_bf2f(s0[i]), &y);                      \
        r = fo_fmix32((base + (uint32_t)i) ^ key);                                             \
        s0[i] = fo_bf16_sr(y, HIGH ? r >> 16 : r & 0xffffu);                                   \
    }                                                                                          \
}                                                                                              \
                                                                                               \
FO_QPASS1(NAME, STRUCT, int8)                                                                  \
FO_QPASS1(NAME, STRUCT, f8)


/* ---- two state buffers (one hash per element: its high half rounds s0, its low half s1) */
#if FO_LB_VEC
#define FO_P2_BF16_VEC(NAME, STRUCT)                                                           \
    {                                                                                          \
        STRUCT##_vec A;                                                                        \
        fo_vi idx = fo_viota(base), vkey = FO_VSET1I(key), w = FO_VSET1I(FO_W);                \
        fo_vi w2 = FO_VSET1I(2 * FO_W), lo16 = FO_VSET1I(0xffff);                              \
        fo_##NAME##_vec_init(&A, &h);                                                          \
        for (; i + 2 * FO_W <= n; i += 2 * FO_W) {                                             \
            fo_vf ma, va, mb, vb;                                                              \
            fo_vf pa = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(G + i), FO_PS(loadu)(P + i),     \
                                       fo_vbf16(s0 + i), fo_vbf16(s1 + i), &ma, &va);          \
            fo_vf pb = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(G + i + FO_W),                   \
                                       FO_PS(loadu)(P + i + FO_W), fo_vbf16(s0 + i + FO_W),    \
                                       fo_vbf16(s1 + i + FO_W), &mb, &vb);                     \
            fo_vi ha = fo_vfmix(FO_SI(xor)(idx, vkey));                                        \
            fo_vi hb = fo_vfmix(FO_SI(xor)(FO_EPI32(add)(idx, w), vkey));                      \
            idx = FO_EPI32(add)(idx, w2);                                                      \
            FO_PS(storeu)(P + i, pa);                                                          \
            FO_PS(storeu)(P + i + FO_W, pb);                                                   \
            fo_vsr2(s0 + i, ma, FO_EPI32(srli)(ha, 16), mb, FO_EPI32(srli)(hb, 16));           \
            fo_vsr2(s1 + i, va, FO_SI(and)(ha, lo16), vb, FO_SI(and)(hb, lo16));               \
        }                                                                                      \
    }
#define FO_P2_INT8_FULL(NAME, CODEC)                                                           \
            if (nq == FO_QBLOCK) {                                                             \
                fo_vi mx2 = FO_SI(setzero)(), mx3 = FO_SI(setzero)();                          \
                for (; i < FO_QBLOCK; i += 2 * FO_W) {                                         \
                    fo_vf m, v, mb, vb, x0, x0b, x1, x1b;                                      \
                    fo_##CODEC##_vdec2(&v0, c0, dec0, dv, i, va0, po0, &x0, &x0b);             \
                    fo_##CODEC##_vdec2(&v1, c1, dec1, dv, i, va1, po0 >> 1, &x1, &x1b);        \
                    fo_##NAME##_state_vec(&A, mode, FO_PS(loadu)(g + i), FO_PS(loadu)(p + i),  \
                                          x0, x1, &m, &v);                                     \
                    fo_##NAME##_state_vec(&A, mode, FO_PS(loadu)(g + i + FO_W),                \
                                          FO_PS(loadu)(p + i + FO_W), x0b, x1b, &mb, &vb);     \
                    FO_PS(store)(buf0 + i, m);                                                 \
                    FO_PS(store)(buf1 + i, v);                                                 \
                    FO_PS(store)(buf0 + i + FO_W, mb);                                         \
                    FO_PS(store)(buf1 + i + FO_W, vb);                                         \
                    mx0 = FO_EPU32(max)(mx0, fo_vabsbits(m));                                  \
                    mx1 = FO_EPU32(max)(mx1, fo_vabsbits(v));                                  \
                    mx2 = FO_EPU32(max)(mx2, fo_vabsbits(mb));                                 \
                    mx3 = FO_EPU32(max)(mx3, fo_vabsbits(vb));                                 \
                }                                                                              \
                fo_##NAME##_##CODEC##_pq(p, g, buf0, buf1, cd0 + j, ab0 + qb, cd1 + j, ab1 + qb, \
                               q, fo_vhmax(FO_EPU32(max)(mx0, mx2)),                           \
                               fo_vhmax(FO_EPU32(max)(mx1, mx3)), &A, mode, po0);              \
                j += nq;                                                                       \
                qb += 1;                                                                       \
                continue;                                                                      \
            }
#define FO_P2_INT8_VEC(NAME, CODEC)                                                            \
        if (fo_##CODEC##_vok(&q[0], a0, fo_##CODEC##_kind(q, po0, 0))                          \
            && fo_##CODEC##_vok(&q[1], a1, fo_##CODEC##_kind(q, po0, 1))) {                    \
            fo_vf va0 = fo_##CODEC##_vscale(&q[0], a0, fo_##CODEC##_kind(q, po0, 0));          \
            fo_vf va1 = fo_##CODEC##_vscale(&q[1], a1, fo_##CODEC##_kind(q, po0, 1));          \
            fo_vi mx0 = FO_SI(setzero)(), mx1 = FO_SI(setzero)();                              \
            FO_ALIGNED(64) float dec0[FO_QBLOCK];                                              \
            FO_ALIGNED(64) float dec1[FO_QBLOCK];                                              \
            const int dv = fo_##CODEC##_predecode(&q[0], c0, dec0, nq)                         \
                           && fo_##CODEC##_predecode(&q[1], c1, dec1, nq);                     \
            FO_IF(FO_SPLIT_##NAME, FO_P2_INT8_FULL(NAME, CODEC))                               \
            for (; i + FO_W <= nq; i += FO_W) {                                                \
                fo_vf m, v;                                                                    \
                fo_vf pn = fo_##NAME##_vec(&A, mode, FO_PS(loadu)(g + i), FO_PS(loadu)(p + i), \
                                           fo_##CODEC##_vdec(&v0, c0, dec0, dv, i, va0, po0),  \
                                           fo_##CODEC##_vdec(&v1, c1, dec1, dv, i, va1, po0 >> 1), &m, &v); \
                FO_PS(storeu)(p + i, pn);                                                      \
                FO_PS(store)(buf0 + i, m);                                                     \
                FO_PS(store)(buf1 + i, v);                                                     \
                mx0 = FO_EPU32(max)(mx0, fo_vabsbits(m));                                      \
                mx1 = FO_EPU32(max)(mx1, fo_vabsbits(v));                                      \
            }                                                                                  \
            m0 = fo_vhmax(mx0);                                                                \
            m1 = fo_vhmax(mx1);                                                                \
        }
#define FO_P2_BF16_BASE(NAME)
#define FO_P2_INT8_BASE(NAME, CODEC)
#else
#define FO_P2_BF16_VEC(NAME, STRUCT)
#define FO_P2_INT8_VEC(NAME, CODEC)
#define FO_P2_BF16_BASE(NAME)                                                                  \
    for (; i < n; i += FO_QBLOCK) {                                                            \
        FO_ALIGNED(64) float b0[FO_QBLOCK];                                                    \
        FO_ALIGNED(64) float b1[FO_QBLOCK];                                                    \
        const int nq = n - i < FO_QBLOCK ? (int)(n - i) : FO_QBLOCK;                           \
        const uint32_t bi = base + (uint32_t)i;                                                \
        int k;                                                                                 \
        for (k = 0; k < nq; k++) { b0[k] = fo_bf2f(s0[i + k]); b1[k] = fo_bf2f(s1[i + k]); }   \
        for (k = 0; k < nq; k++)                                                               \
            P[i + k] = fo_##NAME##_f32(&h, mode, G[i + k], P[i + k], b0[k], b1[k], &b0[k],     \
                                       &b1[k]);                                                \
        for (k = 0; k < nq; k++) {                                                             \
            uint32_t r = fo_fmix32((bi + (uint32_t)k) ^ key);                                  \
            s0[i + k] = fo_bf16_sr(b0[k], r >> 16);                                            \
            s1[i + k] = fo_bf16_sr(b1[k], r & 0xffffu);                                        \
        }                                                                                      \
    }
#define FO_P2_INT8_BASE(NAME, CODEC)                                                           \
        for (; i < nq; i++) {                                                                  \
            buf0[i] = fo_##CODEC##_dec(&v0, c0[i], a0);                                        \
            buf1[i] = fo_##CODEC##_dec(&v1, c1[i], a1);                                        \
        }                                                                                      \
        for (i = 0; i < nq; i++)                                                               \
            p[i] = fo_##NAME##_f32(&h, mode, g[i], p[i], buf0[i], buf1[i], &buf0[i], &buf1[i]); \
        m0 = fo_absmax_bits(buf0, nq);                                                         \
        m1 = fo_absmax_bits(buf1, nq);
#endif

/* the quantized pass of codec CODEC (int8, f8), with its fused parameter + codes pass */
#define FO_QPASS2(NAME, STRUCT, CODEC)                                                         \
FO_IF(FO_SPLIT_##NAME, FO_PQ2(NAME, STRUCT, CODEC))                                            \
                                                                                               \
FO_INLINE void fo_##NAME##_##CODEC##_mode(float* P, const float* G, uint8_t* cd0, float* ab0,  \
                                     uint8_t* cd1, float* ab1, ptrdiff_t n,                    \
                                     const fo_##CODEC##_q* q,                                  \
                                     const STRUCT##_f32* hp, const int mode, const int po0) {  \
    const STRUCT##_f32 h = *hp;                                                                \
    FO_ALIGNED(64) float buf0[FO_QBLOCK];                                                      \
    FO_ALIGNED(64) float buf1[FO_QBLOCK];                                                      \
    ptrdiff_t i, j = 0, nq, qb = 0;                                                            \
    const fo_##CODEC##_dv v0 = fo_##CODEC##_dv_init(&q[0]);                                    \
    const fo_##CODEC##_dv v1 = fo_##CODEC##_dv_init(&q[1]);                                    \
    FO_P_VSETUP(NAME, STRUCT)                                                                  \
    while (j < n) {                                                                            \
        const float a0 = fo_##CODEC##_scale(&q[0], ab0[qb]);                                   \
        const float a1 = fo_##CODEC##_scale(&q[1], ab1[qb]);                                   \
        float* p = P + j;                                                                      \
        const float* g = G + j;                                                                \
        const uint8_t* c0 = cd0 + j;                                                           \
        const uint8_t* c1 = cd1 + j;                                                           \
        uint32_t m0 = 0, m1 = 0, t;                                                            \
        nq = n - j < FO_QBLOCK ? n - j : FO_QBLOCK;                                            \
        i = 0;                                                                                 \
        FO_P2_INT8_VEC(NAME, CODEC)                                                            \
        FO_P2_INT8_BASE(NAME, CODEC)                                                           \
        for (; i < nq; i++) {                                                                  \
            float y0, y1;                                                                      \
            p[i] = fo_##NAME##_f32(&h, mode, g[i], p[i], fo_##CODEC##_dec(&v0, c0[i], a0),     \
                                   fo_##CODEC##_dec(&v1, c1[i], a1),                           \
                                   &y0, &y1);                                                  \
            buf0[i] = y0;                                                                      \
            buf1[i] = y1;                                                                      \
            t = fo_f2u(y0) & 0x7fffffffu; m0 = t > m0 ? t : m0;                                \
            t = fo_f2u(y1) & 0x7fffffffu; m1 = t > m1 ? t : m1;                                \
        }                                                                                      \
        fo_##CODEC##_quant(buf0, nq, cd0 + j, ab0 + qb, &q[0], m0, fo_##CODEC##_kind(q, po0, 0)); \
        fo_##CODEC##_quant(buf1, nq, cd1 + j, ab1 + qb, &q[1], m1, fo_##CODEC##_kind(q, po0, 1)); \
        j += nq;                                                                               \
        qb += 1;                                                                               \
    }                                                                                          \
}

#define FO_PASSES2(NAME, STRUCT)                                                               \
                                                                                               \
FO_INLINE void fo_##NAME##_bf16_mode(float* P, const float* G, uint16_t* s0, uint16_t* s1,     \
                                     ptrdiff_t n, uint32_t base, uint32_t key,                 \
                                     const STRUCT##_f32* hp, const int mode) {                 \
    const STRUCT##_f32 h = *hp;                                                                \
    ptrdiff_t i = 0;                                                                           \
    FO_P2_BF16_VEC(NAME, STRUCT)                                                               \
    FO_P2_BF16_BASE(NAME)                                                                      \
    for (; i < n; i++) {                                                                       \
        float y0, y1;                                                                          \
        uint32_t r;                                                                            \
        P[i] = fo_##NAME##_f32(&h, mode, G[i], P[i], fo_bf2f(s0[i]), fo_bf2f(s1[i]), &y0, &y1); \
        r = fo_fmix32((base + (uint32_t)i) ^ key);                                             \
        s0[i] = fo_bf16_sr(y0, r >> 16);                                                       \
        s1[i] = fo_bf16_sr(y1, r & 0xffffu);                                                   \
    }                                                                                          \
}                                                                                              \
                                                                                               \
FO_QPASS2(NAME, STRUCT, int8)                                                                  \
FO_QPASS2(NAME, STRUCT, f8)


#endif /* FO_LOWBIT_H */
