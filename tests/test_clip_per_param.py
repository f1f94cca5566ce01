"""Optimizer.clip_per_param: each parameter's gradient clipped to its own norm."""

import copy

import numpy as np
import pytest

import fastopt


def _clipped(g, limit):
    norm = float(np.sqrt(np.dot(g.astype(np.float64).ravel(), g.astype(np.float64).ravel())))
    return g * g.dtype.type(limit / (norm + 1e-6)) if norm > limit else g


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_list_params_match_clipping_by_hand(name, impl, rng):
    spec = fastopt.optim.SPECS[name]
    shapes = [(30, 20), (20,), (7,)]
    a = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    b = [x.copy() for x in a]
    oa = spec.make(a, 0.01, impl=impl)
    oa.clip_per_param = 1.5
    ob = spec.make(b, 0.01, impl=impl)
    for t in range(5):
        grads = [rng.standard_normal(s).astype(np.float32) * (3.0 if i != 2 else 0.1)
                 for i, s in enumerate(shapes)]
        keep = [g.copy() for g in grads]
        oa.step(grads)
        ob.step([_clipped(g, 1.5) for g in grads])
        for g, k in zip(grads, keep):            # the caller's gradients are not changed
            assert np.array_equal(g, k)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()


def test_flatparams_clip_each_name_and_then_the_global_norm(rng):
    def make():
        fp = fastopt.FlatParams({"W": (40, 10), "b": (10,), "c": (3,)})
        fp.data[...] = rng.standard_normal(fp.data.size).astype(np.float32)
        return fp
    fa = make()
    fb = fastopt.FlatParams({"W": (40, 10), "b": (10,), "c": (3,)})
    fb.data[...] = fa.data
    oa = fastopt.Adam(fa, lr=0.01, max_grad_norm=2.0, groups=[{"params": ["c"], "lr": 0.1}])
    oa.clip_per_param = 1.0
    ob = fastopt.Adam(fb, lr=0.01, max_grad_norm=2.0, groups=[{"params": ["c"], "lr": 0.1}])
    for t in range(4):
        g = (rng.standard_normal(fa.grad.size) * 2).astype(np.float32)
        fa.grad[...] = g
        keep = fa.grad.copy()
        oa.step()
        assert np.array_equal(fa.grad, keep)
        for n in fb:
            fb.grads[n][...] = _clipped(fa.grads[n].copy(), 1.0)
        ob.step()
        assert oa.grad_norm == ob.grad_norm
    assert fa.data.tobytes() == fb.data.tobytes()


def test_no_clip_needed_is_the_plain_step(rng):
    a = [rng.standard_normal(50).astype(np.float32)]
    b = [a[0].copy()]
    oa, ob = fastopt.SGD(a, lr=0.1), fastopt.SGD(b, lr=0.1)
    oa.clip_per_param = 100.0
    g = [rng.standard_normal(50).astype(np.float32)]
    oa.step(g)
    ob.step(g)
    assert a[0].tobytes() == b[0].tobytes()


def test_checked_when_set_and_carried():
    opt = fastopt.Adam([np.zeros(3)], lr=0.1)
    assert opt.clip_per_param is None
    for bad, err in ((0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                     (float("inf"), ValueError), ("1", TypeError)):
        with pytest.raises(err, match="clip_per_param"):
            opt.clip_per_param = bad
        assert opt.clip_per_param is None
    opt.clip_per_param = 2
    assert opt.clip_per_param == 2.0
    assert opt.like([np.ones(3)]).clip_per_param == 2.0
    assert copy.deepcopy(opt).clip_per_param == 2.0


def test_bad_gradient_refused_before_anything_changes():
    p = np.ones(4, np.float32)
    opt = fastopt.Adam([p], lr=0.1)
    opt.clip_per_param = 1.0
    with pytest.raises(TypeError, match="grads\\[0\\]"):
        opt.step([np.ones(4)])
    assert np.array_equal(p, np.ones(4, np.float32)) and opt.step_count == 0


def test_pieces_of_an_optimizer_refuse_it():
    # ZeRO-1 steps pieces of each tensor: a piece's norm is not its parameter's
    from fastopt.optim import part as _part

    opt = fastopt.Adam([np.zeros(8, np.float32)], lr=0.1)
    opt.clip_per_param = 1.0
    with pytest.raises(ValueError, match="clip_per_param"):
        _part.part(opt, [])
