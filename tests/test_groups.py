"""Parameter groups (issue 10, item 4): per-group hyperparameters, still one compiled call.

PyTorch-style groups over lists of arrays, groups by name over a FlatParams or a dict;
each must give the bits of separate optimizers over each group's arrays.
"""

import inspect

import numpy as np
import pytest

import fastopt
from fastopt.kernels import _check
from fastopt.optim import SPECS


def _model(rng, dtype=np.float32):
    return {"W1": rng.standard_normal((30, 20)).astype(dtype), "b1": np.zeros(20, dtype),
            "W2": rng.standard_normal((20, 5)).astype(dtype), "b2": np.zeros(5, dtype),
            "W3": rng.standard_normal(70_001).astype(dtype)}


def _grads(rng, model):
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.items()}


WEIGHTS, BIASES = ["W1", "W2", "W3"], ["b1", "b2"]


def _separate(model, cls, **kw):
    """Two optimizers: weights with the default weight decay, biases without, lr halved."""
    w = cls([model[k] for k in WEIGHTS], **kw)
    b = cls([model[k] for k in BIASES], **{**kw, "weight_decay": 0.0, "lr": kw["lr"] / 2})
    return w, b


# every optimizer of the registry with a weight_decay argument
@pytest.mark.parametrize("cls", [s.cls for s in SPECS.values()
                                 if "weight_decay" in inspect.signature(s.cls).parameters])
@pytest.mark.parametrize("form", ["torch", "dict", "flat"])
def test_groups_give_the_bits_of_separate_optimizers(cls, form, rng):
    kw = dict(lr=0.01, weight_decay=0.1)
    kw.update({n: 0.9 for n in _check.optional_names(cls._spec.row)})   # SGD: with momentum
    model = _model(rng)
    ref = {k: v.copy() for k, v in model.items()}
    bias_group = {"params": BIASES, "weight_decay": 0.0, "lr": 0.005}
    if form == "torch":
        opt = cls([{"params": [model[k] for k in WEIGHTS]},
                   {**bias_group, "params": [model[k] for k in BIASES]}], **kw)
    elif form == "dict":
        opt = cls(model, groups=[bias_group], **kw)
    else:
        fp = fastopt.FlatParams.from_arrays(model)
        model = fp.params
        opt = cls(fp, groups=[bias_group], **kw)
    assert len(opt._calls) == 1 and opt._calls[0].mt.ngroups == 2   # one compiled call
    w, b = _separate(ref, cls, **kw)
    for _ in range(3):
        g = _grads(rng, ref)
        if form == "torch":
            opt.step([g[k] for k in WEIGHTS] + [g[k] for k in BIASES])
        elif form == "dict":
            opt.step(g)
        else:
            for k in g:
                fp.grads[k][...] = g[k]
            opt.step()
        w.step([g[k] for k in WEIGHTS])
        b.step([g[k] for k in BIASES])
    for k in ref:
        np.testing.assert_array_equal(model[k], ref[k], err_msg=k)


