"""Kernels against the reference at float32's edges: NaN, +-inf, subnormals, values near 3.4e38.

The kernels and the reference do the same float32 operations in the same order
(docs/conventions.rst), so the optimizer steps agree bit for bit whatever the input, and batch norm's
outputs are NaN and +-inf in the same places.  Every kernel runs on each path: a small array
(serial loop), and a large one (at least 65,536 elements) on one thread and on two (the
parallel loop), with the special values at its start, at a block edge and at its end.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastopt
from fastopt import kernels as K
from fastopt import reference as R
from fastopt.runtime.dispatch import ext

F32_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).smallest_subnormal)
BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))   # the largest beta float32 allows
LARGE = ext._optim.parallel_threshold() + 4099   # crosses a block edge, ends in a partial block
BLOCK = ext._optim.block_size()

SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, TINY, -TINY, 1e-40, -3e-39,
           1.1754944e-38, 1e19, -2e19, 1.7e38, -3.4e38, F32_MAX, -F32_MAX, 1.0, -1.0]
edge = st.one_of(st.sampled_from(SPECIAL), st.floats(width=32))

PATHS = ["small", "large-1-thread", "large-2-threads"]
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _threads(path):
    return 2 if path == "large-2-threads" else 1


def _draw_buffer(data, path, n_small, seed):
    """A float32 buffer with edge values: the drawn array itself (small) or a large finite one
    with the drawn values at its start, around a block edge and at its end."""
    small = data.draw(arrays(np.float32, n_small, elements=edge))
    if path == "small":
        return small
    big = np.random.default_rng(seed).standard_normal(LARGE).astype(np.float32)
    k = len(small)
    big[:k] = small
    big[BLOCK - k // 2:BLOCK - k // 2 + k] = small
    big[-k:] = small
    return big


def _run_both(path, kernel_call, reference_call):
    with np.errstate(all="ignore"), fastopt.num_threads(_threads(path)):
        kernel_call()
    with np.errstate(all="ignore"):
        reference_call()


# ------------------------------------------------------------------ optimizer steps: same bits

@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(data=st.data())
def test_adam_edges(path, data):
    n = data.draw(st.integers(1, 40))
    p, g, m, v = (_draw_buffer(data, path, n, seed) for seed in range(4))
    kw = dict(step=data.draw(st.one_of(st.integers(1, 30), st.integers(1, 2**63 - 1))),
              lr=data.draw(st.one_of(st.sampled_from([0.0, 1e-3, 1.0, 1e30]),
                                     st.floats(0, F32_MAX, width=32))),
              beta1=data.draw(st.floats(0, BELOW_ONE, width=32)),
              beta2=data.draw(st.floats(0, BELOW_ONE, width=32)),
              eps=data.draw(st.floats(TINY, 1.0, width=32)),
              weight_decay=data.draw(st.sampled_from([0.0, 1e-2, 3.0])),
              decoupled_weight_decay=data.draw(st.booleans()))
    # (hyperparameters whose per-step constants overflow float32 are refused: test_validation)
    assume(kw["lr"] / (1 - kw["beta1"] ** kw["step"]) < F32_MAX)
    assume(not kw["decoupled_weight_decay"] or kw["lr"] * kw["weight_decay"] < F32_MAX)
    a = [p.copy(), m.copy(), v.copy()]
    b = [p.copy(), m.copy(), v.copy()]
    _run_both(path, lambda: K.adam_step(a[0], g, a[1], a[2], **kw),
              lambda: R.adam_step(b[0], g, b[1], b[2], **kw))
    for name, x, y in zip(("param", "exp_avg", "exp_avg_sq"), a, b):
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(data=st.data())
def test_sgd_edges(path, data):
    n = data.draw(st.integers(1, 40))
    p, g, buf = (_draw_buffer(data, path, n, seed) for seed in range(3))
    momentum = data.draw(st.sampled_from([0.0, 0.5, 0.9]))
    nesterov = momentum > 0 and data.draw(st.booleans())
    kw = dict(lr=data.draw(st.floats(0, F32_MAX, width=32)), momentum=momentum,
              dampening=0.0 if nesterov else data.draw(st.sampled_from([0.0, 0.9, 1.0])),
              nesterov=nesterov, weight_decay=data.draw(st.sampled_from([0.0, 1e-2, 3.0])))
    a = [p.copy(), buf.copy()]
    b = [p.copy(), buf.copy()]
    _run_both(path, lambda: K.sgd_step(a[0], g, a[1], **kw), lambda: R.sgd_step(b[0], g, b[1], **kw))
    for name, x, y in zip(("param", "momentum_buf"), a, b):
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(data=st.data())
def test_rmsprop_edges(path, data):
    n = data.draw(st.integers(1, 40))
    p, g, s = (_draw_buffer(data, path, n, seed) for seed in range(3))
    kw = dict(lr=data.draw(st.floats(0, F32_MAX, width=32)),
              alpha=data.draw(st.floats(0, BELOW_ONE, width=32)),
              eps=data.draw(st.floats(TINY, 1.0, width=32)),
              eps_inside_sqrt=data.draw(st.booleans()),
              weight_decay=data.draw(st.sampled_from([0.0, 1e-2, 3.0])))
    a = [p.copy(), s.copy()]
    b = [p.copy(), s.copy()]
    _run_both(path, lambda: K.rmsprop_step(a[0], g, a[1], **kw),
              lambda: R.rmsprop_step(b[0], g, b[1], **kw))
    for name, x, y in zip(("param", "square_avg"), a, b):
        np.testing.assert_array_equal(x, y, err_msg=name)


# ------------------------------------------------------------------ reductions in double

def _same_specials(x, y, what):
    """NaN and +-inf in the same places."""
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(x), np.isposinf(y), err_msg=f"{what}: +inf positions")
    np.testing.assert_array_equal(np.isneginf(x), np.isneginf(y), err_msg=f"{what}: -inf positions")


def _close(x, y, tol, what):
    """Same NaN/+-inf positions, and |x - y| <= tol where both are finite."""
    _same_specials(x, y, what)
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    tol = np.broadcast_to(np.asarray(tol, np.float64), x64.shape)
    tol = np.where(np.isnan(tol), np.inf, tol)  # (0 * inf in a channel holding infinities)
    fin = np.isfinite(x64) & np.isfinite(y64)
    with np.errstate(invalid="ignore"):
        bad = fin & ~(np.abs(x64 - y64) <= tol)
    assert not bad.any(), (f"{what}: {int(bad.sum())} values differ, first at "
                           f"{np.argwhere(bad)[0]}: {x64[bad][0]!r} vs {y64[bad][0]!r} "
                           f"(tolerance {tol[bad][0]!r})")


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(data=st.data())
def test_norm_and_clip_edges(path, data):
    n = data.draw(st.integers(1, 40))
    g = _draw_buffer(data, path, n, 0)
    max_norm = data.draw(st.floats(TINY, F32_MAX, width=32))
    with fastopt.num_threads(_threads(path)):
        nk = K.global_norm(g)
    nr = R.global_norm(g)
    _close(nk, nr, 1e-10 * abs(nr), "global_norm")   # double sums in another order
    gk, gr = g.copy(), g.copy()
    _run_both(path, lambda: K.clip_grad_norm_(gk, max_norm), lambda: R.clip_grad_norm_(gr, max_norm))
    # the scale factor max_norm / (norm + 1e-6) may round one float32 ulp apart
    _close(gk, gr, 2.0**-22 * np.abs(gr.astype(np.float64)) + 2 * TINY, "clipped grad")


# ------------------------------------------------------------------ batch normalization

SMALL_SHAPES = [(4, 3), (3, 2, 5), (2, 2, 600), (40, 300)]
# At least 65,536 values: row units, plane units, and tiles with one and with several row blocks.
LARGE_SHAPES = [(2048, 40), (300, 3, 80), (3, 2, 12000), (4, 17000), (256, 300)]


# float64 batch norm: float32's edges, float64's subnormals, and values up to 1e150.  (Beyond
# about 1e154 a square or a product overflows double, and the kernel's one-pass sums then differ
# from the reference's two passes in where they overflow: not tested here.)
SPECIAL64 = [5e-324, -5e-324, 2.2250738585072014e-308, -1e-310, 1e-200, 1e150, -1e150]
edge64 = st.one_of(st.sampled_from(SPECIAL + SPECIAL64), st.floats(-1e150, 1e150))
BN_EDGES = {np.float32: edge, np.float64: edge64}
BN_DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])


def _unit(dtype):
    """Unit roundoff: the tolerances below are written in multiples of it."""
    return float(np.finfo(dtype).eps) / 2


def _bn_inputs(data, path, dtype=np.float32):
    shape = data.draw(st.sampled_from(SMALL_SHAPES if path == "small" else LARGE_SHAPES))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    C = shape[1]
    edges = BN_EDGES[dtype]
    x = (rng.standard_normal(shape) * data.draw(st.sampled_from([1.0, 1e30]))).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for a in (x, dy):  # special values at a few drawn places (channel 0 first value included)
        k = data.draw(st.integers(0, 6))
        idx = data.draw(st.lists(st.integers(0, a.size - 1), min_size=k, max_size=k))
        a.reshape(-1)[idx] = data.draw(st.lists(edges, min_size=k, max_size=k))
        if data.draw(st.booleans()):
            a[(0, data.draw(st.integers(0, C - 1))) + (0,) * (a.ndim - 2)] = data.draw(edges)
    gamma = data.draw(arrays(dtype, C, elements=st.one_of(st.floats(-4, 4, width=32), edges)))
    beta = data.draw(arrays(dtype, C, elements=st.one_of(st.floats(-4, 4, width=32), edges)))
    return x, dy, gamma, beta


def _per_channel(v, x):
    return np.asarray(v, np.float64).reshape((1, x.shape[1]) + (1,) * (x.ndim - 2))


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


@BN_DTYPES
@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(data=st.data())
def test_batchnorm_inference_edges(path, dtype, data):
    """With given statistics both passes are the same operations in x's dtype: the same bits."""
    x, dy, gamma, beta = _bn_inputs(data, path, dtype)
    C = x.shape[1]
    rm = data.draw(arrays(dtype, C, elements=BN_EDGES[dtype]))
    rv = data.draw(arrays(dtype, C, elements=st.one_of(st.floats(0, 1e6, width=32),
                                                       BN_EDGES[dtype])))
    out = {}
    for mod, tag in ((K, "k"), (R, "r")):
        with np.errstate(all="ignore"), fastopt.num_threads(_threads(path)):
            y, mean, invstd = mod.batchnorm_forward(x, gamma, beta, rm, rv, training=False)
            dx, dgamma, dbeta = mod.batchnorm_backward(dy, x, gamma, mean, invstd, training=False)
        out[tag] = dict(y=y, mean=mean, invstd=invstd, dx=dx, dgamma=dgamma, dbeta=dbeta)
    k, r = out["k"], out["r"]
    for key in ("y", "mean", "invstd", "dx"):
        assert k[key].dtype == dtype, key
        np.testing.assert_array_equal(k[key], r[key], err_msg=key)
    _check_backward_sums(k, r, x, dy)


