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


def test_zero_grad_after_clip_per_param_zeroes_the_users_gradients():
    """With clip_per_param, zero_grad() zeroed the optimizer's clipped copy and left the
    user's (accumulating) gradient as it was."""
    p = [np.ones(3), np.ones(2)]
    g = [np.full(3, 10.0), np.full(2, 0.1)]        # the first is clipped, the second not
    opt = fastopt.SGD(p, lr=0.1)
    opt.clip_per_param = 1.0
    opt.step(g)
    opt.zero_grad()
    assert not g[0].any() and not g[1].any()
    g[0] += 10.0                                   # accumulate again: the same step as before
    g[1] += 0.1
    opt.step(g)
    np.testing.assert_allclose(p[0], 1 - 2 * 0.1 / (np.sqrt(300) + 1e-6) * 10, rtol=1e-12)
    np.testing.assert_allclose(p[1], 1 - 2 * 0.1 * 0.1, rtol=1e-12)