def test_flatparams_groups_are_runs_of_the_buffer(rng):
    fp = fastopt.FlatParams({"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,), "W3": (5,)})
    opt = fastopt.Adam(fp, groups=[{"params": ["b1", "b2"], "weight_decay": 0.0}],
                       weight_decay=0.1)
    # W1 | b1 | W2 | b2 | W3: five runs, alternating groups; state stays one flat buffer each
    assert [k for _, k, _ in opt._runs] == [0, 1, 0, 1, 0]
    assert opt.state["exp_avg"][0].shape == (fp.size,)
    assert opt.param_groups[0]["params"] == ["W1", "W2", "W3"]
    assert opt.param_groups[1]["params"] == ["b1", "b2"]


def test_reference_impl_follows_the_groups(rng):
    model = _model(rng, np.float64)
    ref = {k: v.copy() for k, v in model.items()}
    groups = [{"params": BIASES, "weight_decay": 0.0}]
    opt = fastopt.AdamW(model, groups=groups, lr=0.01, weight_decay=0.1)
    opt_r = fastopt.AdamW(ref, groups=groups, lr=0.01, weight_decay=0.1, impl="reference")
    for _ in range(3):
        g = _grads(rng, model)
        opt.step(g)
        opt_r.step(g)
    for k in model:
        np.testing.assert_allclose(model[k], ref[k], rtol=1e-12, atol=1e-15)


def test_changing_a_group_value_takes_effect_and_is_checked(rng):
    model = _model(rng)
    opt = fastopt.SGD(model, groups=[{"params": BIASES, "lr": 0.0}], lr=0.1)
    g = {k: np.ones_like(v) for k, v in model.items()}
    opt.step(g)
    np.testing.assert_array_equal(model["b1"], 0.0)       # lr 0 for the biases
    opt.param_groups[1]["lr"] = 0.5
    opt.step(g)
    np.testing.assert_allclose(model["b1"], -0.5)
    before = {k: v.copy() for k, v in model.items()}
    for bad, exc, msg in [({"lr": -1.0}, ValueError, r"param_groups\[1\]\['lr'\] must be >= 0"),
                          ({"momentum": 1.5}, ValueError, "momentum must be in"),
                          ({"betas": (0.9, 0.99)}, ValueError, "unknown hyperparameters"),
                          ({"lr": fastopt.schedules.constant(0.1)}, TypeError, "must be a number")]:
        opt.param_groups[1].update(bad)
        with pytest.raises(exc, match=msg):
            opt.step(g)
        for k in bad:
            del opt.param_groups[1][k]
        opt.param_groups[1]["lr"] = 0.5
        for k in model:
            np.testing.assert_array_equal(model[k], before[k])
        assert opt.step_count == 2


def test_groups_state_dict_and_checkpoint_round_trip(tmp_path, rng):
    fp = fastopt.FlatParams.from_arrays(_model(rng))
    groups = [{"params": BIASES, "weight_decay": 0.0, "lr": 0.002}]
    opt = fastopt.AdamW(fp, groups=groups, lr=0.01)
    fp.grad[...] = rng.standard_normal(fp.size)
    opt.step()
    opt.param_groups[1]["lr"] = 0.003
    sd = opt.state_dict()
    assert sd["groups"] == [{}, {"weight_decay": 0.0, "lr": 0.003}]
    fastopt.save_checkpoint(tmp_path / "c.npz", fp, opt)
    fp2 = fastopt.FlatParams.from_arrays(_model(rng))
    opt2 = fastopt.AdamW(fp2, groups=groups, lr=0.01)
    fastopt.load_checkpoint(tmp_path / "c.npz", fp2, opt2)
    assert opt2.param_groups[1]["lr"] == 0.003
    for o, f in ((opt, fp), (opt2, fp2)):
        f.grad[...] = 1.0
        o.step()
    np.testing.assert_array_equal(fp.data, fp2.data)
    bad = opt.state_dict()
    bad["groups"] = [{}]
    with pytest.raises(ValueError, match="1 parameter groups, expected 2"):
        opt2.load_state_dict(bad)
    bad["groups"] = [{}, {"lr": -1.0}]
    with pytest.raises(ValueError, match="must be >= 0"):
        opt2.load_state_dict(bad)
    assert opt2.param_groups[1]["lr"] == 0.003          # unchanged by the rejected loads


def test_group_errors(rng):
    model = _model(rng)
    with pytest.raises(ValueError, match="'b9', which params does not have"):
        fastopt.Adam(model, groups=[{"params": ["b9"]}])
    with pytest.raises(ValueError, match="'b1' is in two groups"):
        fastopt.Adam(model, groups=[{"params": ["b1"]}, {"params": ["b1"]}])
    with pytest.raises(TypeError, match="for a list of arrays pass the groups as params"):
        fastopt.Adam(list(model.values()), groups=[{"params": ["b1"]}])
    with pytest.raises(TypeError, match="either as params"):
        fastopt.Adam([{"params": [model["W1"]]}], groups=[])
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        fastopt.Adam(model, groups=[{"params": ["b1"], "momentum": 0.9}])
    with pytest.raises(ValueError, match="share memory"):
        fastopt.Adam([{"params": [model["W1"]]}, {"params": [model["W1"]]}])


def test_groups_match_pytorch_param_groups_in_float64(rng):
    torch = pytest.importorskip("torch")
    model = _model(rng, np.float64)
    tw = [torch.nn.Parameter(torch.from_numpy(model[k].copy())) for k in WEIGHTS]
    tb = [torch.nn.Parameter(torch.from_numpy(model[k].copy())) for k in BIASES]
    topt = torch.optim.AdamW([{"params": tw}, {"params": tb, "weight_decay": 0.0, "lr": 0.02}],
                             lr=0.01, weight_decay=0.1, foreach=False)
    opt = fastopt.AdamW([{"params": [model[k] for k in WEIGHTS]},
                         {"params": [model[k] for k in BIASES], "weight_decay": 0.0, "lr": 0.02}],
                        lr=0.01, weight_decay=0.1)
    for _ in range(10):
        g = _grads(rng, model)
        for p, k in zip(tw + tb, WEIGHTS + BIASES):
            p.grad = torch.from_numpy(g[k].copy())
        topt.step()
        opt.step([g[k] for k in WEIGHTS + BIASES])
    for p, k in zip(tw + tb, WEIGHTS + BIASES):
        np.testing.assert_allclose(model[k], p.detach().numpy(), rtol=1e-12, atol=1e-15)
