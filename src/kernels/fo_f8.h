/* fo_f8.h - the float8 codec of fastopt's low-precision state: block-wise minifloat codes.
 *
 * Why: int8 state decodes by table lookups (a value per code) and encodes by bucket tables;
 * on x86 those lookups are scalar loads, and they, not the bytes, bound the int8 step.
 * Minifloat codes need no table: a code shifted into a float16 pattern is a float16 number,
 * converted to float32 by one instruction (vcvtph2ps: F16C, present at every AVX2 level),
 * and a float32 rounds to a code by one float add whose ulp is the code's step, then back
 * to float16 by one instruction (vcvtps2ph).
 *
 * What (the specification, with its NumPy twin, is fastopt/kernels/_formats.py's float8
 * section): per block of FO_QBLOCK elements one float32 absmax a, as int8; per element a
 * code, e3m4 (sign, 3 exponent bits, 4 mantissa bits, bias 7) for signed state, e4m4
 * (bias 15) for non-negative state.  The largest code's unit value is S = 31/16; with
 * a' = max(a, 2^-126) (NaN kept) an element decodes to fl(unit(c) * fl(a' / S)) and
 * encodes as the nearest code (ties to even, saturated) of y = fl(x * fl(S / a')).
 *
 * How: the generic passes of fo_lowbit.h call, per codec (int8 there, f8 here):
 *   fo_f8_q               one state buffer's constants (filled by _lowbit.pyx.tp)
 *   fo_f8_dv, _dv_init    the decode constants, held in registers for a pass
 *   fo_f8_scale           the block's decode multiplier D from its absmax
 *   fo_f8_vok, _vscale    whether the vector decode is exact for D (else the block runs the
 *                         scalar loop), and its vector multiplier (e3m4: 2^8 D)
 *   fo_f8_predecode       a block's codes decoded up front (int8 with VBMI; f8: never)
 *   fo_f8_dec, fo_f8_vdec decode one code / FO_W codes (times D)
 *   fo_f8_vdec2           2W codes into two vectors (the full blocks' decode)
 *   fo_f8_kind            buffer j's code, from the passes' kind
 *   fo_f8_escale, _code1  the scalar encoder: the block's multiplier r, one code
 *   fo_f8_venc, _venc_ok, _venc_init, fo_f8_vcodes4   the vector encoder: whether it is exact
 *                         for the block's absmax (else the scalar encoder), 4 FO_W values to codes
 * from which fo_lowbit.h builds the block quantizer (fo_f8_quant) and the passes.  The scalar
 * code (the baseline build, the tails) reads a buffer's kind from its fo_f8_q; the vector
 * code takes it as a compile-time constant, the passes' "kind" (bit k set: buffer k is e4m4;
 * _lowbit.pyx.tp passes it from the kernel table), so each buffer's decode and encode carry
 * only their own code's instructions.
 *
 * Cost (avx512 build, Adam, per 16 elements, from objdump of the hot loops): the decode pass
 * ~28 instructions (m 5, v 4, the update 9, stores and absmax 6, loop), the codes pass ~30
 * (the parameter update 10 with its divide and square root, e3m4 codes 11, e4m4 codes 9.5).
 * Constant factors live in the block's scales (2^8 in D, 2^-8 in r: exact below absmax
 * 2^100, scalar loops above), and the gradient's multiply by gscale is compiled out when it
 * is 1 (FO_GS1).
 *
 * Zen 3 (AMD EPYC, family 25 model 1, 2 vCPUs, AVX2 + FMA + F16C, no AVX-512: the avx2
 * build; December, a shared machine under load 5-7, so thread CPU time, best of 5 rounds
 * alternating builds; benchmarks/c/f8_phases.c), Adam, ns per element, one thread, 16K
 * elements in cache, before -> after the 256-bit e3m4 encoder by float16 and the pack
 * without vpermq (fo_vh_join4): the step 0.976 -> 0.878; its first pass (decode, new
 * state, absmax) 0.33 -> 0.33, its second (the parameter update and both buffers' codes)
 * 0.65 -> 0.53; alone: the decode of m and v 0.16, the new state and absmax 0.155, the
 * parameter update 0.33 (its square root and division: the divider takes 8.7 cycles per 8
 * elements, 1.1 per element, whatever else runs), the codes of m 0.239 -> 0.217 and of v
 * 0.157 -> 0.140.  At 16M, one thread: the step 1.035 -> 0.932 against 0.49-0.53 for the
 * roofline pass (the same bytes with one add each): the float8 step is compute-bound on
 * Zen 3, the divider and ~60 vector instructions per 8 elements at ~2.8 per cycle, not
 * memory-bound.  The second pass costs more than its parts' maximum (0.53 against 0.33
 * and 0.36): the update's dependent multiply, add and subtract wait on the square root and
 * division and hold the scheduler (a microbenchmark: a sqrt-div chain plus 28 independent
 * operations 13.5 cycles, the chain alone 8.7, the operations alone 8.9).  Tried and dropped
 * at 256 bits: the update in the first pass (the rule unsplit; 1.0 against 0.88), the codes
 * before the update in the second (0.54 against 0.53).
 * Adopted on December 7 (issue 23; the same bits; int8 shares the passes and keeps its own
 * loops where they are faster): the first pass decodes 16 codes per load (fo_f8_vdec2: one
 * vpmovzxbw/vpmovsxbw ymm, one shift and mask, a vextracti128 per two vectors; int8's
 * fo_int8_vdec2 is its two lookups, unchanged), and the second issues the square roots of
 * the next 4 vectors before this group's codes (FO_PQ_AHEAD over the rule's
 * fo_<name>_ahead / fo_<name>_param_from, fo_rules.h: Adam, RMSprop, Adagrad, NAdam; not
 * for int8, whose codes pass is bound by its lookups: 1.83 against 1.72 with it).  Thread
 * CPU time, one thread, 16K elements in cache, best of 5, three alternating runs at load
 * 3.5-4: the first pass 0.321-0.324 -> 0.304-0.306, the second 0.528-0.539 -> 0.506-0.512,
 * the step 0.868-0.883 -> 0.843-0.852; at 16M (best of 2, three runs, load 2.8-4) the step
 * 0.93-1.26 -> 0.93-0.98.
 * Two threads at 16M (f8_phases.c, thread 0's CPU time over its half, per element of the
 * step, three alternating runs at load 2.8-4.6): the arithmetic scales (in cache, 0.84-0.86
 * ns per own element on each of two threads, as on one), the memory does not: the step
 * 0.49-0.75 (0.98-1.5 per own element against 0.93-1.46 on one thread) and the roofline pass
 * 0.30-0.34 (0.60-0.68 per own element against 0.46-0.67).  The two bounds come close
 * (0.42 of arithmetic and 0.31 of memory per element, against 0.845 and 0.47 on one
 * thread), and about the same 0.07-0.12 of memory time per element as on one thread
 * (0.09-0.13) stays unhidden, now beside half the arithmetic: ~8-9 ms for 16M without
 * descheduling (the best runs, 0.49-0.54) rather than the 7.5 that halving one thread's
 * figure predicts; the bench's ~11 ms adds descheduling by the other load (wall
 * clock in the same runs: 0.72-1.87).  A software prefetch of the next block's p, g and
 * codes during the second pass (FO_LB_PF = 1 or 2 blocks ahead; off) measured no faster
 * (0.56-0.66 and 0.45-0.62 against 0.49-0.75): the hardware prefetcher follows the four
 * streams, and what is left is the bandwidth two streaming cores share.
 * A float32 decode without vcvtph2ps (the code shifted into float32
 * bits, e=0 codes as float32 subnormals) would save one operation per vector but breaks
 * under DAZ (torch.set_flush_denormal), so it is not used.
 */
