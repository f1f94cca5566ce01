"""Fused batch norm against its NumPy reference, finite differences, numerics and bad input."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastopt
from fastopt import kernels as K
from fastopt import reference as R
from fastopt.runtime.dispatch import ext

import table_grid

ROOT = Path(__file__).resolve().parents[1]
RTOL = ATOL = 1e-5
DTYPES = [np.float32, np.float64]

SHAPES = [(2, 1), (2, 3), (7, 5), (300, 17), (4096, 64), (2, 1, 3, 3), (3, 1, 5, 4),
          (5, 3, 7, 9), (2, 4, 40, 40), (1, 2, 3), (3, 2, 600), (4, 3, 20000),
          (3, 5, 517, 547),  # >= 4M values: outputs written with non-temporal stores
          # tiles (row blocks x channel blocks, to bound the partial sums): one row block,
          # several, and with spatial dimensions
          (2, 70000), (256, 1024), (40, 3000, 3), (64, 5000, 2)]


def _inputs(shape, seed=0, loc=0.5, scale=2.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * scale + loc).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, dy, gamma, beta


def _close(actual, expected, err_msg=""):
    """float32: within 1e-5; float64: within 1e-12 of expected's largest magnitude (sums in
    another order differ by a few ulps of their terms, not of a result near zero)."""
    if expected.dtype == np.float64:
        atol = 1e-12 * float(np.abs(expected).max(initial=0.0))
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=atol, err_msg=err_msg)
    else:
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=err_msg)


def _run(mod, x, dy, gamma, beta, training=True, steps=2):
    C = x.shape[1]
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    for _ in range(steps):
        y, mean, invstd = mod.batchnorm_forward(x, gamma, beta, rm, rv, training=training,
                                                momentum=0.1, eps=1e-5)
    dx, dgamma, dbeta = mod.batchnorm_backward(dy, x, gamma, mean, invstd, training=training)
    return dict(y=y, mean=mean, invstd=invstd, dx=dx, dgamma=dgamma, dbeta=dbeta, rm=rm, rv=rv)


# every shape on every level; the quick loop: the best level in both modes and dtypes, each other
# level in one
@table_grid.quick(family=lambda p: p["shape"], option="isa")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_matches_reference(isa, shape, training, dtype):
    x, dy, gamma, beta = _inputs(shape, dtype=dtype)
    a = _run(K, x, dy, gamma, beta, training)
    b = _run(R, x, dy, gamma, beta, training)
    for key in a:
        assert a[key].dtype == dtype and b[key].dtype == dtype, key
        assert a[key].shape == b[key].shape, key
        _close(a[key], b[key], err_msg=key)
    if training:
        # the running statistics really moved, by the PyTorch rule
        axes = (0,) + tuple(range(2, x.ndim))
        n = x.size // x.shape[1]
        mu = x.astype(np.float64).mean(axis=axes)
        var = x.astype(np.float64).var(axis=axes)
        rm, rv = 0.0, 1.0
        for _ in range(2):
            rm = 0.9 * rm + 0.1 * mu
            rv = 0.9 * rv + 0.1 * var * n / (n - 1)
        tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["rm"], rm, **tol)
        np.testing.assert_allclose(a["rv"], rv, **tol)


def test_normalized_output_has_zero_mean_unit_variance():
    x, _, _, _ = _inputs((64, 8, 5, 5), loc=3.0, scale=4.0)
    C = 8
    y, mean, invstd = K.batchnorm_forward(x, np.ones(C, np.float32), np.zeros(C, np.float32),
                                          None, None)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_inference_uses_running_statistics_and_changes_nothing(dtype):
    x, dy, gamma, beta = _inputs((10, 4, 3), dtype=dtype)
    rm = np.array([0.5, -1.0, 2.0, 0.0], dtype)
    rv = np.array([1.0, 4.0, 0.25, 9.0], dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, training=False)
    assert y.dtype == mean.dtype == invstd.dtype == dtype
    expected = (gamma[:, None] * (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-5)
                + beta[:, None])
    _close(y, expected)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd, training=False)
    _close(dx, dy * (gamma / np.sqrt(rv + 1e-5))[:, None])
    # inference also works with read-only running buffers
    rm.flags.writeable = False
    rv.flags.writeable = False
    y2, _, _ = K.batchnorm_forward(x, gamma, beta, rm, rv, training=False)
    np.testing.assert_array_equal(y, y2)


def _loss(x, gamma, beta, w):
    """float64 batch norm (training) and a fixed linear loss sum(w * y)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = gamma.reshape(shape) * (x - mu) / np.sqrt(var + 1e-5) + beta.reshape(shape)
    return float(np.sum(w * y))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3, 2), (2, 1)], ids=str)
