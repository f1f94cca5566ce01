"""Every optimizer kernel against its NumPy reference, at every ISA level, over many steps."""

import itertools

import numpy as np
import pytest

import fastopt
from fastopt import kernels as K
from fastopt import reference as R
from fastopt.optim import SPECS

import table_grid

SIZES = [0, 1, 7, 17, 4097, 1_000_003]
RTOL, ATOL = 1e-5, 1e-6
STEPS = 10
DTYPES = [np.float32, np.float64]
# kernel against reference: same operations in the same order, so close to the dtype's precision
TOL = {np.float32: dict(rtol=RTOL, atol=ATOL), np.float64: dict(rtol=1e-12, atol=1e-14)}


def _sgd_options():
    for momentum, dampening, nesterov, wd in itertools.product(
            [0.0, 0.9], [0.0, 0.5, 0.9], [False, True], [0.0, 0.01]):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        if momentum == 0 and dampening != 0:
            continue
        yield dict(momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=wd)


def _rmsprop_options():
    for inside, wd, alpha in itertools.product([True, False], [0.0, 0.01], [0.9, 0.99]):
        yield dict(eps_inside_sqrt=inside, weight_decay=wd, alpha=alpha)


def _adam_options():
    for wd, decoupled, betas in itertools.product([0.0, 0.05], [False, True],
                                                 [(0.9, 0.999), (0.5, 0.9)]):
        yield dict(weight_decay=wd, decoupled_weight_decay=decoupled, beta1=betas[0],
                   beta2=betas[1])


# The kernels come from the kernel table; each has its grid of options: written here, or
# from its row (table_grid.options) for a kernel without one.
KERNELS = [f"{k}_step" for k in table_grid.KERNELS]
OPTIONS = {"sgd_step": _sgd_options, "rmsprop_step": _rmsprop_options, "adam_step": _adam_options}
CASES = [(kernel.removesuffix("_step"), o) for kernel in KERNELS
         for o in (OPTIONS[kernel]() if kernel in OPTIONS
                   else table_grid.options(kernel.removesuffix("_step")))]


def _case_id(case):
    name, opts = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in opts.items())


def make_buffers(name, n, rng, opts=None, dtype=np.float32):
    """param and zero state buffers for kernel ``name``."""
    param = rng.standard_normal(n).astype(dtype)
    return param, table_grid.dense_state(name, n, dtype, opts)


def call(mod, name, param, grad, state, t, opts):
    table_grid.call_dense(mod, name, param, grad, state, t, opts)


def _copy(state):
    return [None if s is None else s.copy() for s in state]


@table_grid.quick(family=lambda p: p["case"][0], option="case")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_matches_reference(isa, case, n, dtype, rng):
    name, opts = case
    if dtype == np.float64:
        n = min(n, 100_003)   # still several blocks and threads; keeps the grid quick
    p_k, s_k = make_buffers(name, n, rng, opts, dtype)
    p_r, s_r = p_k.copy(), _copy(s_k)
    p0 = p_k.copy()
    for t in range(1, STEPS + 1):
        grad = rng.standard_normal(n).astype(dtype)
        grad_before = grad.copy()
        call(K, name, p_k, grad, s_k, t, opts)
        call(R, name, p_r, grad, s_r, t, opts)
        np.testing.assert_array_equal(grad, grad_before)  # grad is read only
        assert p_k.dtype == dtype
        np.testing.assert_allclose(p_k, p_r, **TOL[dtype], err_msg=f"param, step {t}")
        for i, (a, b) in enumerate(zip(s_k, s_r)):
            if a is not None:
                np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=f"state[{i}], step {t}")
    if n:
        assert not np.array_equal(p_k, p0)  # the parameters moved


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (1, 1, 1, 7)])
def test_any_shape_is_treated_as_flat(isa, shape, rng):
    p = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    pf, gf, mf, vf = (a.reshape(-1).copy() for a in (p, g, m, v))
    K.adam_step(p, g, m, v, step=1, lr=0.1)
    K.adam_step(pf, gf, mf, vf, step=1, lr=0.1)
    np.testing.assert_array_equal(p.reshape(-1), pf)
    np.testing.assert_array_equal(m.reshape(-1), mf)
    assert p.shape == shape