#ifndef FO_F8_H
#define FO_F8_H

#define FO_F8_S 1.9375f          /* the largest code's unit value */

/* One buffer's code: e3m4 (signed) or e4m4 (unsigned). */
typedef struct {
    uint32_t amask;     /* |x| bits: 0x7fffffff; e4m4 0xffffffff (a negative x -> 0 by a signed max) */
    uint32_t bias;      /* (127 - b) << 23: float32 exponent of unit 2^0 minus the code's e */
    uint32_t minnorm;   /* (128 - b) << 23: the smallest normal unit value's bits */
    float step;         /* the linear step, 2^(-b - 3) */
    uint32_t cmax;      /* the largest magnitude code: 0x7f, 0xff */
    uint32_t sgn;       /* the sign bit of a code: 0x80, 0 */
    uint32_t emask;     /* the exponent field: 7, 15 */
    uint8_t zero;       /* the code of 0 */
} fo_f8_q;

static inline void fo_f8_init(fo_f8_q* q, int is_signed) {
    const uint32_t b = is_signed ? 7 : 15;
    q->amask = is_signed ? 0x7fffffffu : 0xffffffffu;
    q->bias = (127 - b) << 23;
    q->minnorm = (128 - b) << 23;
    q->step = fo_u2f((127 - b - 3) << 23);
    q->cmax = is_signed ? 0x7f : 0xff;
    q->sgn = is_signed ? 0x80 : 0;
    q->emask = is_signed ? 7 : 15;
    q->zero = 0;
}