def _check_backward_sums(k, r, x, dy, invstd_rel=0.0):
    """dbeta and dgamma: sums in double in another order (tolerance: their terms' magnitude);
    dgamma = invstd * sum dy (x - mean) also moves with invstd (relative error invstd_rel)."""
    axes = _axes(x)
    u = _unit(x.dtype)
    with np.errstate(all="ignore"):
        xmu = x.astype(np.float64) - _per_channel(r["mean"], x)
        sum_abs_dy = np.abs(dy.astype(np.float64)).sum(axis=axes)
        sum_abs_dyx = (np.abs(dy.astype(np.float64) * xmu)).sum(axis=axes) * np.abs(
            r["invstd"].astype(np.float64))
    _close(k["dbeta"], r["dbeta"], 1e-12 * sum_abs_dy + 2 * u * np.abs(r["dbeta"]), "dbeta")
    _close(k["dgamma"], r["dgamma"],
           1e-12 * sum_abs_dyx + (2 * u + invstd_rel) * np.abs(r["dgamma"]), "dgamma")


@BN_DTYPES
@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(data=st.data())
def test_batchnorm_training_edges(path, dtype, data):
    """Batch statistics (double sums in another order): the same NaN and +-inf everywhere, and
    finite values within what the sums' rounding can explain (in units of x's dtype's
    rounding, u: 2**-24 in float32, 2**-53 in float64)."""
    x, dy, gamma, beta = _bn_inputs(data, path, dtype)
    C = x.shape[1]
    n = x.size // C
    u = _unit(dtype)
    out = {}
    for mod, tag in ((K, "k"), (R, "r")):
        rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
        with np.errstate(all="ignore"), fastopt.num_threads(_threads(path)):
            y, mean, invstd = mod.batchnorm_forward(x, gamma, beta, rm, rv, training=True)
            dx, dgamma, dbeta = mod.batchnorm_backward(dy, x, gamma, mean, invstd, training=True)
        out[tag] = dict(y=y, mean=mean, invstd=invstd, dx=dx, dgamma=dgamma, dbeta=dbeta,
                        rm=rm, rv=rv)
    k, r = out["k"], out["r"]
    axes = _axes(x)
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        max_abs_x = np.abs(np.where(np.isfinite(x64), x64, 0)).max(axis=axes)
        mean, invstd = r["mean"].astype(np.float64), r["invstd"].astype(np.float64)
        # mean: the dtype's rounding, plus the double sums' rounding (relative to the values
        # summed)
        _close(k["mean"], r["mean"], 4 * u * np.abs(mean) + 1e-10 * max_abs_x, "mean")
        # the variance: the kernel's one pass E[d^2] - E[d]^2 (d = x - shift, shift = x[0, c, 0])
        # cancels by a factor 1 + (mean - shift)^2 / var, which multiplies the double sums'
        # rounding (at most about n * 2**-53 relative); this bounds var's and invstd's relative
        # error beyond the dtype's rounding (in float32 it is below that rounding)
        shift = x64.reshape(x.shape[0], C, -1)[0, :, 0]
        shift = np.where(np.isfinite(shift), shift, 0.0)
        var_rel = n * 2.0**-53 * (1 + (mean - shift) ** 2 * invstd**2)
        _close(k["invstd"], r["invstd"], (256 * u + var_rel) * np.abs(invstd), "invstd")
        _close(k["rm"], r["rm"], 4 * u * np.abs(r["rm"]) + 1e-10 * max_abs_x, "running_mean")
        _close(k["rv"], r["rv"], (512 * u + 2 * var_rel) * np.abs(r["rv"]), "running_var")
        # y = (x - mean) * a + beta: a mean one ulp apart moves y by ulp(mean) * a
        a = _per_channel(gamma.astype(np.float64) * invstd, x)
        m, b = _per_channel(mean, x), _per_channel(beta, x)
        y_tol = 256 * u * (np.abs(m * a) + np.abs((x64 - m) * a) + np.abs(b)) \
            + 1e-10 * _per_channel(max_abs_x, x) * np.abs(a) \
            + _per_channel(var_rel, x) * np.abs((x64 - m) * a)
        _close(k["y"], r["y"], y_tol, "y")
        _check_backward_sums(k, r, x, dy, var_rel)
        # dx = k1 dy - k2 - k3 (x - mean): coefficients from the sums, then x's dtype
        dbeta, dgamma = r["dbeta"].astype(np.float64), r["dgamma"].astype(np.float64)
        k1 = gamma.astype(np.float64) * invstd
        k2, k3 = k1 * dbeta / n, k1 * invstd * dgamma / n
        dy64 = dy.astype(np.float64)
        sums_tol = 1e-10 * (np.abs(dy64).sum(axis=axes) / n * np.abs(k1))
        terms = (np.abs(_per_channel(k1, x) * dy64) + np.abs(_per_channel(k2, x))
                 + np.abs(_per_channel(k3, x) * (x64 - m)))
        dgamma_tol = 1e-10 * np.abs(k1 * invstd) * np.abs(dy64 * (x64 - m)).sum(axis=axes) / n
        # (k1 and k2 scale as invstd, k3 as invstd**3)
        dx_tol = (256 * u + 3 * _per_channel(var_rel, x)) * terms + _per_channel(sums_tol, x) \
            + _per_channel(dgamma_tol, x) * np.abs(x64 - m)
        _close(k["dx"], r["dx"], dx_tol, "dx")