def test_first_adam_step_moves_by_lr_times_sign(isa):
    # Bias correction: the first step is lr * g/|g| (up to eps), whatever the gradient's scale.
    p = np.zeros(5, np.float32)
    g = np.array([3.0, -0.25, 1e-2, -7.0, 0.0], np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    K.adam_step(p, g, m, v, step=1, lr=0.1)
    np.testing.assert_allclose(p, [-0.1, 0.1, -0.1, 0.1, 0.0], rtol=1e-5)


def test_seed_momentum_is_ema(isa):
    # dampening = momentum gives v = beta v + (1 - beta) g, w -= lr v.
    p = np.zeros(3, np.float32)
    buf = np.zeros(3, np.float32)
    g = np.ones(3, np.float32)
    K.sgd_step(p, g, buf, lr=1.0, momentum=0.9, dampening=0.9)
    np.testing.assert_allclose(buf, 0.1, rtol=1e-6)
    K.sgd_step(p, g, buf, lr=1.0, momentum=0.9, dampening=0.9)
    np.testing.assert_allclose(buf, 0.19, rtol=1e-6)
    np.testing.assert_allclose(p, -0.29, rtol=1e-6)


def test_rmsprop_eps_placement(isa):
    p = np.zeros(1, np.float32)
    s = np.zeros(1, np.float32)
    g = np.zeros(1, np.float32) + 1e-4
    K.rmsprop_step(p, g, s, lr=1.0, alpha=0.0, eps=1e-4, eps_inside_sqrt=True)
    np.testing.assert_allclose(p, -1e-4 / np.sqrt(1e-8 + 1e-4), rtol=1e-5)
    p[...] = 0
    s[...] = 0
    K.rmsprop_step(p, g, s, lr=1.0, alpha=0.0, eps=1e-4, eps_inside_sqrt=False)
    np.testing.assert_allclose(p, -1e-4 / (1e-4 + 1e-4), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n", [0, 1, 17, 4097, 1_000_003])
def test_global_norm_and_clip(isa, n, dtype, rng):
    g = (rng.standard_normal(n) * 3).astype(dtype)
    expected = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    assert K.global_norm(g) == pytest.approx(expected, rel=1e-12, abs=0)
    assert R.global_norm(g) == pytest.approx(expected, rel=1e-12, abs=0)
    gk, gr = g.copy(), g.copy()
    max_norm = max(expected / 2, 1e-3)
    assert K.clip_grad_norm_(gk, max_norm) == pytest.approx(expected, rel=1e-12)
    assert R.clip_grad_norm_(gr, max_norm) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(gk, gr, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    assert gk.dtype == dtype
    if n:
        assert K.global_norm(gk) == pytest.approx(max_norm, rel=1e-5)
    # Already within the limit: unchanged.
    before = gk.copy()
    K.clip_grad_norm_(gk, max_norm * 4)
    np.testing.assert_array_equal(gk, before)


def test_global_norm_is_accurate_in_double():
    # 10^6 values of 1 + tiny: a float32 running sum would lose digits.
    g = np.full(1_000_003, 1.0001, np.float32)
    exact = np.sqrt(1_000_003 * np.float64(np.float32(1.0001)) ** 2)
    assert K.global_norm(g) == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize("name", [k.removesuffix("_step") for k in KERNELS])
def test_nan_in_grad_propagates_like_reference(isa, name, rng):
    n = 100_003
    opts = table_grid.options(name)[0]     # the defaults (SGD: with momentum)
    p_k, s_k = make_buffers(name, n, rng, opts)
    p_r, s_r = p_k.copy(), _copy(s_k)
    grad = rng.standard_normal(n).astype(np.float32)
    grad[[0, 5, 77_777]] = np.nan
    grad[[9]] = np.inf
    with np.errstate(invalid="ignore"):
        for t in (1, 2):
            call(K, name, p_k, grad, s_k, t, opts)
            call(R, name, p_r, grad, s_r, t, opts)
    np.testing.assert_array_equal(np.isnan(p_k), np.isnan(p_r))
    assert np.isnan(p_k[[0, 5, 77_777]]).all()
    np.testing.assert_allclose(p_k, p_r, rtol=RTOL, atol=ATOL, equal_nan=True)


@table_grid.quick(family=lambda p: p["case"][0], option="case")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", [c for c in CASES if c[1].get("weight_decay")], ids=_case_id)
def test_one_and_two_threads_give_identical_bits(isa, case, dtype, rng):
    name, opts = case
    n = 1_000_003
    results = []
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    for threads in (1, 2):
        p, s = make_buffers(name, n, np.random.default_rng(7), opts, dtype)
        with fastopt.num_threads(threads):
            for t, g in enumerate(grads, 1):
                call(K, name, p, g, s, t, opts)
        results.append([p] + [x for x in s if x is not None])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    g = grads[0]
    with fastopt.num_threads(1):
        n1 = K.global_norm(g)
    with fastopt.num_threads(2):
        n2 = K.global_norm(g)
    assert n1 == n2


def test_kernels_and_reference_have_the_same_signatures():
    import inspect

    for name in K.__all__:
        assert inspect.signature(getattr(K, name)) == inspect.signature(getattr(R, name)), name
    assert set(K.__all__) == set(R.__all__)


def test_registry_names_kernels_that_exist_in_both_modules():
    assert {spec.kernel for spec in SPECS.values()} <= set(K.__all__) & set(R.__all__)
    assert {name for name, _ in CASES} == {k.removesuffix("_step") for k in KERNELS}
    for spec in SPECS.values():
        assert spec.kernel_fn is getattr(K, spec.kernel)
        assert spec.reference_fn is getattr(R, spec.kernel)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_registered_optimizer_matches_its_reference(isa, name, rng):
    # Each optimizer with its registry example (the arguments the benchmark and torch use),
    # kernel against reference, and the class's state buffers are the registry's.
    spec = SPECS[name]
    n = 4097
    p_k = rng.standard_normal(n).astype(np.float32)
    s_k = [np.zeros(n, np.float32) for _ in spec.state]
    p_r, s_r = p_k.copy(), _copy(s_k)
    for t in (1, 2, 3):
        g = rng.standard_normal(n).astype(np.float32)
        spec.call(K, p_k, g, s_k, step=t)
        spec.call(R, p_r, g, s_r, step=t)
    np.testing.assert_allclose(p_k, p_r, rtol=RTOL, atol=ATOL)
    for a, b in zip(s_k, s_r):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert not np.array_equal(p_k, p_r * 0)  # the step moved the parameters
    opt = spec.make([np.zeros(3, np.float32)], 0.1, beta=0.9)
    assert type(opt) is spec.optimizer_class
    assert tuple(opt.state) == spec.state