def test_backward_matches_finite_differences(shape, dtype):
    x, dy, gamma, beta = _inputs(shape, seed=3, dtype=dtype)
    _, mean, invstd = K.batchnorm_forward(x, gamma, beta, None, None)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd)
    x64, g64, b64, w = (a.astype(np.float64) for a in (x, gamma, beta, dy))
    h = 1e-6

    def numgrad(arr, f):
        out = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = f()
            arr[i] = old - h
            down = f()
            arr[i] = old
            out[i] = (up - down) / (2 * h)
        return out

    f = lambda: _loss(x64, g64, b64, w)  # noqa: E731
    # float32: the kernels' rounding; float64: the central difference's (h^2 and eps/h)
    tol = 1e-7 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(dx, numgrad(x64, f), rtol=10 * tol, atol=tol)
    np.testing.assert_allclose(dgamma, numgrad(g64, f), rtol=tol, atol=tol)
    np.testing.assert_allclose(dbeta, numgrad(b64, f), rtol=tol, atol=tol)


def test_variance_of_data_far_from_zero():
    # x = 10000 + 0.01 N(0, 1): a float32 E[x^2] - E[x]^2 is wrong by orders of magnitude.
    n = 1_000_000
    rng = np.random.default_rng(0)
    x = (10000 + 0.01 * rng.standard_normal((n, 2))).astype(np.float32)
    exact = x.astype(np.float64).var(axis=0)
    naive = (x * x).mean(axis=0, dtype=np.float32) - x.mean(axis=0, dtype=np.float32) ** 2
    assert np.all(np.abs(naive - exact) / exact > 1.0)  # the naive formula fails
    var = np.empty(2)
    mean = np.empty(2)
    ext._batchnorm.channel_stats(x.reshape(n, 2, 1), mean, var, fastopt.get_num_threads())
    np.testing.assert_allclose(var, exact, rtol=1e-3)
    _, m, invstd = K.batchnorm_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32),
                                       None, None, eps=1e-12)
    np.testing.assert_allclose(1 / invstd.astype(np.float64) ** 2, exact, rtol=1e-3)
    # the same in NCHW layout (plane mode)
    x4 = (10000 + 0.01 * rng.standard_normal((4, 1, 500, 500))).astype(np.float32)
    exact4 = x4.astype(np.float64).var()
    _, _, invstd4 = K.batchnorm_forward(x4, np.ones(1, np.float32), np.zeros(1, np.float32),
                                        None, None, eps=1e-12)
    assert abs(1 / float(invstd4[0]) ** 2 - exact4) / exact4 < 1e-3


def test_variance_of_data_far_from_zero_in_float64():
    # x = 1e8 + N(0, 1): in float64 E[x^2] - E[x]^2 loses every digit; the shifted sums do not.
    rng = np.random.default_rng(1)
    for shape in [(200_000, 2), (4, 1, 300, 300)]:          # row and plane units
        x = 1e8 + rng.standard_normal(shape)
        axes = (0,) + tuple(range(2, x.ndim))
        exact = x.var(axis=axes)                               # two-pass
        naive = (x * x).mean(axis=axes) - x.mean(axis=axes) ** 2
        assert np.all(np.abs(naive - exact) / exact > 1e-2)    # the naive formula fails
        C = x.shape[1]
        _, mean, invstd = K.batchnorm_forward(x, np.ones(C), np.zeros(C), None, None, eps=1e-12)
        np.testing.assert_allclose(1 / invstd**2, exact, rtol=1e-9)
        np.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-14)