/* a' = max(a, 2^-126), a NaN kept */
static inline float fo_f8_floor(float a) { return a < 0x1p-126f ? 0x1p-126f : a; }

/* ---- scalar */

static inline float fo_f8_unit(uint32_t c, const fo_f8_q* q) {
    uint32_t e = (c >> 4) & q->emask, m = c & 15u;
    float v = e ? fo_u2f(((e << 23) + q->bias) | (m << 19)) : (float)m * q->step;
    return (c & q->sgn) ? -v : v;
}

/* The code of y (fo_f8_vh's rule, the code read from the float32 bits): |y| (e4m4: 0 when
   y < 0) rounded to the code grid by s = fl(|y| + M), M = 2^(max(e, 1 - b) + 19), whose
   float32 ulp is the step there; s's low bits count the steps k above M, so the code is
   k + 16 (max(e, 1 - b) - (1 - b)), saturated at cmax, with the sign (e3m4). */
static inline uint8_t fo_f8_code(float y, const fo_f8_q* q) {
    uint32_t u = fo_f2u(y), a = u & q->amask, e, m, c;
    if ((int32_t)a < 0) a = 0;
    e = a & 0x7f800000u;
    e = e > q->minnorm ? e : q->minnorm;
    m = e + (19u << 23);
    c = fo_f2u(fo_u2f(a) + fo_u2f(m)) - m + ((e - q->minnorm) >> 19);
    c = c < q->cmax ? c : q->cmax;
    return (uint8_t)(c | ((u >> 24) & q->sgn));
}

/* the scalar encoder: the block's r = fl(S / a') from its absmax bits, one code */
static inline float fo_f8_escale(const fo_f8_q* q, uint32_t mx) {
    (void)q;
    return FO_F8_S / fo_f8_floor(fo_u2f(mx));
}
static inline uint8_t fo_f8_code1(float x, float r, const fo_f8_q* q) { return fo_f8_code(x * r, q); }

/* buffer j's code: e4m4 when bit j of the passes' kind is set */
FO_INLINE int fo_f8_kind(const fo_f8_q* q, int kind, int j) { (void)q; return (kind >> j) & 1; }

/* the decode constants of a pass */
typedef struct { fo_f8_q s; } fo_f8_dv;

FO_INLINE fo_f8_dv fo_f8_dv_init(const fo_f8_q* q) {
    fo_f8_dv d;
    d.s = *q;
    return d;
}

/* the block's decode multiplier D = fl(a' / S) */
static inline float fo_f8_scale(const fo_f8_q* q, float a) { (void)q; return fo_f8_floor(a) / FO_F8_S; }

/* Whether the vector decode of a block of kind-`kind` codes is exact with D: e3m4 multiplies
   by fl(2^8 D) (fo_f8_vscale), which is 2^8 D exactly unless it overflows; from D = 2^100
   on (absmax ~2^101) the block takes the scalar loop instead (a NaN or infinite D is kept
   by both orders) */
FO_INLINE int fo_f8_vok(const fo_f8_q* q, float D, const int kind) {
    (void)q;
    return (kind & 1) || !(D >= 0x1p100f && D < INFINITY);
}

FO_INLINE float fo_f8_dec(const fo_f8_dv* d, uint8_t c, float D) { return fo_f8_unit(c, &d->s) * D; }

#if FO_LB_VEC
/* the vector decode's multiplier: D (e4m4), fl(2^8 D) (e3m4: float16's exponent bias is 15,
   e3m4's 7; 2^8 D is exact where fo_f8_vok holds, and (f 2^8) D = f (2^8 D) for the
   float16 value f of every code, one multiply fewer per vector) */
