/* fo_simd.h - the widest vector of the level being compiled, named once for every kernel.
 *
 * Why: fastopt compiles each kernel module once per instruction-set level (baseline, avx2,
 * avx512: fastopt/runtime/levels.py) and dispatches at run time.  A kernel written with the
 * macros below is one source for all of them: FO_PS(add) is _mm512_add_ps in the avx512
 * build, _mm256_add_ps in the avx2 build and _mm_add_ps in an SSE2 baseline build.
 *
 * Floating point (every level with SSE2):
 *   FO_VBYTES     the vector width in bytes (64, 32 or 16); undefined without SSE2
 *   FO_PS(op)     the float intrinsic of that width, fo_ps its type
 *   FO_PD(op)     the double intrinsic, fo_pd its type
 * 32-bit integers (AVX2 and AVX-512F only: SSE2 lacks unsigned max and 32-bit multiply):
 *   FO_IVEC       defined when the integer macros are
 *   FO_EPI32(op)  _mm512_<op>_epi32 / _mm256_<op>_epi32 (add, sub, srli, mullo, min, ...)
 *   FO_EPU32(op)  the unsigned forms (min, max)
 *   FO_EPI16(op)  the 16-bit lane forms (srli, packus, ...)
 *   FO_SI(op)     the whole-register forms (and, xor, or, setzero, castps), fo_si the type
 *   FO_SI2PS(x)   the bit cast of fo_si to fo_ps
 * Operations whose form differs by width (masks, narrowing, lane shuffles) are written per
 * width where they are used, next to the generic code.
 */
#ifndef FO_SIMD_H
#define FO_SIMD_H

#include <stdint.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FO_VBYTES 64
#define FO_PS(op) _mm512_##op##_ps
#define FO_PD(op) _mm512_##op##_pd
typedef __m512 fo_ps;
typedef __m512d fo_pd;
#define FO_IVEC 1
#define FO_EPI32(op) _mm512_##op##_epi32
#define FO_EPU32(op) _mm512_##op##_epu32
#define FO_EPI16(op) _mm512_##op##_epi16
#define FO_SI(op) _mm512_##op##_si512
#define FO_SI2PS(x) _mm512_castsi512_ps(x)
typedef __m512i fo_si;
#elif defined(__AVX__)
#define FO_VBYTES 32
#define FO_PS(op) _mm256_##op##_ps
#define FO_PD(op) _mm256_##op##_pd
typedef __m256 fo_ps;
typedef __m256d fo_pd;
#if defined(__AVX2__)
#define FO_IVEC 1
#define FO_EPI32(op) _mm256_##op##_epi32
#define FO_EPU32(op) _mm256_##op##_epu32
#define FO_EPI16(op) _mm256_##op##_epi16
#define FO_SI(op) _mm256_##op##_si256
#define FO_SI2PS(x) _mm256_castsi256_ps(x)
typedef __m256i fo_si;
#endif
#elif defined(__SSE2__)
#define FO_VBYTES 16
#define FO_PS(op) _mm_##op##_ps
#define FO_PD(op) _mm_##op##_pd
typedef __m128 fo_ps;
typedef __m128d fo_pd;
#endif

#if defined(__GNUC__)
#define FO_INLINE static inline __attribute__((always_inline))
#define FO_ALIGNED(n) __attribute__((aligned(n)))
#elif defined(_MSC_VER)
#define FO_INLINE static __forceinline
#define FO_ALIGNED(n) __declspec(align(n))
#else
#define FO_INLINE static inline
#define FO_ALIGNED(n)
#endif

#endif /* FO_SIMD_H */