# ------------------------------------------------------------------ the cases of issue 13


@BN_DTYPES
def test_inference_backward_ignores_x(dtype):
    # dx = dy * gamma * invstd does not depend on x: an inf or NaN in x must not make it NaN.
    x = np.array([[np.inf, 1.0], [np.nan, -np.inf], [2.0, 3.0]], dtype)
    dy = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype)
    gamma, mean, invstd = (np.array(v, dtype) for v in ([2.0, 1.0], [0.0, 1.0], [0.5, 2.0]))
    expected = dy * gamma * invstd
    for mod in (K, R):
        dx, _, _ = mod.batchnorm_backward(dy, x, gamma, mean, invstd, training=False)
        np.testing.assert_array_equal(dx, expected)


@BN_DTYPES
@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 700)], ids=str)  # row and plane units
@pytest.mark.parametrize("first", [np.inf, -np.inf, np.nan])
def test_batch_mean_with_a_non_finite_first_value(shape, first, dtype):
    # The statistics are shifted by x[0, c, 0]; an infinite shift made inf - inf = NaN.
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    x[(0, 1) + (0,) * (len(shape) - 2)] = first
    C = shape[1]
    with np.errstate(invalid="ignore"):
        _, mk, _ = K.batchnorm_forward(x, np.ones(C, dtype), np.zeros(C, dtype), None, None)
        _, mr, _ = R.batchnorm_forward(x, np.ones(C, dtype), np.zeros(C, dtype), None, None)
    _same_specials(mk, mr, "mean")
    assert np.isnan(mk[1]) if np.isnan(first) else mk[1] == first
    tol = dict(rtol=1e-6) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-14)  # |x| ~ 1
    np.testing.assert_allclose(mk[[0, 2]], mr[[0, 2]], **tol)


