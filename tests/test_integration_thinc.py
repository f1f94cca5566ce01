"""fastopt.integrations.thinc against thinc's own optimizer, and on a real thinc model."""

import numpy as np
import pytest

thinc = pytest.importorskip("thinc")
from thinc import optimizers as T  # noqa: E402

from fastopt.integrations import thinc as F  # noqa: E402

SHAPES = {(1, "W"): (6, 5), (1, "b"): (6,), (2, "W"): (3, 6), (2, "b"): (3,)}


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _rounds(opt, weights, n, seed=1, scale=1.0, order=None):
    rng = np.random.default_rng(seed)
    for r in range(n):
        grads = []
        for k in (order or list(SHAPES)):
            g = (rng.standard_normal(SHAPES[k]) * scale).astype(np.float32)
            w, g2 = opt(k, weights[k], g)
            if isinstance(opt, F.Optimizer):
                assert w is weights[k] and g2 is g     # updated in place
            weights[k] = w
            grads.append(g)
        opt.step_schedules()
        # zeroed in place by the end of the round (finish_update), as thinc expects
        assert not any(g.any() for g in grads)
    return weights


def _close(a, b, rtol=1e-5, atol=1e-6):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol)


@pytest.mark.parametrize("kw", [dict(), dict(L2=0.01), dict(L2=0.01, L2_is_weight_decay=False),
                                dict(grad_clip=0.0, use_averages=False),
                                dict(learn_rate=[0.01, 0.005, 0.002], beta1=0.8)])
def test_adam_trajectory_as_thincs(kw):
    kw = {"learn_rate": 0.01, **kw}
    lr = kw.pop("learn_rate")
    lr_b = list(lr) if isinstance(lr, list) else lr
    ours, theirs = F.Adam(lr, **kw), T.Adam(lr_b, **kw)
    a = _rounds(ours, _weights(), 20, scale=3.0)       # (|g| > 1: clipped)
    b = _rounds(theirs, _weights(), 20, scale=3.0)
    _close(a, b)
    _close(ours.mom1, theirs.mom1)
    _close(ours.mom2, theirs.mom2)
    if kw.get("use_averages", True):
        _close(ours.averages, theirs.averages)
    else:
        assert ours.averages is None
    assert dict(ours.nr_update) == dict(theirs.nr_update)


def test_sgd_and_averages_are_thincs_bits():
    ours, theirs = F.SGD(0.1), T.SGD(0.1)
    a = _rounds(ours, _weights(), 12, scale=2.0)
    b = _rounds(theirs, _weights(), 12, scale=2.0)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()
        assert ours.averages[k].tobytes() == theirs.averages[k].tobytes()


def test_batched_rounds_equal_one_call_per_parameter():
    # the fused rounds compute every element as the per-parameter calls do: same bits
    for make in (lambda b: F.Adam(0.01, batch=b), lambda b: F.SGD(0.05, batch=b)):
        one, fused = make(False), make(True)
        a = _rounds(one, _weights(), 8, scale=2.0)
        b = _rounds(fused, _weights(), 8, scale=2.0)
        assert fused._fused is not None                  # the rounds did run fused
        for k in a:
            assert a[k].tobytes() == b[k].tobytes()
            assert one.averages[k].tobytes() == fused.averages[k].tobytes()
            assert one.mom1.get(k, np.zeros(0)).tobytes() == fused.mom1.get(k, np.zeros(0)).tobytes()


def test_adam_form_torch_is_fastopts_adam():
    import fastopt

    ours = F.Adam(0.01, adam_form="torch", grad_clip=0.0, use_averages=False)
    a = _rounds(ours, _weights(), 5)
    w = _weights()
    ref = fastopt.Adam(list(w.values()), lr=0.01)
    rng = np.random.default_rng(1)
    for _ in range(5):
        ref.step([rng.standard_normal(s).astype(np.float32) for s in SHAPES.values()])
    for k in a:
        assert a[k].tobytes() == w[k].tobytes()


