/* fo_f8.h - the float8 codec of fastopt's low-precision state: block-wise minifloat codes.
 *
 * Why: int8 state decodes by table lookups (a value per code) and encodes by bucket tables;
 * on x86 those lookups are scalar loads, and they, not the bytes, bound the int8 step.
 * Minifloat codes need no table: a code shifted into a float16 pattern is a float16 number,
 * converted to float32 by one instruction (vcvtph2ps: F16C, present at every AVX2 level),
 * and a float32 rounds to a code by integer arithmetic on its bits.
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
 *   fo_f8_predecode       a block's codes decoded up front (int8 with VBMI; f8: never)
 *   fo_f8_dec, fo_f8_vdec decode one code / FO_W codes (times D)
 *   fo_f8_quant_k/_known  a block's absmax and codes from its new state
 *   fo_f8_venc, _venc_init, fo_f8_vcode   the vector encoder (the fused param+codes pass)
 * The scalar code (the baseline build, the tails) reads a buffer's kind from its fo_f8_q; the
 * vector code takes it as a compile-time constant, the passes' "kind" (bit k set: buffer k is
 * e4m4; _lowbit.pyx.tp passes it from the kernel table), so each buffer's decode and encode
 * carry only their own code's instructions.
 */
#ifndef FO_F8_H
#define FO_F8_H

#define FO_F8_S 1.9375f          /* the largest code's unit value */

/* One buffer's code: e3m4 (signed) or e4m4 (unsigned). */
typedef struct {
    uint32_t amask;     /* |x| bits: 0x7fffffff; e4m4 0xffffffff (a negative x -> 0 by a signed max) */
    uint32_t bias;      /* (127 - b) << 23: float32 exponent of unit 2^0 minus the code's e */
    uint32_t minnorm;   /* (128 - b) << 23: the smallest normal unit value's bits */
    float magic;        /* 2^(24 - b - 4): its float32 ulp is the linear step below minnorm */
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
    q->magic = fo_u2f((127 + 24 - b - 4) << 23);
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

static inline uint8_t fo_f8_code(float y, const fo_f8_q* q) {
    uint32_t u = fo_f2u(y), a = u & q->amask, c;
    if ((int32_t)a < 0) a = 0;
    if (a < q->minnorm) {
        c = fo_f2u(fo_u2f(a) + q->magic) - fo_f2u(q->magic);
    } else {
        uint32_t n = a - q->bias;
        c = (n + 0x3ffffu + ((n >> 19) & 1u)) >> 19;
    }
    c = c < q->cmax ? c : q->cmax;
    return (uint8_t)(c | ((u >> 24) & q->sgn));
}

/* the decode constants of a pass */
typedef struct { fo_f8_q s; } fo_f8_dv;

FO_INLINE fo_f8_dv fo_f8_dv_init(const fo_f8_q* q) {
    fo_f8_dv d;
    d.s = *q;
    return d;
}

/* the block's decode multiplier D = fl(a' / S) */
static inline float fo_f8_scale(const fo_f8_q* q, float a) { (void)q; return fo_f8_floor(a) / FO_F8_S; }

FO_INLINE float fo_f8_dec(const fo_f8_dv* d, uint8_t c, float D) { return fo_f8_unit(c, &d->s) * D; }

#if FO_LB_VEC
/* FO_W codes -> float32 values times D (vD: D broadcast); kind & 1: e4m4, else e3m4.
   e4m4: the code's 8 bits at float16 bits 6..13.  e3m4: sign-extended to 16 bits, shifted
   by 6 and masked (0x9fff: the sign at bit 15, the 7 low bits at 6..12), then times 2^8
   (float16's exponent bias is 15, e3m4's 7). */
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
    return (kind & 1) ? FO_PS(mul)(f, vD) : FO_PS(mul)(FO_PS(mul)(f, FO_PS(set1)(256.0f)), vD);
}

/* (no predecoding: a vector's codes decode in a few instructions) */
FO_INLINE int fo_f8_predecode(const fo_f8_q* q, const uint8_t* c, float* out, ptrdiff_t n) {
    (void)q; (void)c; (void)out; (void)n;
    return 0;
}

/* the vector encoder's constants for one block */
typedef struct {
    fo_vf r, magic;
    fo_vi amask, bias, minnorm, magicbits, cmax, sgn, half, one;
} fo_f8_venc;