def _forward_backward(x, dy, gamma, beta, reduce, out):
    """One training forward and backward, with ``reduce`` and ``out`` (None or fresh arrays)
    passed to both; everything they return or write."""
    C = x.shape[1]
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    fouts = (np.empty_like(x), np.empty(C, x.dtype), np.empty(C, x.dtype)) if out else None
    bouts = (np.empty_like(x), np.empty(C, x.dtype), np.empty(C, x.dtype)) if out else None
    same = (lambda n, a, b: (n, a, b)) if reduce else None    # a reduce that changes nothing
    y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, eps=1e-3, out=fouts,
                                          reduce=same)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd, out=bouts, reduce=same)
    got = dict(y=y, mean=mean, invstd=invstd, rm=rm, rv=rv, dx=dx, dgamma=dgamma, dbeta=dbeta)
    if out:
        for name, o in zip(("y", "mean", "invstd", "dx", "dgamma", "dbeta"), fouts + bouts):
            assert got[name] is o, name
    return got


@pytest.mark.parametrize("out", [False, True], ids=["new", "out"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_call_per_direction_gives_the_bits_of_the_numpy_coefficients(dtype, threads, out):
    # Training without `reduce` runs each direction's two passes and the per-channel
    # coefficients between them in one compiled call (forward_train, backward_train); with
    # `reduce` (here one that changes nothing) the coefficients are computed in NumPy between
    # two kernel calls.  Both must give the same bits.
    for shape in SHAPES:
        x, dy, gamma, beta = _inputs(shape, seed=11, loc=-4.0, dtype=dtype)
        with fastopt.num_threads(threads):
            one = _forward_backward(x, dy, gamma, beta, reduce=False, out=out)
            two = _forward_backward(x, dy, gamma, beta, reduce=True, out=out)
        for key in one:
            assert one[key].dtype == dtype, key
            np.testing.assert_array_equal(one[key], two[key], err_msg=f"{key} {shape}")


def test_training_runs_one_kernel_call_per_direction(monkeypatch):
    # The caller's serial work between the passes of one direction (issue 23: 150-250 us of
    # CPU per pass boundary, on caches the pass before had flushed) is gone: one call each.
    calls = []

    class Counting:
        def __getattr__(self, name):
            fn = getattr(ext._batchnorm, name)
            return lambda *a: (calls.append(name), fn(*a))[1]

    monkeypatch.setattr(K, "ext", type("Ext", (), {"_batchnorm": Counting()})())
    x, dy, gamma, beta = _inputs((64, 8, 5))
    _, mean, invstd = K.batchnorm_forward(x, gamma, beta, None, None)
    K.batchnorm_backward(dy, x, gamma, mean, invstd)
    assert calls == ["forward_train", "backward_train"]
    calls.clear()
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    K.batchnorm_forward(x, gamma, beta, rm, rv, training=False)   # inference: one pass
    assert calls == ["affine"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(4096, 64), (64, 3, 40, 40), (2, 2, 70000), (300, 7, 50),
                                   (3, 5, 517, 547), (2, 70000), (256, 1024), (64, 5000, 2)],
                         ids=str)
def test_one_and_two_threads_give_identical_bits(isa, shape, dtype):
    x, dy, gamma, beta = _inputs(shape, seed=5, loc=3.0, dtype=dtype)
    assert ext._batchnorm.layout(shape[0], shape[1], x.size // (shape[0] * shape[1]), 2)[2] == 2
    results = []
    for threads in (1, 2):
        with fastopt.num_threads(threads):
            results.append(_run(K, x, dy, gamma, beta))
    for key in results[0]:
        assert results[0][key].dtype == dtype, key
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(64, 3, 40, 40), (4, 3, 700), (2, 2, 70000), (300, 7, 50),
                                   (256, 16, 5, 5), (2048, 40, 3), (3, 5, 7), (4096, 64),
                                   (2, 70000), (64, 5000, 2)], ids=str)