def test_order_changes_and_partial_rounds_fall_back():
    keys = list(SHAPES)
    w_theirs = _weights()
    theirs = T.Adam(0.01)
    for seed, n, order in ((1, 3, None), (5, 2, keys[::-1]), (6, 2, keys[:3]), (7, 2, None)):
        _rounds(theirs, w_theirs, n, seed=seed, order=order)
    w_ours = _weights()
    ours = F.Adam(0.01)
    for seed, n, order in ((1, 3, None), (5, 2, keys[::-1]), (6, 2, keys[:3]), (7, 2, None)):
        _rounds(ours, w_ours, n, seed=seed, order=order)
    _close(w_ours, w_theirs)
    _close(ours.averages, theirs.averages)


def test_a_round_cut_short_without_step_schedules_warns_and_stops_batching():
    opt = F.Adam(0.01)
    w = _weights()
    keys = list(SHAPES)
    rng = np.random.default_rng(0)

    def call(k):
        return opt(k, w[k], rng.standard_normal(SHAPES[k]).astype(np.float32))

    for _ in range(2):
        for k in keys:
            call(k)
    for k in keys[:2]:             # a round without the last two, and no step_schedules()
        call(k)
    with pytest.warns(RuntimeWarning, match="batching is off"):
        call(keys[0])
    assert opt.batch is False
    assert not opt._pending


def test_refusals():
    with pytest.raises(ValueError, match="RAdam"):
        F.Optimizer(0.01, use_radam=True)
    with pytest.raises(ValueError, match="adam_form"):
        F.Adam(0.01, adam_form="keras")
    opt = F.Adam(0.01)
    with pytest.raises(TypeError, match="float32"):
        opt((1, "W"), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="Invalid schedule"):
        F.Adam("fast")


def test_trains_a_thinc_model_as_thincs_optimizer_does():
    from thinc.api import Relu, Softmax, chain, fix_random_seed

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 10)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)]

    def train(opt):
        fix_random_seed(0)
        model = chain(Relu(nO=16), Softmax())
        model.initialize(X=X, Y=Y)
        losses = []
        for _ in range(15):
            Yh, backprop = model.begin_update(X)
            backprop((Yh - Y) / len(Y))
            model.finish_update(opt)
            opt.step_schedules()
            losses.append(float(((Yh - Y) ** 2).sum()))
        params = {i: a for i, a in enumerate(
            n.get_param(name).copy() for n in model.walk()
            for name in n.param_names if n.has_param(name))}
        return losses, params, model

    la, pa, model = train(F.Adam(0.01))
    lb, pb, _ = train(T.Adam(0.01))
    assert la[-1] < la[0]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    _close(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, value, exc", [
    ("adam_form", "keras", ValueError), ("adam_form", None, ValueError),
    ("batch", 1, TypeError), ("batch", "yes", TypeError), ("batch", None, TypeError)])
def test_options_checked_when_set_and_a_refusal_changes_nothing(name, value, exc):
    # adam_form and batch are read at each call: settable between updates, checked as the
    # constructor checks them; a refused value leaves the optimizer as it was
    ours, ref = F.Adam(0.01), F.Adam(0.01)
    a, b = _rounds(ours, _weights(), 3, seed=1), _rounds(ref, _weights(), 3, seed=1)
    with pytest.raises(exc, match=name):
        setattr(ours, name, value)
    assert (ours.adam_form, ours.batch) == ("thinc", True)
    with pytest.raises(AttributeError):
        ours.adam_from = "torch"            # misspelled: no such slot
    a, b = _rounds(ours, a, 3, seed=2), _rounds(ref, b, 3, seed=2)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()


def test_options_set_between_updates_take_effect():
    # batch=False set between rounds: one call per parameter from then on, the same bits;
    # adam_form="torch" set after construction: the trajectory of one built with it
    ours, ref = F.Adam(0.01), F.Adam(0.01)
    a, b = _rounds(ours, _weights(), 3), _rounds(ref, _weights(), 3)
    ours.batch = False
    assert ours.batch is False and not ours._pending
    a, b = _rounds(ours, a, 3, seed=2), _rounds(ref, b, 3, seed=2)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()
    late = F.Adam(0.01, grad_clip=0.0, use_averages=False)
    late.adam_form = "torch"
    built = F.Adam(0.01, adam_form="torch", grad_clip=0.0, use_averages=False)
    a, b = _rounds(late, _weights(), 4), _rounds(built, _weights(), 4)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()
    with pytest.raises(AttributeError):
        late.adam_from = "thinc"