FO_INLINE fo_vf fo_f8_vscale(const fo_f8_q* q, float D, const int kind) {
    (void)q;
    return FO_PS(set1)((kind & 1) ? D : D * 256.0f);
}

/* FO_W codes -> float32 values times D (vD: fo_f8_vscale); kind & 1: e4m4, else e3m4.
   e4m4: the code's 8 bits at float16 bits 6..13.  e3m4: sign-extended to 16 bits, shifted
   by 6 and masked (0x9fff: the sign at bit 15, the 7 low bits at 6..12). */
FO_INLINE fo_vf fo_f8_vdec(const fo_f8_dv* d, const uint8_t* c0, const float* out, int pd,
                           ptrdiff_t i, fo_vf vD, const int kind) {
    const uint8_t* c = c0 + i;
    fo_vf f;
    (void)d; (void)out; (void)pd;
#if FO_VBYTES == 64
    __m128i b = _mm_loadu_si128((const __m128i*)c);
    if (kind & 1)
        f = _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 6));
    else
        f = _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 6),
                                             _mm256_set1_epi16(0x9fff)));
#else
    __m128i b = _mm_loadl_epi64((const __m128i*)c);
    if (kind & 1)
        f = _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(b), 6));
    else
        f = _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(b), 6),
                                          _mm_set1_epi16(0x9fff)));
#endif
    return FO_PS(mul)(f, vD);
}

/* 2W codes -> two vectors (codes i.. and i + W..), each as fo_f8_vdec's (the same bits).  At
   256 bits one 16-byte load widened to 16 words by one vpmovzxbw/vpmovsxbw ymm, shifted and
   masked once, and its halves converted (vextracti128 for the high one): per two vectors one
   load, widen, shift and mask fewer than two fo_f8_vdec (Zen 3, avx2 build, one thread,
   16K elements in cache: Adam float8's first pass 0.323 -> 0.306 ns/element).  At 512 bits
   two fo_f8_vdec (each already 16 codes per load). */
FO_INLINE void fo_f8_vdec2(const fo_f8_dv* d, const uint8_t* c0, const float* out, int pd,
                           ptrdiff_t i, fo_vf vD, const int kind, fo_vf* f0, fo_vf* f1) {
#if FO_VBYTES == 64
    *f0 = fo_f8_vdec(d, c0, out, pd, i, vD, kind);
    *f1 = fo_f8_vdec(d, c0, out, pd, i + FO_W, vD, kind);
#else
    __m128i b = _mm_loadu_si128((const __m128i*)(c0 + i));
    __m256i w;
    (void)d; (void)out; (void)pd;
    if (kind & 1)
        w = _mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 6);
    else
        w = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 6),
                             _mm256_set1_epi16(0x9fff));
    *f0 = FO_PS(mul)(_mm256_cvtph_ps(_mm256_castsi256_si128(w)), vD);
    *f1 = FO_PS(mul)(_mm256_cvtph_ps(_mm256_extracti128_si256(w, 1)), vD);
#endif
}

/* (no predecoding: a vector's codes decode in a few instructions) */
FO_INLINE int fo_f8_predecode(const fo_f8_q* q, const uint8_t* c, float* out, ptrdiff_t n) {
    (void)q; (void)c; (void)out; (void)n;
    return 0;
}

/* The vector encoder's constants for one block: r = fl(S / a') from its absmax bits mx; the
   e3m4 encoder (fo_f8_vh_e3m4) works on y 2^-8 and takes fl(r 2^-8), exact while
   r >= 2^-118: fo_f8_venc_ok is false for e3m4 from absmax 2^100 on (that block's codes are
   then the scalar encoder's). */
typedef struct { fo_vf r; } fo_f8_venc;

FO_INLINE int fo_f8_venc_ok(const fo_f8_q* q, uint32_t mx, const int kind) {
    (void)q;
    return (kind & 1) || mx < 0x71800000u;
}

FO_INLINE void fo_f8_venc_init(fo_f8_venc* E, const fo_f8_q* q, uint32_t mx) {
    const float r = FO_F8_S / fo_f8_floor(fo_u2f(mx));
    E->r = FO_PS(set1)(q->sgn ? r * 0x1p-8f : r);
}

/* Half a vector of 16-bit lanes (one per float32 lane): the codes' float16 patterns; those
   of 4 vectors x0..x3 joined into two vectors a and b (fo_vh_join4), and 4W bytes, one per
   word of a and b (each 0..255 or saturated to 255), stored in x0..x3's order (fo_vh_store). */