def test_float64_variance_that_overflows_is_inf_as_in_the_reference():
    # Squares of float64 values beyond about 1e154 overflow double: the kernel's one-pass
    # E[d^2] - E[d]^2 would be inf - inf = NaN; it says +inf, as the reference's two passes.
    x = np.zeros((6, 3))
    x[:, 0] = [1e200, -1e200, 0.0, 3e199, -5e199, 1.0]        # var overflows
    x[:, 1] = [1e150, -1e150, 0.0, 2e150, 1.0, -1.0]          # large but finite
    x[:, 2] = [np.inf, 1.0, 2.0, 3.0, 4.0, 5.0]               # inf in x: NaN, as before
    gamma, beta = np.ones(3), np.full(3, 0.5)
    with np.errstate(all="ignore"):
        yk, mk, sk = K.batchnorm_forward(x, gamma, beta, None, None)
        yr, mr, sr = R.batchnorm_forward(x, gamma, beta, None, None)
    assert sk[0] == 0.0 and sr[0] == 0.0                        # invstd = 1 / sqrt(inf)
    np.testing.assert_array_equal(yk[:, 0], beta[0])
    np.testing.assert_allclose(sk[1], sr[1], rtol=1e-14)
    assert np.isnan(sk[2]) and np.isnan(sr[2])
    _same_specials(yk, yr, "y")
    _same_specials(mk, mr, "mean")


