"""Public attributes of the layers, models, data and training helpers: checked when set.

Issue 21's rule, beyond the optimizers: every public attribute that changes behaviour is
checked when set, as the constructor checks it (a rejected value changes nothing); a
misspelled public name raises AttributeError naming the close match; arrays that others
hold (FlatParams views, running statistics) refuse rebinding and say to write into them.
"""

import pickle

import numpy as np
import pytest

import fastopt
from fastopt.nn.models import MLP


def _bn_on_flat(C=3):
    fp = fastopt.FlatParams({"W": (2, C), **fastopt.BatchNorm.shapes(C, name="bn1")})
    return fp, fastopt.BatchNorm(C, params=fp, name="bn1")


def _x(C=3, n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, C)).astype(np.float32)


# ------------------------------------------------------------------ BatchNorm

@pytest.mark.parametrize("attr, value, error", [
    ("eps", -1.0, ValueError), ("eps", 0.0, ValueError), ("eps", float("nan"), ValueError),
    ("eps", "1e-5", TypeError), ("momentum", 1.5, ValueError), ("momentum", -0.1, ValueError),
    ("momentum", None, TypeError), ("impl", "fast", ValueError),
])
def test_batchnorm_option_checked_when_set(attr, value, error):
    fp, bn = _bn_on_flat()
    before = (bn.eps, bn.momentum, bn.impl)
    with pytest.raises(error, match=attr):
        setattr(bn, attr, value)
    assert (bn.eps, bn.momentum, bn.impl) == before
    # the layer still works with its old values, and bit for bit as a fresh one
    fresh = fastopt.BatchNorm(3)
    np.testing.assert_array_equal(bn.forward(_x()), fresh.forward(_x()))
    np.testing.assert_array_equal(bn.running_var, fresh.running_var)


def test_batchnorm_valid_set_takes_effect():
    _, bn = _bn_on_flat()
    bn.momentum = 1.0
    bn.eps = 1e-3
    x = _x()
    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=0), rtol=1e-6, atol=1e-7)
    assert bn.eps == 1e-3 and "eps=0.001" in repr(bn)


@pytest.mark.parametrize("name, close", [("mometum", "momentum"), ("epsilon", "eps"),
                                         ("gama", "gamma"), ("running_means", "running_mean")])
def test_batchnorm_misspelled_attribute_raises_with_hint(name, close):
    _, bn = _bn_on_flat()
    with pytest.raises(AttributeError, match=f"did you mean '{close}'"):
        setattr(bn, name, 0.5)
    assert name not in vars(bn)


@pytest.mark.parametrize("attr", ["gamma", "beta", "dgamma", "dbeta"])
def test_batchnorm_flat_arrays_refuse_rebinding(attr):
    fp, bn = _bn_on_flat()
    view = getattr(bn, attr)
    data, grad = fp.data.copy(), fp.grad.copy()
    with pytest.raises(AttributeError, match=rf"write into it, bn\.{attr}\[\.\.\.\] = values"):
        setattr(bn, attr, np.full(3, 7.0, np.float32))
    assert getattr(bn, attr) is view
    np.testing.assert_array_equal(fp.data, data)
    np.testing.assert_array_equal(fp.grad, grad)
    # the layer is still on the FlatParams: backward writes fp.grads, forward reads fp.params
    y = bn.forward(_x())
    bn.backward(np.ones_like(y))
    np.testing.assert_array_equal(fp.grads["bn1.beta"], np.full(3, 8.0, np.float32))
    fp.params["bn1.beta"][...] = 2.0
    assert np.allclose(bn.forward(_x()).mean(axis=0), 2.0, atol=1e-5)


@pytest.mark.parametrize("attr", ["gamma", "running_mean", "running_var"])
def test_batchnorm_own_arrays_refuse_rebinding(attr):
    bn = fastopt.BatchNorm(3)
    held = getattr(bn, attr)
    with pytest.raises(AttributeError, match="cannot be rebound"):
        setattr(bn, attr, np.zeros(3))             # float64: would fail only at forward
    assert getattr(bn, attr) is held


@pytest.mark.parametrize("attr, value", [("name", "bn2"), ("num_features", 4)])
def test_batchnorm_structure_is_fixed(attr, value):
    fp, bn = _bn_on_flat()
    before = getattr(bn, attr)
    with pytest.raises(AttributeError, match=f"BatchNorm.{attr} cannot be set"):
        setattr(bn, attr, value)
    assert getattr(bn, attr) == before


def test_batchnorm_name_must_be_a_str():
    with pytest.raises(TypeError, match="name must be a str"):
        fastopt.BatchNorm(3, name=1)