#if FO_VBYTES == 64
typedef __m256i fo_vh;
#define FO_F8_CVTPH(x) _mm512_cvtps_ph((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
FO_INLINE fo_vi fo_vh_join(fo_vh a, fo_vh b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}
/* a = (x0, x1), b = (x2, x3): the pack interleaves them by 128-bit lanes, one permute */
FO_INLINE void fo_vh_join4(fo_vh h0, fo_vh h1, fo_vh h2, fo_vh h3, fo_vi* a, fo_vi* b) {
    *a = fo_vh_join(h0, h1);
    *b = fo_vh_join(h2, h3);
}
FO_INLINE void fo_vh_store(uint8_t* out, fo_vi a, fo_vi b) {
    _mm512_storeu_si512((void*)out, _mm512_permutexvar_epi64(
        _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_packus_epi16(a, b)));
}
#else
typedef __m128i fo_vh;
#define FO_F8_CVTPH(x) _mm256_cvtps_ph((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
FO_INLINE fo_vi fo_vh_join(fo_vh a, fo_vh b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
}
/* a = (x0, x2), b = (x1, x3): the pack of a and b, lane by lane, is then in order, without
   the lane-crossing vpermq that (x0, x1), (x2, x3) need (Zen 3, one thread, 16K elements in
   cache: the codes of m 0.217 ns/element against 0.239, of v 0.140 against 0.157) */
FO_INLINE void fo_vh_join4(fo_vh h0, fo_vh h1, fo_vh h2, fo_vh h3, fo_vi* a, fo_vi* b) {
    *a = fo_vh_join(h0, h2);
    *b = fo_vh_join(h1, h3);
}
FO_INLINE void fo_vh_store(uint8_t* out, fo_vi a, fo_vi b) {
    _mm256_storeu_si256((__m256i*)out, _mm256_packus_epi16(a, b));
}
#endif

/* e4m4 (kind & 1): the codes of W values x, as float16 patterns.  y = fl(x * r) (0 when
   negative) rounded to the code grid by one float add (y + M, M = 2^(max(e, -14) + 19) with
   e the exponent of y: its float32 ulp is the code's step there) and an exact subtraction
   of M, then converted to float16 (exact: the rounded value is on the grid); the code is
   bits 6..13, 256 for a y rounded up to 2 (the narrowing to bytes saturates it). */
FO_INLINE fo_vh fo_f8_vh_e4m4(fo_vf x, const fo_f8_venc* E) {
    fo_vi u = FO_SI(castps)(FO_PS(mul)(x, E->r));
    fo_vi e = FO_SI(and)(u, FO_VSET1I(0x7f800000));
    fo_vi a = FO_EPI32(max)(u, FO_SI(setzero)());
    fo_vf m = FO_SI2PS(FO_EPI32(add)(FO_EPI32(max)(e, FO_VSET1I(113u << 23)),
                                     FO_VSET1I(19u << 23)));
    return FO_F8_CVTPH(FO_PS(sub)(FO_PS(add)(FO_SI2PS(a), m), m));
}

/* e3m4 (kind 0): the codes of W values x as float16 patterns, by e4m4's rule on
   h = fl(x fl(r 2^-8)) = fl(x r) 2^-8 (exact above 2^-126; below, the code is 0 both ways):
   e3m4's grid times 2^-8 is float16's with 4 mantissa bits and exponent fields 0..7.  |h|,
   clamped to the largest code's 1.9375 2^-8 (the saturation), rounded to the grid by the
   add of M and converted, with h's sign put back: the sign at bit 15, the code's 7 low bits
   at 6..12 (fo_f8_hcode_e3m4 then makes them the code).  At 512 bits the clamp is one
   vrangeps and the sign one vpternlogd: 11.5 instructions per vector against 17 for the
   integer rule it replaced (the exponent re-biased and the mantissa rounded by an integer
   add, |y| + 2^13 below the normal range, blended; _formats' kernel_code) (Zen 4, with the
   scale folding: Adam float8 0.94x the time in cache, 0.93-0.95x at 16M).  At 256 bits an
   and, a vminps, an and and an or: 13 instructions per vector with the packing's share,
   against 18 (Zen 3, AMD EPYC family 25 model 1, avx2 build, one thread, 16K elements in
   cache, December: the parameter update + codes pass of Adam float8 0.59 ns/element against
   0.65, the whole step 0.93 against 0.98). */