def test_adam_near_overflow_and_with_subnormal_moments():
    # The kernel used to fold 1/(1 - beta1^t) into lr and 1/(1 - beta2^t) into v: near overflow it
    # left the parameter unchanged where the update is about -5e16 (and the reference, forming
    # m / (1 - beta1^t) = inf, gave NaN); for subnormal moments it lost their bits.  Both now give
    # the formula's value, evaluated in double and rounded once to float32.
    g = np.zeros(4, np.float32)
    for p, m, v, step, lr in [(1.0, 3e38, 3e38, 1, 0.01),
                              (1e-38, 1e-40, 1e-44, 2, 1e-3),
                              (1.0, -2e38, 1e-30, 1, 1.0)]:   # the true result overflows: +inf
        a = [np.full(4, x, np.float32) for x in (p, m, v)]
        b = [x.copy() for x in a]
        with np.errstate(all="ignore"):
            K.adam_step(a[0], g, a[1], a[2], step=step, lr=lr)
            R.adam_step(b[0], g, b[1], b[2], step=step, lr=lr)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        m_hat = float(a[1][0]) / (1 - 0.9**step)
        v_hat = float(a[2][0]) / (1 - 0.999**step)
        with np.errstate(over="ignore"):
            exact = np.float32(np.float32(p) - lr * m_hat / (math.sqrt(v_hat) + 1e-8))
        np.testing.assert_allclose(a[0], exact, rtol=1e-6)
