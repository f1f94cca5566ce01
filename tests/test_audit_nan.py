"""Audit: NaN and inf where fastopt claims torch parity (AMSGrad's running maximum)."""

import numpy as np
import pytest

import fastopt

torch = pytest.importorskip("torch")


def _pair(x0):
    ours = [x0.copy()]
    tp = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    return ours, tp, fastopt.AMSGrad(ours, lr=0.1), torch.optim.Adam([tp], lr=0.1, amsgrad=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_amsgrad_nonfinite_gradient_poisons_as_torchs(bad):
    """A NaN/inf gradient element: the same elements of the parameters become NaN as torch's,
    and of every state buffer non-finite (torch's lerp makes NaN of an inf first moment one
    step later, where fastopt's b1 m + (1 - b1) g keeps inf), and stay so; the others go on
    as torch's."""
    rng = np.random.default_rng(0)
    ours, tp, opt, ref = _pair(rng.standard_normal(16).astype(np.float32))
    for t in range(6):
        g = rng.standard_normal(16).astype(np.float32)
        if t == 2:
            g[[3, 7]] = bad
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        ref.step()
        np.testing.assert_allclose(ours[0], tp.detach().numpy(), rtol=1e-5, atol=1e-6)
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            a, b = opt.state[name][0], ref.state[tp][name].numpy()
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
            np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-5,
                                       atol=1e-6)
    assert np.isnan(ours[0][[3, 7]]).all() and np.isfinite(np.delete(ours[0], [3, 7])).all()


def test_amsgrad_nan_only_in_the_loaded_maximum_is_replaced():
    """The documented difference (docs/api/optimizers/amsgrad.rst): a NaN only in
    max_exp_avg_sq gives way to the finite second moment, where torch's maximum keeps it."""
    ours, tp, opt, ref = _pair(np.ones(4, np.float32))
    opt.step([np.ones(4, np.float32)])
    sd = opt.state_dict()
    sd["state"]["max_exp_avg_sq"][0][1] = np.nan
    opt.load_state_dict(sd)
    opt.step([np.ones(4, np.float32)])
    assert np.isfinite(ours[0]).all()
    assert opt.state["max_exp_avg_sq"][0][1] == opt.state["exp_avg_sq"][0][1]