def test_every_isa_level_and_thread_count_gives_identical_bits(shape, dtype):
    # Issue 21: float64 over (N, C, *S) summed each plane with an `omp simd reduction`, whose
    # order follows the vector width: SSE2, AVX2 and AVX-512 gave three results (up to 2e-12
    # relative), so a run resumed on another CPU did not continue bit for bit.
    from fastopt.runtime import dispatch

    levels = dispatch.supported_levels()
    if len(levels) < 2:
        pytest.skip("one instruction-set level built or supported here")
    x, dy, gamma, beta = _inputs(shape, seed=6, loc=3.0, dtype=dtype)
    previous = fastopt.isa()
    results = {}
    try:
        for level in levels:
            dispatch.set_isa(level)
            for threads in (1, 2):
                with fastopt.num_threads(threads):
                    results[level, threads] = _run(K, x, dy, gamma, beta)
    finally:
        dispatch.set_isa(previous)
    first = results[levels[0], 1]
    for where, result in results.items():
        for key in first:
            np.testing.assert_array_equal(result[key], first[key], err_msg=f"{key} at {where}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_out_buffers_are_used(dtype):
    x, dy, gamma, beta = _inputs((16, 4, 3), dtype=dtype)
    y = np.empty_like(x)
    mean, invstd = np.empty(4, dtype), np.empty(4, dtype)
    r = K.batchnorm_forward(x, gamma, beta, None, None, out=(y, mean, invstd))
    assert r[0] is y and r[1] is mean and r[2] is invstd
    dx = np.empty_like(x)
    dg, db = np.empty(4, dtype), np.empty(4, dtype)
    r2 = K.batchnorm_backward(dy, x, gamma, mean, invstd, out=(dx, dg, db))
    assert r2[0] is dx and r2[1] is dg and r2[2] is db
    ref = R.batchnorm_backward(dy, x, gamma, mean, invstd)
    for got, want, key in zip(r2, ref, ("dx", "dgamma", "dbeta")):
        _close(got, want, err_msg=key)
    y2, _, _ = K.batchnorm_forward(x, gamma, beta, None, None, out=np.empty_like(x))
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("shape,mode", [((4096, 64), "row"), ((2, 70000), "tile"),
                                        ((256, 1024), "tile"), ((64, 5000, 2), "tile"),
                                        ((300, 7, 50), "row"), ((4, 3, 20000), "plane")],
                         ids=str)
def test_layout_modes(shape, mode):
    N, C = shape[0], shape[1]
    assert ext._batchnorm.layout(N, C, int(np.prod(shape[2:])), 2)[0] == mode


@settings(max_examples=500, deadline=None, derandomize=True)
@given(N=st.integers(1, 10**7), C=st.integers(1, 10**6), S=st.integers(1, 10**6),
       threads=st.integers(1, 64))
def test_partial_sums_are_at_most_a_sixteenth_of_x(N, C, S, threads):
    # What a reduction allocates for its partial sums (the allocation uses the same count).
    assume(N * C * S <= 2**40)
    mode, units, nt, partial_bytes = ext._batchnorm.layout(N, C, S, threads)
    assert partial_bytes <= 4 * N * C * S / 16, (mode, units)
    assert 1 <= nt <= threads and units >= 1


_PEAK = """
import re
import numpy as np
from fastopt.runtime.dispatch import ext

def peak():  # this process's peak resident memory (VmHWM: not inherited across exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

N, C = 256, 65536                      # 64 MiB of float32
small = np.ones((128, 1024, 1), np.float32)
ext._batchnorm.channel_stats(small, np.empty(1024), np.empty(1024), 2)  # threads started
x = np.ones((N, C, 1), np.float32)
s1, s2 = np.empty(C), np.empty(C)
before = peak()
ext._batchnorm.channel_stats(x, s1, s2, 2)
ext._batchnorm.backward_sums(x, x, s1, s1.copy(), s2, 2)
print(peak() - before, x.nbytes)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_wide_input_allocates_a_small_fraction_of_x():
    # Row blocks of four rows used to keep 2*C doubles each: as much as x (64 MiB) here.
    p = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, check=True,
                       cwd=ROOT)
    grown, x_bytes = map(int, p.stdout.split())
    # The partial sums are at most x/16 (test above: the count the kernel allocates); the
    # process's peak also holds the outputs and the allocator's overhead (more under ASan).
    assert grown < x_bytes / 4, f"peak memory grew by {grown / 2**20:.1f} MiB"


# ------------------------------------------------------------------ bad input

def _good():
    x, dy, gamma, beta = _inputs((8, 3, 2))
    return dict(x=x, gamma=gamma, beta=beta, running_mean=np.zeros(3, np.float32),
                running_var=np.ones(3, np.float32))


FORWARD_BAD = [
    (dict(x=np.zeros((1, 3), np.float32)), ValueError, "expected more than 1 value per channel"),
    (dict(x=np.zeros((1, 3, 1, 1), np.float32)), ValueError, "more than 1 value per channel"),
    (dict(x=np.zeros((0, 3), np.float32)), ValueError, "N == 0"),
    (dict(x=np.zeros(3, np.float32)), ValueError, "at least 2 dimensions"),
    (dict(x=np.zeros((8, 3, 2), np.float16)), TypeError,
     "x has dtype float16; supported dtypes are float32 and float64"),
    (dict(x=np.zeros((8, 3, 2), np.float64)), TypeError,
     "gamma has dtype float32, expected float64 like x"),
    (dict(x=np.zeros((8, 3, 4), np.float32)[:, :, ::2]), ValueError, "x must be C-contiguous"),
    (dict(gamma=np.ones(4, np.float32)), ValueError, "gamma has shape (4,), expected (3,)"),
    (dict(beta=np.ones(2, np.float32)), ValueError, "beta has shape (2,), expected (3,)"),
    (dict(gamma=np.ones(3)), TypeError, "gamma has dtype float64, expected float32 like x"),
    (dict(running_mean=np.zeros(4, np.float32)), ValueError, "running_mean has shape (4,)"),
    (dict(running_var=np.zeros(2, np.float32)), ValueError, "running_var has shape (2,)"),
    (dict(running_var=np.zeros(3, np.int64)), TypeError,
     "running_var has dtype int64, expected float32 like x"),
    (dict(eps=0.0), ValueError, "eps must be > 0"),
    (dict(eps=-1e-5), ValueError, "eps must be > 0"),
    (dict(momentum=1.5), ValueError, "momentum must be in [0, 1]"),
    (dict(momentum=-0.1), ValueError, "momentum must be in [0, 1]"),
    (dict(out=np.empty((8, 3), np.float32)), ValueError, "out (y) has shape (8, 3)"),
    (dict(out="y"), TypeError, "out must be None"),
]


@pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("override,exc,msg", FORWARD_BAD, ids=[c[2][:30] for c in FORWARD_BAD])
def test_forward_bad_input(mod, override, exc, msg):
    args = _good()
    override = dict(override)
    hyper = {k: override.pop(k) for k in list(override) if k in ("eps", "momentum", "out")}
    args.update(override)
    rm, rv = args["running_mean"].copy(), args["running_var"].copy()
    x = args["x"].copy()
    with pytest.raises(exc) as err:
        mod.batchnorm_forward(**args, **hyper)
    assert msg in str(err.value)
    np.testing.assert_array_equal(args["running_mean"], rm)
    np.testing.assert_array_equal(args["running_var"], rv)
    np.testing.assert_array_equal(args["x"], x)


def test_forward_rejects_read_only_running_stats_in_training_and_aliasing():
    args = _good()
    args["running_var"].flags.writeable = False
    rm = args["running_mean"].copy()
    with pytest.raises(ValueError, match="running_var is read-only"):
        K.batchnorm_forward(**args)
    np.testing.assert_array_equal(args["running_mean"], rm)
    args = _good()
    buf = np.zeros(3, np.float32)
    args["running_mean"] = args["running_var"] = buf
    with pytest.raises(ValueError, match="share memory"):
        K.batchnorm_forward(**args)
    assert not buf.any()
    args = _good()
    with pytest.raises(ValueError, match=r"out \(y\) and x share memory"):
        K.batchnorm_forward(**args, out=args["x"])


BACKWARD_BAD = [
    (dict(dy=np.zeros((8, 3, 3), np.float32)), ValueError, "dy has shape (8, 3, 3), expected (8, 3, 2) like x"),
    (dict(dy=np.zeros((8, 3, 2), np.float64)), TypeError,
     "dy has dtype float64, expected float32 like x"),
    (dict(x=np.zeros((8, 3, 2), np.int32), dy=np.zeros((8, 3, 2), np.int32)), TypeError,
     "x has dtype int32; supported dtypes are float32 and float64"),
    (dict(mean=np.zeros(2, np.float32)), ValueError, "mean has shape (2,)"),
    (dict(invstd=np.zeros(4, np.float32)), ValueError, "invstd has shape (4,)"),
    (dict(gamma=np.zeros((3, 1), np.float32)), ValueError, "gamma has shape (3, 1)"),
    (dict(x=np.zeros((0, 3), np.float32), dy=np.zeros((0, 3), np.float32)), ValueError, "N == 0"),
    (dict(x=np.zeros(3, np.float32), dy=np.zeros(3, np.float32)), ValueError, "at least 2 dim"),
]


@pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("override,exc,msg", BACKWARD_BAD, ids=[c[2][:30] for c in BACKWARD_BAD])
def test_backward_bad_input(mod, override, exc, msg):
    x, dy, gamma, _ = _inputs((8, 3, 2))
    args = dict(dy=dy, x=x, gamma=gamma, mean=np.zeros(3, np.float32),
                invstd=np.ones(3, np.float32))
    args.update(override)
    before = {k: v.copy() for k, v in args.items()}
    with pytest.raises(exc) as err:
        mod.batchnorm_backward(**args)
    assert msg in str(err.value)
    for k in args:
        np.testing.assert_array_equal(args[k], before[k])


def _other(dtype):
    return np.float32 if dtype == np.float64 else np.float64


def _mixed_message(name, dtype):
    return re.escape(f"{name} has dtype {np.dtype(_other(dtype))}, expected {np.dtype(dtype)} "
                     f"like x") + ".*supported dtypes are float32 and float64"


# Per direction: the inputs besides x (positional, in the call's order, "x" where x goes),
# the outputs (out=), and the inputs the call also updates (the running statistics).
MIXED = {
    "forward": (lambda x, dy, gamma, beta, dtype: dict(
                    x=x, gamma=gamma, beta=beta, running_mean=np.full(3, 0.25, dtype),
                    running_var=np.full(3, 2.0, dtype)),
                ("y", "mean", "invstd"), ("running_mean", "running_var")),
    "backward": (lambda x, dy, gamma, beta, dtype: dict(
                     dy=dy, x=x, gamma=gamma, mean=np.full(3, 0.5, dtype),
                     invstd=np.full(3, 0.75, dtype)),
                 ("dx", "dgamma", "dbeta"), ()),
}
MIXED_CASES = ([("forward", n) for n in ("gamma", "beta", "running_mean", "running_var",
                                         "y", "mean", "invstd")]
               + [("backward", n) for n in ("dy", "gamma", "mean", "invstd",
                                            "dx", "dgamma", "dbeta")])


@pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["x-f32", "x-f64"])
@pytest.mark.parametrize("direction,name", MIXED_CASES, ids=[f"{d}-{n}" for d, n in MIXED_CASES])
def test_rejects_mixed_dtypes_and_changes_nothing(mod, dtype, direction, name):
    make_args, out_names, updated = MIXED[direction]
    fn = getattr(mod, f"batchnorm_{direction}")
    x, dy, gamma, beta = _inputs((8, 3, 2), dtype=dtype)
    args = make_args(x, dy, gamma, beta, dtype)
    outs = {k: np.full_like(x, 7) if k in ("y", "dx") else np.full(3, 7, dtype) for k in out_names}
    bad = dict(args, **outs)
    bad[name] = bad[name].astype(_other(dtype))
    before = {k: v.copy() for k, v in bad.items()}
    with pytest.raises(TypeError, match=_mixed_message(name if name in args else f"out ({name})",
                                                      dtype)):
        fn(*(bad[k] for k in args), out=tuple(bad[k] for k in outs))
    for k, v in bad.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # the same call in one dtype writes every output (and the running statistics)
    fn(*args.values(), out=tuple(outs.values()))
    for k in updated:
        assert not np.array_equal(args[k], before[k]) or k == name, k
    for k, v in outs.items():
        assert not np.any(v == 7), k


def test_kernels_exist_for_both_dtypes_and_dispatch_on_x():
    # One template, two dtypes: the suffixed functions and the dispatchers the wrappers call.
    for name in ("channel_stats", "backward_sums", "affine", "grad_input"):
        for suffix in ("_f32", "_f64"):
            assert callable(getattr(ext._batchnorm, name + suffix)), name + suffix
    x = np.arange(12.0).reshape(3, 2, 2)
    y = np.empty_like(x)
    ext._batchnorm.affine(x, y, np.ones(2), np.full(2, 0.5), np.zeros(2), 1)
    np.testing.assert_array_equal(y, (x - 1) * 0.5)
    with pytest.raises(ValueError, match="dtype mismatch"):   # the typed memoryview refuses
        ext._batchnorm.affine_f32(x, y, np.ones(2), np.ones(2), np.zeros(2), 1)


def test_backward_out_must_not_alias_inputs():
    x, dy, gamma, _ = _inputs((8, 3, 2))
    mean, invstd = np.zeros(3, np.float32), np.ones(3, np.float32)
    dy0 = dy.copy()
    with pytest.raises(ValueError, match=r"out \(dx\) and dy share memory"):
        K.batchnorm_backward(dy, x, gamma, mean, invstd, out=dy)
    np.testing.assert_array_equal(dy, dy0)


# ------------------------------------------------------------------ the layer

def test_layer_in_flatparams_trains_with_one_optimizer_call():
    rng = np.random.default_rng(0)
    fp = fastopt.FlatParams({"W": (5, 4), **fastopt.BatchNorm.shapes(4, name="bn1")})
    fp.params["W"][...] = rng.standard_normal((5, 4)) * 0.5
    bn = fastopt.BatchNorm(4, params=fp, name="bn1")
    np.testing.assert_array_equal(fp.params["bn1.gamma"], 1.0)
    np.testing.assert_array_equal(fp.params["bn1.beta"], 0.0)
    opt = fastopt.Adam(fp, lr=0.05)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    target = (X @ rng.standard_normal((5, 4)) * 3 + 1).astype(np.float32)  # learnable
    losses = []
    for _ in range(200):
        z = X @ fp.params["W"]
        y = bn.forward(z)
        losses.append(float(((y - target) ** 2).mean()))
        dy = (2 * (y - target) / y.size).astype(np.float32)
        dz = bn.backward(dy)
        np.matmul(X.T, dz, out=fp.grads["W"])
        opt.step()
    assert losses[-1] < 0.1 * losses[0]
    assert not np.allclose(fp.params["bn1.beta"], 0)  # beta was learned through the flat buffer
    # the gradient landed in the flat grad buffer
    assert np.shares_memory(bn.dbeta, fp.grad)


def test_layer_fused_and_reference_agree_and_state_dict_round_trip():
    x, dy, _, _ = _inputs((32, 6, 4, 4))
    a = fastopt.BatchNorm(6)
    b = fastopt.BatchNorm(6, impl="reference")
    for _ in range(3):
        ya, yb = a.forward(x), b.forward(x)
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.backward(dy), b.backward(dy), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.dgamma, b.dgamma, rtol=1e-5, atol=1e-5)
    c = fastopt.BatchNorm(6)
    c.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(c.forward(x, training=False), a.forward(x, training=False))
    np.testing.assert_array_equal(c.running_var, a.running_var)
    with pytest.raises(ValueError, match="expected \\(6,\\)"):
        c.load_state_dict({**a.state_dict(), "gamma": np.ones(5, np.float32)})


@pytest.mark.parametrize("key,value,exc,msg", [
    ("running_mean", [0.0, np.nan, 0.0], ValueError, "running_mean'] is not finite at channel 1"),
    ("running_mean", [0.0, 0.0, 1e39], ValueError, "running_mean'] is not finite at channel 2"),
    ("running_var", [1.0, -0.5, 1.0], ValueError, "running_var'] must be finite and >= 0"),
    ("running_var", [np.inf, 1.0, 1.0], ValueError, "running_var'] must be finite and >= 0"),
    ("running_var", [1.0, 1.0, np.nan], ValueError, "at channel 2"),
    ("gamma", ["a", "b", "c"], TypeError, "gamma'] has dtype <U1"),
    ("beta", [1.0, 2.0], ValueError, r"beta'] has shape \(2,\), expected \(3,\)"),
])
def test_layer_load_state_dict_checks_everything_before_writing(key, value, exc, msg):
    bn = fastopt.BatchNorm(3)
    bn.forward(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))
    before = bn.state_dict()
    good = {k: v + 1 for k, v in before.items()}   # every other entry would change the layer
    with pytest.raises(exc, match=msg):
        bn.load_state_dict({**good, key: np.array(value)})
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    bn.load_state_dict(good)
    np.testing.assert_array_equal(bn.running_var, before["running_var"] + 1)


def test_layer_errors():
    with pytest.raises(RuntimeError, match="before forward"):
        fastopt.BatchNorm(3).backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="no 'bn.gamma'"):
        fastopt.BatchNorm(3, params=fastopt.FlatParams({"W": (2,)}))
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        fastopt.BatchNorm(0)
    bn = fastopt.BatchNorm(3)
    rm = bn.running_mean.copy()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.forward(np.zeros((1, 3), np.float32))
    np.testing.assert_array_equal(bn.running_mean, rm)


@pytest.mark.parametrize("shape", [(32, 7), (4, 3, 5, 6)], ids=str)
def test_matches_pytorch(shape):
    torch = pytest.importorskip("torch")
    x, dy, gamma, beta = _inputs(shape, seed=11)
    C = shape[1]
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.1, eps=1e-5)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tg = torch.from_numpy(gamma.copy()).requires_grad_()
    tb = torch.from_numpy(beta.copy()).requires_grad_()
    trm, trv = torch.zeros(C), torch.ones(C)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.1, eps=1e-5)
    gx, gg, gb = torch.autograd.grad(ty, (tx, tg, tb), torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, gx.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dgamma, gg.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbeta, gb.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(32, 7), (4, 3, 5, 6), (2, 3, 700), (300, 5, 3)], ids=str)
def test_matches_pytorch_in_float64(shape, training):
    torch = pytest.importorskip("torch")
    x, dy, gamma, beta = _inputs(shape, seed=11, dtype=np.float64)
    C = shape[1]
    rm, rv = np.full(C, 0.25), np.full(C, 1.5)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    for _ in range(3):      # three steps: the running statistics accumulate
        y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, training=training,
                                              momentum=0.1, eps=1e-5)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tg = torch.from_numpy(gamma.copy()).requires_grad_()
        tb = torch.from_numpy(beta.copy()).requires_grad_()
        ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=training,
                                            momentum=0.1, eps=1e-5)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd, training=training)
    gx, gg, gb = torch.autograd.grad(ty, (tx, tg, tb), torch.from_numpy(dy))
    assert ty.dtype == torch.float64
    for key, ours, theirs in [("y", y, ty.detach()), ("running_mean", rm, trm),
                              ("running_var", rv, trv), ("dx", dx, gx), ("dgamma", dgamma, gg),
                              ("dbeta", dbeta, gb)]:
        assert ours.dtype == np.float64, key
        _close(ours, theirs.numpy(), err_msg=key)


def test_layer_names_an_input_of_another_dtype():
    bn = fastopt.BatchNorm(3)
    before = bn.running_mean.copy()
    with pytest.raises(TypeError, match="x has dtype float64, but this BatchNorm holds float32"):
        bn(np.ones((4, 3)))
    np.testing.assert_array_equal(bn.running_mean, before)
    fp = fastopt.FlatParams(fastopt.BatchNorm.shapes(3), dtype=np.float64)
    y = fastopt.BatchNorm(3, params=fp)(np.arange(12.0).reshape(4, 3))
    assert y.dtype == np.float64


# ------------------------------------------------------------ pickling and deep copies


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_model_copy_keeps_layers_linked_to_the_flat_buffer(how):
    """A pickled (or deep-copied) MLP trains exactly as the original: its batch-norm layers'
    gamma/beta are views of the restored FlatParams again (not independent copies that the
    optimizer would never update)."""
    import copy
    import pickle

    from fastopt.nn.models import MLP
    from fastopt.optim import Adam

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    def train(model, steps):
        opt = Adam(model.params, lr=0.05)
        for _ in range(steps):
            model.loss_and_grad(X, y)
            opt.step()

    model = MLP((8, 16, 16, 3), rng=np.random.default_rng(1))
    train(model, 2)
    twin = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    fp = twin.params
    for bn in twin.bns:
        assert np.shares_memory(bn.gamma, fp.data) and np.shares_memory(bn.beta, fp.data)
        assert np.shares_memory(bn.dgamma, fp.grad) and np.shares_memory(bn.dbeta, fp.grad)
    assert not np.shares_memory(fp.data, model.params.data)
    train(model, 5)
    train(twin, 5)
    np.testing.assert_array_equal(twin.params.data, model.params.data)
    for a, b in zip(twin.bns, model.bns):
        np.testing.assert_array_equal(a.running_mean, b.running_mean)
        np.testing.assert_array_equal(a.running_var, b.running_var)


def test_standalone_batchnorm_pickles_with_its_settings():
    import pickle

    from fastopt.nn import BatchNorm

    bn = BatchNorm(4, eps=1e-3, momentum=0.2, impl="reference")
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    bn.forward(x)
    back = pickle.loads(pickle.dumps(bn))
    assert (back.eps, back.momentum, back.impl, back.num_features) == (1e-3, 0.2, "reference", 4)
    np.testing.assert_array_equal(back.running_mean, bn.running_mean)
    np.testing.assert_array_equal(back.forward(x), bn.forward(x))