/* r = fl(S / a') from the block's absmax bits mx */
FO_INLINE void fo_f8_venc_init(fo_f8_venc* E, const fo_f8_q* q, uint32_t mx) {
    E->r = FO_PS(set1)(FO_F8_S / fo_f8_floor(fo_u2f(mx)));
    E->magic = FO_PS(set1)(q->magic);
    E->amask = FO_VSET1I(q->amask);
    E->bias = FO_VSET1I(q->bias);
    E->minnorm = FO_VSET1I(q->minnorm);
    E->magicbits = FO_VSET1I(fo_f2u(q->magic));
    E->cmax = FO_VSET1I(q->cmax);
    E->sgn = FO_VSET1I(q->sgn);
    E->half = FO_VSET1I(0x3ffff);
    E->one = FO_VSET1I(1);
}

/* fo_f8_code(x * r) on every lane (x given by its bits u, as fo_vcode); kind & 1: e4m4
   (a negative value -> 0, no sign), else e3m4 */
FO_INLINE fo_vi fo_f8_vcode(fo_vi ux, const fo_f8_venc* E, const int kind) {
    fo_vi u = FO_SI(castps)(FO_PS(mul)(FO_SI2PS(ux), E->r));
    fo_vi a = (kind & 1) ? FO_EPI32(max)(u, FO_SI(setzero)()) : FO_SI(and)(u, E->amask);
    fo_vi n = FO_EPI32(sub)(a, E->bias);
    fo_vi s = FO_EPI32(sub)(FO_SI(castps)(FO_PS(add)(FO_SI2PS(a), E->magic)), E->magicbits);
    fo_vi c;
    n = FO_EPI32(srli)(FO_EPI32(add)(FO_EPI32(add)(n, E->half),
                                     FO_SI(and)(FO_EPI32(srli)(n, 19), E->one)), 19);
#if FO_VBYTES == 64
    c = _mm512_mask_mov_epi32(n, _mm512_cmplt_epi32_mask(a, E->minnorm), s);
#else
    c = _mm256_blendv_epi8(n, s, _mm256_cmpgt_epi32(E->minnorm, a));
#endif
    c = FO_EPI32(min)(c, E->cmax);
    return (kind & 1) ? c : FO_SI(or)(c, FO_SI(and)(FO_EPI32(srli)(u, 24), E->sgn));
}
#endif /* FO_LB_VEC */

/* Codes and absmax of x[0..n) whose absmax bits mx are known: a NaN or an infinity gives
   absmax NaN and code 0 everywhere; otherwise absmax a and the nearest codes of x * r. */
FO_INLINE void fo_f8_quant_k(const float* x, ptrdiff_t n, uint8_t* codes, float* absmax,
                             const fo_f8_q* q, uint32_t mx, const int kind) {
    ptrdiff_t i = 0;
    float r;
    (void)kind;
    if (mx >= 0x7f800000u) {
        absmax[0] = NAN;
        memset(codes, q->zero, (size_t)n);
        return;
    }
    absmax[0] = fo_u2f(mx);
    r = FO_F8_S / fo_f8_floor(fo_u2f(mx));
#if FO_LB_VEC
    {
        fo_f8_venc E;
        fo_f8_venc_init(&E, q, mx);
        const ptrdiff_t nv = n - n % (4 * FO_W);
        for (; i < nv; i += 4 * FO_W)
            fo_vcodes4(codes + i,
                       fo_f8_vcode(FO_SI(castps)(FO_PS(loadu)(x + i)), &E, kind),
                       fo_f8_vcode(FO_SI(castps)(FO_PS(loadu)(x + i + FO_W)), &E, kind),
                       fo_f8_vcode(FO_SI(castps)(FO_PS(loadu)(x + i + 2 * FO_W)), &E, kind),
                       fo_f8_vcode(FO_SI(castps)(FO_PS(loadu)(x + i + 3 * FO_W)), &E, kind));
    }
#endif
    for (; i < n; i++) codes[i] = fo_f8_code(x[i] * r, q);
}

/* the same, the kind read from q (one branch per block) */
static inline void fo_f8_quant_known(const float* x, ptrdiff_t n, uint8_t* codes,
                                     float* absmax, const fo_f8_q* q, uint32_t mx) {
    if (q->sgn) fo_f8_quant_k(x, n, codes, absmax, q, mx, 0);
    else fo_f8_quant_k(x, n, codes, absmax, q, mx, 1);
}

#endif /* FO_F8_H */