#if FO_VBYTES == 64
FO_INLINE fo_vh fo_f8_vh_e3m4(fo_vf x, const fo_f8_venc* E) {
    fo_vf h = FO_PS(mul)(x, E->r);
    fo_vf a = _mm512_range_ps(h, _mm512_set1_ps(0x1.fp-8f), 0x0a);   /* min(|h|, |c|), sign 0 */
    fo_vi e = FO_EPI32(max)(FO_SI(and)(FO_SI(castps)(a), FO_VSET1I(0x7f800000)),
                            FO_VSET1I(113u << 23));
    fo_vf m = FO_SI2PS(FO_EPI32(add)(e, FO_VSET1I(19u << 23)));
    fo_vi s = FO_SI(castps)(FO_PS(sub)(FO_PS(add)(a, m), m));
    /* s | (h & sign) */
    s = _mm512_ternarylogic_epi32(s, FO_SI(castps)(h), FO_VSET1I(0x80000000u), 0xf8);
    return FO_F8_CVTPH(FO_SI2PS(s));
}
/* 2W such patterns -> the codes (0..255) in 16-bit lanes: bits 6..12, and bit 15 at bit 7 */
FO_INLINE fo_vi fo_f8_hcode_e3m4(fo_vi w) {
    return _mm512_ternarylogic_epi32(_mm512_srli_epi16(w, 6), _mm512_srli_epi16(w, 8),
                                     _mm512_set1_epi16(0x7f), 0xe4);
}
#else
FO_INLINE fo_vh fo_f8_vh_e3m4(fo_vf x, const fo_f8_venc* E) {
    fo_vf h = FO_PS(mul)(x, E->r);
    fo_vf a = FO_PS(min)(FO_SI2PS(FO_SI(and)(FO_SI(castps)(h), FO_VSET1I(0x7fffffff))),
                         FO_PS(set1)(0x1.fp-8f));                  /* min(|h|, c) */
    fo_vi e = FO_EPI32(max)(FO_SI(and)(FO_SI(castps)(a), FO_VSET1I(0x7f800000)),
                            FO_VSET1I(113u << 23));
    fo_vf m = FO_SI2PS(FO_EPI32(add)(e, FO_VSET1I(19u << 23)));
    fo_vi s = FO_SI(castps)(FO_PS(sub)(FO_PS(add)(a, m), m));
    s = FO_SI(or)(s, FO_SI(and)(FO_SI(castps)(h), FO_VSET1I(0x80000000u)));
    return FO_F8_CVTPH(FO_SI2PS(s));
}
/* the same at 256 bits: shifted by 6 (the code's 7 low bits at 0..6, bits 7 and 8 zero, the
   sign at bit 9), then each word's two bytes summed as lo + 64 hi by one vpmaddubsw (the
   sign's 2 becomes 128) */
FO_INLINE fo_vi fo_f8_hcode_e3m4(fo_vi w) {
    return _mm256_maddubs_epi16(_mm256_srli_epi16(w, 6), _mm256_set1_epi16(0x4001));
}
#endif

/* the codes of 4W values, stored in order */
FO_INLINE void fo_f8_vcodes4(uint8_t* out, const fo_f8_venc* E, fo_vf x0, fo_vf x1, fo_vf x2,
                             fo_vf x3, const int kind) {
    fo_vi a, b;
    if (kind & 1) {
        fo_vh_join4(fo_f8_vh_e4m4(x0, E), fo_f8_vh_e4m4(x1, E), fo_f8_vh_e4m4(x2, E),
                    fo_f8_vh_e4m4(x3, E), &a, &b);
        fo_vh_store(out, FO_EPI16(srli)(a, 6), FO_EPI16(srli)(b, 6));
    } else {
        fo_vh_join4(fo_f8_vh_e3m4(x0, E), fo_f8_vh_e3m4(x1, E), fo_f8_vh_e3m4(x2, E),
                    fo_f8_vh_e3m4(x3, E), &a, &b);
        fo_vh_store(out, fo_f8_hcode_e3m4(a), fo_f8_hcode_e3m4(b));
    }
}
#endif /* FO_LB_VEC */

#endif /* FO_F8_H */
