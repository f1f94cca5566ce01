"""Audit regressions of the optimizer classes (aliasing, attributes set after construction)."""

import numpy as np
import pytest

import fastopt


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_zero_grad_refuses_the_parameters(kind):
    """zero_grad(params) by mistake zeroed the model's weights (the step refuses gradients
    that share memory with the parameters; zero_grad did not)."""
    arrays = [np.ones(3), np.ones((2, 2))]
    params = arrays if kind == "list" else {"a": arrays[0], "b": arrays[1]}
    opt = fastopt.Adam(params, lr=0.1)
    grads = [np.ones(3), np.ones((2, 2))]
    opt.step(grads if kind == "list" else {"a": grads[0], "b": grads[1]})
    before = [a.copy() for a in arrays]
    other = np.ones((2, 2))
    bad = [np.ones(3), arrays[1]] if kind == "list" else {"a": np.ones(3), "b": arrays[1]}
    with pytest.raises(ValueError, match="share memory"):
        opt.zero_grad(bad)
    with pytest.raises(ValueError, match="share memory"):
        opt.zero_grad(params)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)
    fine = [np.ones(3), other] if kind == "list" else {"a": np.ones(3), "b": other}
    opt.zero_grad(fine)
    assert not other.any()
    opt.zero_grad()                                  # the last step's gradients
    assert not any(g.any() for g in grads)
