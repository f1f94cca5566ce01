/* fo_rules.h - each optimizer's update rule, written once.
 *
 * Why: an update rule is run by the dense float32 and float64 loops of _optim and by the
 * bfloat16 and int8 passes of fo_lowbit.h (scalar tails and 256/512-bit vectors).  Each copy
 * of a rule is a chance for the copies to drift apart by one rounding, so every rule is
 * spelled once, below, over an arithmetic: fo_add, fo_sub, fo_mul, fo_div, fo_sqrt, fo_sign,
 * fo_max (a > b ? a : b: the second operand when either is NaN, as maxps) and the
 * hyperparameter struct k.  This header instantiates the rules three times:
 *
 *   suffix  T        k                  arithmetic
 *   _f32    float    <Struct>_f32 *     C operators, sqrtf          (dense float32, tails)
 *   _f64    double   <Struct>_f64 *     C operators, sqrt           (dense float64)
 *   _vec    fo_ps    <Struct>_vec *     FO_PS(add), ... (fo_simd.h)  (lowbit vectors)
 *
 * The structs and the mode bits FO_<NAME>_<FLAG> come from fo_hyper.h, rendered from the
 * kernel table (fastopt/specs.py).  Every operation is one IEEE operation in the written
 * order and the modules build with -std=c11 (no contraction into FMA), so the three
 * instantiations give the same float32 bits, and the NumPy twins (fastopt/reference) the
 * same bits too.  The mode is a compile-time constant at every call: each loop is compiled
 * once per mode, with no flag tested per element.
 *
 * A kernel's rule is either
 *   one function  fo_<name>(k, mode, g, p, x..., &y...) -> the new parameter, the new state in
 *                 *y (x: the state before the step); and #define FO_SPLIT_<name> 0; or
 *   two halves    fo_<name>_state(k, mode, g, p, x..., &y...) (the new state) and
 *                 fo_<name>_param(k, mode, g, p, y...) -> the new parameter from the new state,
 *                 with FO_SPLIT_<name> 1 and the whole rule from FO_RULE_OF_HALVES<nbuf>.
 *                 The int8 pass then updates a full block's parameters in the codes' pass,
 *                 which balances the divider between its passes; a kernel whose state may be
 *                 absent (the table's optional: SGD without momentum) must be given in halves
 *                 (the dense loop then calls fo_<name>_param alone, with zeros for y).
 *                 A split kernel also says FO_AHEAD_<name>: 1 when its parameter half is
 *                 itself given in two, fo_<name>_ahead(k, mode, y...) (a square root of the
 *                 state) and fo_<name>_param_from(k, mode, g, p, y..., a), composed by
 *                 FO_PARAM_OF_AHEAD<nbuf>: the low-precision codes' pass then issues the
 *                 square roots of the next 4 vectors before this group's update, so the
 *                 update's dependent operations do not wait behind them (Zen 3, avx2, Adam
 *                 float8: that pass 0.538 -> 0.512 ns/element); 0 otherwise.
 * g is the raw gradient: every rule multiplies it by k->gscale (clipping; 1 otherwise) first,
 * FO_GSCALE below: a caller that knows gscale == 1 may set the mode bit FO_GS1 (above every
 * table's mode bits) to leave the multiply out.  Same bits: g * 1 is g for every float but a
 * signaling NaN (the multiply quiets it), and the rules use g' only as an operand of further
 * arithmetic, which quiets a NaN and keeps its payload either way.
 * A new kernel: its table row (the struct, flags, state), its rule here, its NumPy twin.
 */
#ifndef FO_RULES_BODY
#ifndef FO_RULES_H
#define FO_RULES_H

#include <math.h>

#include "fo_simd.h"
#include "fo_hyper.h"

#define FO_RULE FO_INLINE

/* the mode bit "gscale is 1" (no table's mode uses it) and g' = g gscale under it */
#define FO_GS1 (1 << 16)
#define FO_GSCALE(k, mode, g) (((mode) & FO_GS1) ? (g) : fo_mul((g), (k)->gscale))

/* sign(x) as numpy.sign: +-1, +0 for +-0, NaN for NaN (x - x) */
FO_INLINE float fo_sign_f32(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x - x); }
FO_INLINE double fo_sign_f64(double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : x - x); }