def test_batchnorm_private_names_and_load_state_dict_still_work():
    fp, bn = _bn_on_flat()
    state = {"running_mean": np.arange(3.0), "running_var": np.ones(3) * 2,
             "gamma": np.full(3, 0.5), "beta": np.full(3, 0.25)}
    bn.load_state_dict(state)
    np.testing.assert_array_equal(fp.params["bn1.gamma"], np.full(3, 0.5, np.float32))
    np.testing.assert_array_equal(bn.running_mean, np.arange(3.0, dtype=np.float32))


# ------------------------------------------------------------------ MLP

def test_mlp_misspelled_attribute_raises_with_hint():
    m = MLP((4, 3, 2), rng=0)
    with pytest.raises(AttributeError, match="did you mean 'impl'"):
        m.imp = "reference"
    assert m.impl == "fused" and all(bn.impl == "fused" for bn in m.bns)


@pytest.mark.parametrize("attr", ["params", "sizes", "bns"])
def test_mlp_structure_is_fixed(attr):
    m = MLP((4, 3, 2), rng=0)
    before = getattr(m, attr)
    with pytest.raises(AttributeError, match=f"MLP.{attr} cannot be set"):
        setattr(m, attr, MLP((4, 3, 2), rng=1).__getattribute__(attr))
    assert getattr(m, attr) is before


def test_mlp_impl_checked_without_batchnorm_layers():
    # (4, 2) has no hidden layer, so no BatchNorm checked impl before
    with pytest.raises(ValueError, match="impl must be one of"):
        MLP((4, 2), impl="fast")
    m = MLP((4, 2), rng=0)
    with pytest.raises(ValueError, match="impl must be one of"):
        m.impl = "fast"
    m.impl = "reference"
    assert m.impl == "reference"


def test_mlp_rejected_impl_changes_nothing():
    m = MLP((4, 3, 3, 2), rng=0)
    m.impl = "reference"
    with pytest.raises(ValueError):
        m.impl = None
    assert m.impl == "reference" and [bn.impl for bn in m.bns] == ["reference", "reference"]


@pytest.mark.parametrize("value, error", [(-1.0, ValueError), (float("inf"), ValueError),
                                          ("0", TypeError)])
def test_mlp_kernel_time_checked_when_set(value, error):
    m = MLP((4, 3, 2), rng=0)
    with pytest.raises(error, match="kernel_time"):
        m.kernel_time = value
    assert m.kernel_time == 0.0
    m.kernel_time = 0.0


@pytest.mark.parametrize("sizes, error", [((4.5, 2), TypeError), ((4, "3", 2), TypeError),
                                          ((4, 0, 2), ValueError), ((True, 2), TypeError),
                                          (5, TypeError), ((4,), ValueError)])
def test_mlp_sizes_checked(sizes, error):
    with pytest.raises(error, match="sizes"):
        MLP(sizes)


def test_mlp_training_unchanged():
    # the guards change no result: a step of the model equals the same step on a fresh one
    X = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    y = np.arange(16) % 2
    a, b = MLP((np.int64(4), 3, 2), rng=0), MLP((4, 3, 2), rng=0)
    assert a.sizes == (4, 3, 2) and all(type(s) is int for s in a.sizes)
    assert a.loss_and_grad(X, y) == b.loss_and_grad(X, y)
    np.testing.assert_array_equal(a.params.grad, b.params.grad)


@pytest.mark.parametrize("args, error", [((2.7,), TypeError), ((0,), ValueError),
                                         (("3",), TypeError), ((3, 1), TypeError)])
def test_batchnorm_shapes_checks_its_arguments(args, error):
    # before: int(2.7) gave 2 channels silently
    with pytest.raises(error):
        fastopt.BatchNorm.shapes(*args)
    assert fastopt.BatchNorm.shapes(np.int64(3), "bn2") == {"bn2.gamma": (3,), "bn2.beta": (3,)}


# ------------------------------------------------------------------ the mechanism

def test_checked_base_class_declares_by_property_class_attribute_or_annotation():
    from fastopt.kernels._attrs import Checked, fixed

    class Thing(Checked):
        count: int
        label = "x"
        size = fixed("size", "fixed", "it is fixed")

        def __init__(self):
            self._size = 3
            self.count = 0

    t = Thing()
    t.count, t.label, t._anything = 1, "y", 2          # declared, or private
    assert (t.count, t.label, t._anything) == (1, "y", 2)
    with pytest.raises(AttributeError, match="did you mean 'count'"):
        t.cuont = 2
    with pytest.raises(AttributeError, match="Thing.size cannot be set: it is fixed"):
        t.size = 4
    assert t.size == 3 and "cuont" not in vars(t)
