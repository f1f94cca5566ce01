"""The multi-tensor plan is compiled once (``fastopt._plan``), outside the per-ISA modules.

An optimizer (or a plan) built under one instruction-set level keeps working after
``set_isa`` switches to another, with the bits of a fresh optimizer built under that level;
the kernels of every level take the same plan object, and refuse anything else.
"""

import numpy as np
import pytest

import fastopt
from fastopt import _plan
from fastopt.optim import SPECS, functional
from fastopt.runtime import dispatch

LEVELS = dispatch.supported_levels()
SHAPES = [(70, 80), (10,), (3000, 2), (5,)]          # two arrays large enough for low-bit state


@pytest.fixture(autouse=True)
def _restore_level():
    previous = dispatch.ext.level
    yield
    dispatch.set_isa(previous)


def _model(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _named(arrays):
    return dict(zip("abcd", arrays))


def _bits(opt, params):
    out = [p.copy() for p in params]
    for bufs in opt.state.values():
        out += [np.asarray(e).copy() for e in bufs.values()]
    return out


def test_every_level_uses_the_one_plan_class():
    for level in LEVELS:
        dispatch.set_isa(level)
        assert dispatch.ext._optim.MultiTensor is _plan.MultiTensor


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8", "float8"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_optimizer_built_before_set_isa_steps_after_it(name, state_dtype):
    """Built under the first level, stepped under each level in turn (clipping on, two
    groups): same bits as an optimizer built fresh under the level it steps under."""
    if state_dtype != "float32" and not SPECS[name].row.lowbit:
        pytest.skip(f"{name}'s kernel has float state only")
    dispatch.set_isa(LEVELS[0])
    options = dict(max_grad_norm=5.0, state_dtype=state_dtype,
                   groups=[{"params": ["b", "d"], "lr": 1e-3}])
    P = _model(0)
    old = SPECS[name].make(_named(P), 1e-2, **options)
    grads = [_model(10 + k) for k in range(len(LEVELS))]
    for k, level in enumerate(LEVELS):
        dispatch.set_isa(level)
        Q = [p.copy() for p in P]
        fresh = SPECS[name].make(_named(Q), 1e-2, **options)
        fresh.load_state_dict(old.state_dict())
        old.step(_named(grads[k]))
        fresh.step(_named(grads[k]))
        for a, b in zip(_bits(old, P), _bits(fresh, Q)):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plan_built_before_set_isa(dtype):
    """A plan, its bound grads and grad_sumsq survive switching levels."""
    dispatch.set_isa(LEVELS[0])
    P = _model(1, dtype)
    G = _model(2, dtype)
    M = [np.zeros_like(p) for p in P]
    V = [np.zeros_like(p) for p in P]
    mt = _plan.MultiTensor([P, None, M, V])
    assert mt.bind_grads(G) == -1
    expected = sum(float(np.sum(g.astype(np.float64) ** 2)) for g in G)
    for level in LEVELS:
        dispatch.set_isa(level)
        total = dispatch.ext._optim.grad_sumsq(mt, 2)
        assert total == pytest.approx(expected, rel=1e-12)
        ref = [p.copy() for p in P], [m.copy() for m in M], [v.copy() for v in V]
        step = 3
        dispatch.ext._optim.adam_multi(mt, [(1e-2, 0.9, 0.999, 1e-8, 0.0, False)], step, 1.0, 2)
        for p, g, m, v in zip(*ref[:1], G, *ref[1:]):
            fastopt.kernels.adam_step(p, g, m, v, step=step, lr=1e-2)
        for a, b in zip(P + M + V, ref[0] + ref[1] + ref[2]):
            np.testing.assert_array_equal(a, b)


def test_functional_after_set_isa():
    for level in LEVELS:
        dispatch.set_isa(level)
        P, Q = _model(3), _model(3)
        G = _model(4)
        functional.sgd(P, G, None, lr=0.1)
        for p, g in zip(Q, G):
            fastopt.kernels.sgd_step(p, g, None, lr=0.1)
        for a, b in zip(P, Q):
            np.testing.assert_array_equal(a, b)


def test_kernels_refuse_what_is_not_a_plan_and_short_groups():
    P = _model(5)
    mt = _plan.MultiTensor([P, None], groups=[0, 1, 1, 0])
    mt.set_grads(_model(6))
    before = [p.copy() for p in P]
    with pytest.raises(TypeError, match="MultiTensor"):
        dispatch.ext._optim.sgd_multi(mt.table_capsule(), [(0.1, 0.0, 0.0, False, 0.0)], 1.0, 1)
    with pytest.raises(ValueError, match="2 hyperparameter groups needed, got 1"):
        dispatch.ext._optim.sgd_multi(mt, [(0.1, 0.0, 0.0, False, 0.0)], 1.0, 1)
    for a, b in zip(P, before):
        np.testing.assert_array_equal(a, b)