#if defined(FO_IVEC)
#if FO_VBYTES == 64
FO_INLINE fo_ps fo_sign_vec(fo_ps x) {
    const fo_ps z = _mm512_setzero_ps();
    fo_ps r = _mm512_sub_ps(x, x);
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, z, _CMP_LT_OQ), r, _mm512_set1_ps(-1.0f));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, z, _CMP_GT_OQ), r, _mm512_set1_ps(1.0f));
}
#else
FO_INLINE fo_ps fo_sign_vec(fo_ps x) {
    const fo_ps z = _mm256_setzero_ps();
    fo_ps r = _mm256_sub_ps(x, x);
    r = _mm256_blendv_ps(r, _mm256_set1_ps(-1.0f), _mm256_cmp_ps(x, z, _CMP_LT_OQ));
    return _mm256_blendv_ps(r, _mm256_set1_ps(1.0f), _mm256_cmp_ps(x, z, _CMP_GT_OQ));
}
#endif
#endif

/* The whole rule of a kernel given in halves: the state, then the parameter from it. */
#define FO_RULE_OF_HALVES1(NAME, STRUCT)                                                   \
FO_RULE T FO_R(fo_##NAME)(const FO_K(STRUCT)* k, const int mode, T g, T p, T x, T* y) {   \
    T s = FO_R(fo_##NAME##_state)(k, mode, g, p, x);                                       \
    *y = s;                                                                                \
    return FO_R(fo_##NAME##_param)(k, mode, g, p, s);                                      \
}
#define FO_RULE_OF_HALVES2(NAME, STRUCT)                                                   \
FO_RULE T FO_R(fo_##NAME)(const FO_K(STRUCT)* k, const int mode, T g, T p, T x0, T x1,    \
                          T* y0, T* y1) {                                                  \
    T s0, s1;                                                                              \
    FO_R(fo_##NAME##_state)(k, mode, g, p, x0, x1, &s0, &s1);                              \
    *y0 = s0;                                                                              \
    *y1 = s1;                                                                              \
    return FO_R(fo_##NAME##_param)(k, mode, g, p, s0, s1);                                 \
}

/* The parameter half of a kernel given with a part issued ahead: fo_<name>_ahead(k, mode, y...)
   (the value the update's latency waits on: a square root of the new state) and
   fo_<name>_param_from(k, mode, g, p, y..., a) the new parameter from it; the parameter half
   is their composition (the same operations in the same order: the same bits). */
#define FO_PARAM_OF_AHEAD1(NAME, STRUCT)                                                   \
FO_RULE T FO_R(fo_##NAME##_param)(const FO_K(STRUCT)* k, const int mode, T g, T p, T s) {  \
    return FO_R(fo_##NAME##_param_from)(k, mode, g, p, s, FO_R(fo_##NAME##_ahead)(k, mode, s)); \
}
#define FO_PARAM_OF_AHEAD2(NAME, STRUCT)                                                   \
FO_RULE T FO_R(fo_##NAME##_param)(const FO_K(STRUCT)* k, const int mode, T g, T p, T s0,   \
                                  T s1) {                                                  \
    return FO_R(fo_##NAME##_param_from)(k, mode, g, p, s0, s1,                             \
                                        FO_R(fo_##NAME##_ahead)(k, mode, s0, s1));         \
}

/* ---- the scalar instantiations */
#define fo_add(a, b) ((a) + (b))
#define fo_sub(a, b) ((a) - (b))
#define fo_mul(a, b) ((a) * (b))
#define fo_div(a, b) ((a) / (b))
#define fo_max(a, b) ((a) > (b) ? (a) : (b))

#define T float
#define FO_R(name) name##_f32
#define FO_K(s) s##_f32
#define fo_sqrt(a) sqrtf(a)
#define fo_sign(a) fo_sign_f32(a)
#define FO_RULES_BODY
#include "fo_rules.h"
#undef FO_RULES_BODY
#undef T
#undef FO_R
#undef FO_K
#undef fo_sqrt
#undef fo_sign

#define T double
#define FO_R(name) name##_f64
#define FO_K(s) s##_f64
#define fo_sqrt(a) sqrt(a)
#define fo_sign(a) fo_sign_f64(a)
#define FO_RULES_BODY
#include "fo_rules.h"
#undef FO_RULES_BODY
#undef T
#undef FO_R
#undef FO_K
#undef fo_sqrt
#undef fo_sign

#undef fo_add
#undef fo_sub
#undef fo_mul
#undef fo_div
#undef fo_max

/* ---- the vector instantiation (the builds whose low-precision passes are vectorized) */
#if defined(FO_IVEC)
#define fo_add(a, b) FO_PS(add)(a, b)
#define fo_sub(a, b) FO_PS(sub)(a, b)
#define fo_mul(a, b) FO_PS(mul)(a, b)
#define fo_div(a, b) FO_PS(div)(a, b)
#define fo_max(a, b) FO_PS(max)(a, b)
#define T fo_ps
#define FO_R(name) name##_vec
#define FO_K(s) s##_vec
#define fo_sqrt(a) FO_PS(sqrt)(a)
#define fo_sign(a) fo_sign_vec(a)
#define FO_RULES_BODY
#include "fo_rules.h"
#undef FO_RULES_BODY
#undef T
#undef FO_R
#undef FO_K
#undef fo_sqrt
#undef fo_sign
#undef fo_add
#undef fo_sub
#undef fo_mul
#undef fo_div
#undef fo_max
#endif

#endif /* FO_RULES_H */
#else /* FO_RULES_BODY: ===================================================== the rules */

/* ---- SGD: g' = g gs (+ wd p);  b = momentum b + (1 - dampening) g';
        p - lr (g' + momentum b) (Nesterov), p - lr b; without momentum p - lr g' */
#define FO_SPLIT_sgd 1
#define FO_AHEAD_sgd 0

FO_RULE T FO_R(fo_sgd_grad)(const FO_K(SgdHyper)* k, const int mode, T g, T p) {
    T gi = FO_GSCALE(k, mode, g);
    if (mode & FO_SGD_HAS_WD) gi = fo_add(gi, fo_mul(k->wd, p));
    return gi;
}

FO_RULE T FO_R(fo_sgd_state)(const FO_K(SgdHyper)* k, const int mode, T g, T p, T x) {
    T gi = FO_R(fo_sgd_grad)(k, mode, g, p);
    return fo_add(fo_mul(k->momentum, x), fo_mul(k->one_minus_damp, gi));
}

FO_RULE T FO_R(fo_sgd_param)(const FO_K(SgdHyper)* k, const int mode, T g, T p, T b) {
    T gi = FO_R(fo_sgd_grad)(k, mode, g, p);
    if (!(mode & FO_SGD_HAS_MOM)) return fo_sub(p, fo_mul(k->lr, gi));
    if (mode & FO_SGD_NESTEROV) return fo_sub(p, fo_mul(k->lr, fo_add(gi, fo_mul(k->momentum, b))));
    return fo_sub(p, fo_mul(k->lr, b));
}

FO_RULE_OF_HALVES1(sgd, SgdHyper)

/* ---- RMSprop: g' = g gs (+ wd p);  s = alpha s + (1 - alpha) g'^2;
        p - lr g' / sqrt(s + eps) (eps inside), p - lr g' / (sqrt(s) + eps) */
#define FO_SPLIT_rmsprop 1
#define FO_AHEAD_rmsprop 1

FO_RULE T FO_R(fo_rmsprop_grad)(const FO_K(RmspropHyper)* k, const int mode, T g, T p) {
    T gi = FO_GSCALE(k, mode, g);
    if (mode & FO_RMSPROP_HAS_WD) gi = fo_add(gi, fo_mul(k->wd, p));
    return gi;
}

FO_RULE T FO_R(fo_rmsprop_state)(const FO_K(RmspropHyper)* k, const int mode, T g, T p, T x) {
    T gi = FO_R(fo_rmsprop_grad)(k, mode, g, p);
    return fo_add(fo_mul(k->alpha, x), fo_mul(k->one_minus_alpha, fo_mul(gi, gi)));
}

FO_RULE T FO_R(fo_rmsprop_ahead)(const FO_K(RmspropHyper)* k, const int mode, T s) {
    return (mode & FO_RMSPROP_EPS_INSIDE) ? fo_sqrt(fo_add(s, k->eps)) : fo_sqrt(s);
}

FO_RULE T FO_R(fo_rmsprop_param_from)(const FO_K(RmspropHyper)* k, const int mode, T g, T p, T s,
                                      T a) {
    T gi = FO_R(fo_rmsprop_grad)(k, mode, g, p);
    T den = (mode & FO_RMSPROP_EPS_INSIDE) ? a : fo_add(a, k->eps);
    (void)s;
    return fo_sub(p, fo_div(fo_mul(k->lr, gi), den));
}

FO_PARAM_OF_AHEAD1(rmsprop, RmspropHyper)

FO_RULE_OF_HALVES1(rmsprop, RmspropHyper)

/* ---- Adam / AdamW: p' = p decay (decoupled) or g' = g gs + wd p (coupled);
        m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
        p' - m / (sqrt(v) c2 + eps) c1, with c1 = lr / (1 - beta1^t), c2 = 1 / sqrt(1 - beta2^t)
        (nothing overflows for the moments Adam produces; subnormal moments keep their bits) */
#define FO_SPLIT_adam 1
#define FO_AHEAD_adam 1

FO_RULE void FO_R(fo_adam_state)(const FO_K(AdamHyper)* k, const int mode, T g, T p, T x0,
                                 T x1, T* y0, T* y1) {
    T gi = FO_GSCALE(k, mode, g);
    if (!(mode & FO_ADAM_DECOUPLED) && (mode & FO_ADAM_HAS_WD)) gi = fo_add(gi, fo_mul(k->wd, p));
    *y0 = fo_add(fo_mul(k->beta1, x0), fo_mul(k->one_minus_beta1, gi));
    *y1 = fo_add(fo_mul(k->beta2, x1), fo_mul(k->one_minus_beta2, fo_mul(gi, gi)));
}

FO_RULE T FO_R(fo_adam_ahead)(const FO_K(AdamHyper)* k, const int mode, T m, T v) {
    (void)k; (void)mode; (void)m;
    return fo_sqrt(v);
}

FO_RULE T FO_R(fo_adam_param_from)(const FO_K(AdamHyper)* k, const int mode, T g, T p, T m, T v,
                                   T a) {
    (void)g; (void)v;
    if (mode & FO_ADAM_DECOUPLED) p = fo_mul(p, k->decay);
    return fo_sub(p, fo_mul(fo_div(m, fo_add(fo_mul(a, k->c2), k->eps)), k->c1));
}

FO_PARAM_OF_AHEAD2(adam, AdamHyper)

FO_RULE_OF_HALVES2(adam, AdamHyper)

/* ---- Adagrad (torch.optim.Adagrad's order): g' = g gs (+ wd p);  s = s + g'^2;
        p - clr (g' / (sqrt(s) + eps)), clr = lr / (1 + (t - 1) lr_decay) */
#define FO_SPLIT_adagrad 1
#define FO_AHEAD_adagrad 1

FO_RULE T FO_R(fo_adagrad_grad)(const FO_K(AdagradHyper)* k, const int mode, T g, T p) {
    T gi = FO_GSCALE(k, mode, g);
    if (mode & FO_ADAGRAD_HAS_WD) gi = fo_add(gi, fo_mul(k->wd, p));
    return gi;
}

FO_RULE T FO_R(fo_adagrad_state)(const FO_K(AdagradHyper)* k, const int mode, T g, T p, T x) {
    T gi = FO_R(fo_adagrad_grad)(k, mode, g, p);
    return fo_add(x, fo_mul(gi, gi));
}

FO_RULE T FO_R(fo_adagrad_ahead)(const FO_K(AdagradHyper)* k, const int mode, T s) {
    (void)k; (void)mode;
    return fo_sqrt(s);
}

FO_RULE T FO_R(fo_adagrad_param_from)(const FO_K(AdagradHyper)* k, const int mode, T g, T p, T s,
                                      T a) {
    T gi = FO_R(fo_adagrad_grad)(k, mode, g, p);
    (void)s;
    return fo_sub(p, fo_mul(k->clr, fo_div(gi, fo_add(a, k->eps))));
}

FO_PARAM_OF_AHEAD1(adagrad, AdagradHyper)

FO_RULE_OF_HALVES1(adagrad, AdagradHyper)

/* ---- Lion (Chen et al. 2023): p' = p decay (decoupled weight decay, decay = 1 - lr wd);
        c = beta1 m + (1 - beta1) g';  p' - lr sign(c);  m = beta2 m + (1 - beta2) g'
        (g' = g gs).  The update needs the old m: one function, no halves. */
#define FO_SPLIT_lion 0

FO_RULE T FO_R(fo_lion)(const FO_K(LionHyper)* k, const int mode, T g, T p, T x, T* y) {
    T gi = FO_GSCALE(k, mode, g);
    T c = fo_add(fo_mul(k->beta1, x), fo_mul(k->one_minus_beta1, gi));
    if (mode & FO_LION_HAS_WD) p = fo_mul(p, k->decay);
    *y = fo_add(fo_mul(k->beta2, x), fo_mul(k->one_minus_beta2, gi));
    return fo_sub(p, fo_mul(k->lr, fo_sign(c)));
}

/* ---- Adamax (torch.optim.Adamax's order): g' = g gs (+ wd p);  m = m + (1 - beta1) (g' - m)
        (torch's lerp);  u = max(beta2 u, |g'| + eps);  p - clr (m / u), clr = lr / (1 - beta1^t).
        |g'| is max(g', 0 - g') (NaN stays NaN; the same bits in every arithmetic); a NaN
        gradient reaches u through max's second operand. */
#define FO_SPLIT_adamax 1
#define FO_AHEAD_adamax 0

FO_RULE void FO_R(fo_adamax_state)(const FO_K(AdamaxHyper)* k, const int mode, T g, T p, T x0,
                                   T x1, T* y0, T* y1) {
    T gi = FO_GSCALE(k, mode, g);
    if (mode & FO_ADAMAX_HAS_WD) gi = fo_add(gi, fo_mul(k->wd, p));
    T absg = fo_max(gi, fo_sub(k->zero, gi));
    *y0 = fo_add(x0, fo_mul(k->one_minus_beta1, fo_sub(gi, x0)));
    *y1 = fo_max(fo_mul(x1, k->beta2), fo_add(absg, k->eps));
}

FO_RULE T FO_R(fo_adamax_param)(const FO_K(AdamaxHyper)* k, const int mode, T g, T p, T m, T u) {
    (void)g;
    (void)mode;
    return fo_sub(p, fo_mul(k->clr, fo_div(m, u)));
}

FO_RULE_OF_HALVES2(adamax, AdamaxHyper)

/* ---- RAdam (torch.optim.RAdam's order): p' = p decay (decoupled) or g' = g gs + wd p (L2);
        m = m + (1 - beta1) (g' - m) (torch's lerp);  v = beta2 v + ((1 - beta2) g') g' (its
        addcmul);  u = (m / bc1) lr;  rectified steps: u = (u ((1 / (sqrt(v) + eps)) sqrt_bc2)) rect
        (torch's scalar / tensor is a reciprocal times the scalar);  p' - u.  bc1 = 1 - beta1^t,
        sqrt_bc2 = sqrt(1 - beta2^t), rect and the mode bit RECTIFIED (rho_t > 5) from step. */
#define FO_SPLIT_radam 1
#define FO_AHEAD_radam 0

FO_RULE void FO_R(fo_radam_state)(const FO_K(RadamHyper)* k, const int mode, T g, T p, T x0,
                                  T x1, T* y0, T* y1) {
    T gi = FO_GSCALE(k, mode, g);
    if (!(mode & FO_RADAM_DECOUPLED) && (mode & FO_RADAM_HAS_WD)) gi = fo_add(gi, fo_mul(k->wd, p));
    *y0 = fo_add(x0, fo_mul(k->one_minus_beta1, fo_sub(gi, x0)));
    *y1 = fo_add(fo_mul(x1, k->beta2), fo_mul(fo_mul(k->one_minus_beta2, gi), gi));
}

FO_RULE T FO_R(fo_radam_param)(const FO_K(RadamHyper)* k, const int mode, T g, T p, T m, T v) {
    (void)g;
    if ((mode & FO_RADAM_DECOUPLED) && (mode & FO_RADAM_HAS_WD)) p = fo_mul(p, k->decay);
    T u = fo_mul(fo_div(m, k->bc1), k->lr);
    if (mode & FO_RADAM_RECTIFIED) {
        T adaptive = fo_mul(fo_div(k->one, fo_add(fo_sqrt(v), k->eps)), k->sqrt_bc2);
        u = fo_mul(fo_mul(u, adaptive), k->rect);
    }
    return fo_sub(p, u);
}

FO_RULE_OF_HALVES2(radam, RadamHyper)

/* ---- NAdam (torch.optim.NAdam's order): p' = p decay (decoupled) or g' = g gs + wd p (coupled);
        m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;  d = sqrt(v / bc2) + eps;
        p' - cg (g' / d) - cm (m / d), bc2 = 1 - beta2^t, cg and cm from the momentum cache */
#define FO_SPLIT_nadam 1
#define FO_AHEAD_nadam 1

FO_RULE T FO_R(fo_nadam_grad)(const FO_K(NadamHyper)* k, const int mode, T g, T p) {
    T gi = FO_GSCALE(k, mode, g);
    if (!(mode & FO_NADAM_DECOUPLED) && (mode & FO_NADAM_HAS_WD)) gi = fo_add(gi, fo_mul(k->wd, p));
    return gi;
}

FO_RULE void FO_R(fo_nadam_state)(const FO_K(NadamHyper)* k, const int mode, T g, T p, T x0,
                                  T x1, T* y0, T* y1) {
    T gi = FO_R(fo_nadam_grad)(k, mode, g, p);
    *y0 = fo_add(fo_mul(k->beta1, x0), fo_mul(k->one_minus_beta1, gi));
    *y1 = fo_add(fo_mul(k->beta2, x1), fo_mul(k->one_minus_beta2, fo_mul(gi, gi)));
}

FO_RULE T FO_R(fo_nadam_ahead)(const FO_K(NadamHyper)* k, const int mode, T m, T v) {
    (void)mode; (void)m;
    return fo_sqrt(fo_div(v, k->bc2));
}

FO_RULE T FO_R(fo_nadam_param_from)(const FO_K(NadamHyper)* k, const int mode, T g, T p, T m, T v,
                                    T a) {
    T gi = FO_R(fo_nadam_grad)(k, mode, g, p);
    T d = fo_add(a, k->eps);
    (void)v;
    if (mode & FO_NADAM_DECOUPLED) p = fo_mul(p, k->decay);
    p = fo_sub(p, fo_mul(k->cg, fo_div(gi, d)));
    return fo_sub(p, fo_mul(k->cm, fo_div(m, d)));
}

FO_PARAM_OF_AHEAD2(nadam, NadamHyper)

FO_RULE_OF_HALVES2(nadam, NadamHyper)

/* ---- AMSGrad (torch.optim.Adam / AdamW with amsgrad=True, in torch's order): Adam's
        m and v, vmax = max(vmax, v);  p' - m / (sqrt(vmax) / sqrt(1 - beta2^t) + eps) c1.
        Three state buffers: one function (the low-precision passes take one or two).
        fo_max(vmax, v): a NaN v propagates (torch's maximum also keeps a NaN vmax). */
#define FO_SPLIT_amsgrad 0

FO_RULE T FO_R(fo_amsgrad)(const FO_K(AmsgradHyper)* k, const int mode, T g, T p, T x0, T x1,
                           T x2, T* y0, T* y1, T* y2) {
    T gi = FO_GSCALE(k, mode, g);
    if (!(mode & FO_AMSGRAD_DECOUPLED) && (mode & FO_AMSGRAD_HAS_WD))
        gi = fo_add(gi, fo_mul(k->wd, p));
    T m = fo_add(fo_mul(k->beta1, x0), fo_mul(k->one_minus_beta1, gi));
    T v = fo_add(fo_mul(k->beta2, x1), fo_mul(k->one_minus_beta2, fo_mul(gi, gi)));
    T vmax = fo_max(x2, v);
    *y0 = m;
    *y1 = v;
    *y2 = vmax;
    if (mode & FO_AMSGRAD_DECOUPLED) p = fo_mul(p, k->decay);
    T d = fo_add(fo_div(fo_sqrt(vmax), k->bc2_sqrt), k->eps);
    return fo_sub(p, fo_mul(fo_div(m, d), k->c1));
}

#endif /* FO_RULES_BODY */
