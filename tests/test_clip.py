"""Clipping fused into the step, and the non-finite guard (issue 10, items 2 and 3).

``max_grad_norm`` must give the bits of ``clip_grad_norm_`` followed by the step (the
gradient scaled once, in its dtype, by the same factor) without changing the gradient
arrays; ``skip_nonfinite`` must change nothing when a gradient holds NaN or inf.
"""

import copy

import numpy as np
import pytest

import fastopt
from fastopt import kernels as K
from fastopt.optim import SPECS

import table_grid

SHAPES = [(3,), (50, 40), (70_001,), (0,), (17, 3)]


def _arrays(rng, dtype, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES]


def _make(name, params, **kw):
    args = {"sgd": dict(lr=0.05, momentum=0.9), "momentum": dict(lr=0.05),
            "rmsprop": dict(lr=0.01), "adam": dict(lr=0.01), "adamw": dict(lr=0.01)}.get(name)
    args = args or table_grid.constructor_args(SPECS[name])   # an optimizer added since
    return getattr(fastopt, SPECS[name].optimizer)(params, **args, **kw)


def _global_norm(grads):
    return float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(SPECS))
def test_fused_clip_gives_the_bits_of_clip_then_step(isa, name, dtype, rng):
    params = _arrays(rng, dtype)
    mine, ref = [p.copy() for p in params], [p.copy() for p in params]
    opt = _make(name, mine, max_grad_norm=1.0)
    plain = _make(name, ref)
    for _ in range(3):
        grads = _arrays(rng, dtype, scale=3.0)          # norm ~ 800: clipped
        before = [g.copy() for g in grads]
        opt.step(grads)
        for g, b in zip(grads, before):
            np.testing.assert_array_equal(g, b)         # the gradients are not touched
        norm = _global_norm(grads)
        assert opt.grad_norm == pytest.approx(norm, rel=1e-12)
        factor = 1.0 / (opt.grad_norm + 1e-6)           # PyTorch's clip_grad_norm_ rule
        plain.step([g * g.dtype.type(factor) for g in grads])
    for a, b in zip(mine, ref):
        np.testing.assert_array_equal(a, b)


def test_below_the_limit_nothing_is_scaled(rng):
    params = _arrays(rng, np.float32)
    mine, ref = [p.copy() for p in params], [p.copy() for p in params]
    opt, plain = fastopt.Adam(mine, max_grad_norm=1e9), fastopt.Adam(ref)
    grads = _arrays(rng, np.float32)
    opt.step(grads)
    plain.step(grads)
    for a, b in zip(mine, ref):
        np.testing.assert_array_equal(a, b)


def test_clip_on_a_flatparams_matches_the_kernel_clip(rng):
    fp = fastopt.FlatParams({"W": (300, 200), "b": (200,)})
    fp.data[...] = rng.standard_normal(fp.size)
    other = copy.deepcopy(fp)
    opt, plain = fastopt.AdamW(fp, max_grad_norm=0.5), fastopt.AdamW(other)
    g = rng.standard_normal(fp.size).astype(np.float32)
    fp.grad[...] = g
    other.grad[...] = g
    opt.step()
    norm = K.clip_grad_norm_(other.grad, 0.5)
    plain.step()
    assert opt.grad_norm == pytest.approx(norm, rel=1e-12)
    np.testing.assert_array_equal(fp.data, other.data)
    np.testing.assert_array_equal(fp.grad, g)


def test_step_argument_overrides_and_is_checked(rng):
    params = _arrays(rng, np.float64)
    opt = fastopt.SGD(params, lr=0.1)
    before = [p.copy() for p in params]
    grads = _arrays(rng, np.float64, scale=10.0)
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        opt.step(grads, max_grad_norm=0.0)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert opt.step_count == 0
    opt.step(grads, max_grad_norm=2.0)
    moved = np.sqrt(sum(np.sum((p - b) ** 2) for p, b in zip(params, before)))
    assert moved == pytest.approx(0.1 * 2.0, rel=1e-6)  # the step is lr times the clipped norm
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        fastopt.Adam(params, max_grad_norm=-1)
    with pytest.raises(TypeError, match="skip_nonfinite must be True or False"):
        fastopt.Adam(params, skip_nonfinite="yes")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_nonfinite_gradient_skips_the_whole_step(bad, impl, clip, rng):
    params = _arrays(rng, np.float32)
    opt = fastopt.Adam(params, lr=0.01, skip_nonfinite=True, max_grad_norm=clip, impl=impl)
    opt.step(_arrays(rng, np.float32))
    before = [p.copy() for p in params]
    state = {k: [b.copy() for b in v] for k, v in opt.state.items()}
    grads = _arrays(rng, np.float32)
    grads[2][12_345] = bad
    opt.step(grads)
    assert opt.step_count == 1 and opt.skipped_steps == 1
    assert not np.isfinite(opt.grad_norm)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for k, bufs in opt.state.items():
        for a, b in zip(bufs, state[k]):
            np.testing.assert_array_equal(a, b)
    grads[2][12_345] = 0.0
    opt.step(grads)                                  # a finite step goes through
    assert opt.step_count == 2 and opt.skipped_steps == 1
    assert not np.array_equal(params[1], before[1])


def test_without_the_guard_a_nan_propagates(rng):
    params = _arrays(rng, np.float32)
    opt = fastopt.Adam(params, lr=0.01)
    grads = _arrays(rng, np.float32)
    grads[1][0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        opt.step(grads)
    assert np.isnan(params[1][0, 0]) and opt.step_count == 1


def test_norm_is_the_same_for_any_thread_count(rng):
    params = _arrays(rng, np.float32)
    grads = _arrays(rng, np.float32, scale=7.0)
    norms = []
    for threads in (1, 2):
        opt = fastopt.Adam([p.copy() for p in params], max_grad_norm=1.0)
        with fastopt.num_threads(threads):
            opt.step(grads)
        norms.append(opt.grad_norm)
    assert norms[0] == norms[1]


def test_float64_clip_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    params = _arrays(rng, np.float64)[:3]
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = fastopt.Adam(params, lr=1e-2, max_grad_norm=0.5)
    topt = torch.optim.Adam(tparams, lr=1e-2, foreach=False)
    for _ in range(10):
        grads = [(rng.standard_normal(p.shape) * 2) for p in params]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_(tparams, 0.5, foreach=False)
        topt.step()
        opt.step(grads)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_huge_finite_float64_gradients_are_not_taken_for_nonfinite():
    # their squares overflow double, but every value is finite: the step is taken
    params = [np.zeros(4), np.zeros(3, np.float32)]
    opt = fastopt.SGD(params, lr=1e-300, skip_nonfinite=True)
    opt.step([np.full(4, 1e200), np.zeros(3, np.float32)])
    assert opt.step_count == 1 and opt.skipped_steps == 0
    np.testing.assert_allclose(params[0], -1e-100)
    opt.step([np.array([1e200, np.nan, 0, 0]), np.zeros(3, np.float32)])
    assert opt.step_count == 1 and opt.skipped_steps == 1
