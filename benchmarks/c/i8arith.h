/* The int8 default maps decoded by arithmetic (issue 23, an experiment measured by
 * benchmarks/c/i8arith.c; not used by the kernels, see the figures in src/kernels/fo_lowbit.h).
 *
 * bitsandbytes' dynamic maps (fastopt/kernels/_formats.py, dynamic_map): per decade i = 0..6,
 * N = 2^i (signed map) or 2^(i+1) (unsigned) values, value_j = fl(s_i/2 * fl(b_j + b_{j+1})),
 * s_i = fl32(10^(i-6)), b the float32 linspace(0.1, 1, N + 1) as torch computes it:
 * b_k = fl(0.1f + st k) for k < N/2, fl(1 - st (N - k)) otherwise (one rounding each: an
 * fma), st = fl((1 - 0.1f) / N).  A code c gives a (signed: |c - 127|, 0..128; unsigned:
 * c + 1, 1..256); N = 2^floor(log2 a) is a's float32 with its mantissa cleared, j = a - N,
 * and the decade's constants (st, s_i/2) are one 8-entry permute each, indexed by the low 3
 * bits of a's float32 exponent.  The slot of a = 128 (signed) and 256 (unsigned): st = 0, so
 * b_j = b_{j+1} = 0.1f, and s/2 = 5: fl(fl(0.1f + 0.1f) 5) = 1.0.
 *
 * One code path for both maps: a = |c - o1|, and the value times sign(c - o2) (the sign of a
 * signed map's value, 0 for the zero code; o1, o2 = 127, 127 signed, -1, 0 unsigned).
 * exact = 1: the formula above, all 256 values of each map bit for bit (i8arith.c checks
 * them against the table); exact = 0: one fma per lane, fl(A_i + B_i j) with A_i, B_i the
 * decade's line (wrong in 106 / 111 of the 256 values: a lower bound of the cost of any
 * arithmetic decode with per-decade constants). */
#include <immintrin.h>
typedef struct { __m256 st, sh, A, B; __m256i o1, o2; } fo_adec;

static void fo_adec_init(fo_adec* D, int signed_) {
    float st[8], sh[8], A[8], B[8];
    for (int s = 0; s < 8; s++) {
        /* slot s = the low 3 bits of a's float32 exponent e, N = 2^(e - 127) */
        int e = s < 7 ? 128 + s : 127;          /* s = 7: N = 1 (and 2^8, unsigned) */
        int lgN = e - 127;                       /* 0..7 */
        int i = signed_ ? lgN : lgN - 1;         /* decade */
        if (i < 0 || i > 6) {                    /* the 1.0 slot (unsigned a = 1: the zero code) */
            st[s] = 0.0f; sh[s] = 5.0f; A[s] = 1.0f; B[s] = 0.0f;   /* fl(fl(0.1f + 0.1f) 5) = 1 */
            continue;
        }
        float N = (float)(1 << lgN);
        float stp = (1.0f - 0.1f) / N;
        double p = 1;
        for (int k = 0; k < 6 - i; k++) p *= 10;
        float sc = (float)(1.0 / p);
        st[s] = stp; sh[s] = sc * 0.5f;
        A[s] = sc * (0.1f + stp / 2); B[s] = sc * stp;
    }
    D->st = _mm256_loadu_ps(st); D->sh = _mm256_loadu_ps(sh);
    D->A = _mm256_loadu_ps(A); D->B = _mm256_loadu_ps(B);
    D->o1 = _mm256_set1_epi32(signed_ ? 127 : -1);
    D->o2 = _mm256_set1_epi32(signed_ ? 127 : 0);
}

/* the values of codes c[0..8) (the caller multiplies by the absmax) */
static inline __m256 fo_adec8(const fo_adec* D, const uint8_t* c, const int exact) {
    __m256i ci = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)c));
    __m256i a = _mm256_abs_epi32(_mm256_sub_epi32(ci, D->o1));
    __m256i t = _mm256_sub_epi32(ci, D->o2);
    __m256 fa = _mm256_cvtepi32_ps(a);
    __m256i e = _mm256_srli_epi32(_mm256_castps_si256(fa), 23);
    __m256 N = _mm256_and_ps(fa, _mm256_castsi256_ps(_mm256_set1_epi32((int)0xff800000u)));
    __m256 jf = _mm256_sub_ps(fa, N);
    __m256 val;
    if (exact) {
        __m256 st = _mm256_permutevar8x32_ps(D->st, e), sh = _mm256_permutevar8x32_ps(D->sh, e);
        const __m256 one = _mm256_set1_ps(1.0f), b0 = _mm256_set1_ps(0.1f);
        __m256 h = _mm256_mul_ps(N, _mm256_set1_ps(0.5f));
        __m256 j1 = _mm256_add_ps(jf, one);
        __m256 r = _mm256_sub_ps(N, jf), r1 = _mm256_sub_ps(r, one);
        __m256 bj = _mm256_blendv_ps(_mm256_fnmadd_ps(st, r, one), _mm256_fmadd_ps(st, jf, b0),
                                     _mm256_cmp_ps(jf, h, _CMP_LT_OQ));
        __m256 bj1 = _mm256_blendv_ps(_mm256_fnmadd_ps(st, r1, one), _mm256_fmadd_ps(st, j1, b0),
                                      _mm256_cmp_ps(j1, h, _CMP_LT_OQ));
        val = _mm256_mul_ps(_mm256_add_ps(bj, bj1), sh);
    } else {
        val = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(D->B, e), jf, _mm256_permutevar8x32_ps(D->A, e));
    }
    return _mm256_mul_ps(val, _mm256_cvtepi32_ps(_mm256_sign_epi32(_mm256_set1_epi32(1), t)));
}
