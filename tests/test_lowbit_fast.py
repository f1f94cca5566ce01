"""The int8 vector encoder's arithmetic rule (QuantMap.fast, fo_vcode_fast): no table lookup,
and the same codes as the definition (the count of thresholds below x / absmax).

The rule computes a fixed-point index from y = |x| * fl(1 / absmax) and flags the elements
near a threshold or a region boundary, which the kernels recompute exactly; the tests check,
over every float32 in [-1, 1], that an element it does not flag has the definition's code
for every float32 within FAST_ULPS ulps (which holds the true quotient x / absmax), and
that the kernels give the NumPy twin's bits on values placed at and around every threshold.
"""

import numpy as np
import pytest

from fastopt.kernels import _formats as F
from fastopt.kernels import lowbit as K
from fastopt.reference import lowbit as R


def _map(signed):
    return F.signed_map() if signed else F.unsigned_map()


def _near(t, k):
    """t and its float32 neighbours up to k ulps away (both directions), |.| <= 1."""
    b = np.abs(t).astype(np.float32).view(np.uint32).astype(np.int64)
    out = (b[:, None] + np.arange(-k, k + 1)[None, :]).clip(0).astype(np.uint32).ravel()
    y = out.view(np.float32)
    return y[y <= 1]


@pytest.mark.parametrize("signed", [True, False])
def test_default_maps_have_the_fast_rule(signed):
    q = _map(signed)
    assert q.fast is not None and q.fast.dtype == np.uint32 and q.fast.shape == (40,)
    assert not q.fast.flags.writeable
    assert q.kernel_tables()[6] is q.fast
    assert int(q.fast[3]) == q.zero_code and int(q.fast[4]) == int(signed)


@pytest.mark.parametrize("signed", [True, False])
def test_fast_rule_emulation_is_the_definition(signed, rng):
    """The NumPy twin of the rule: where it does not flag y, the definition's code at y and
    at y +- FAST_ULPS ulps, both signs; it flags few of the elements."""
    q = _map(signed)
    t = q.thresholds[:255]
    y = np.concatenate([_near(t, F.FAST_ULPS + 40), _near(q.values, 3),
                        np.abs(rng.standard_normal(200_000) * 10.0 ** rng.uniform(-9, 0, 200_000)),
                        rng.uniform(0, 1, 200_000), [0.0, 1.0, 1e-45, 1e-38]]).astype(np.float32)
    y = y[y <= 1]
    yb = y.view(np.uint32).astype(np.int64)
    lo = (yb - F.FAST_ULPS).clip(0).astype(np.uint32).view(np.float32)
    hi = (yb + F.FAST_ULPS).astype(np.uint32).view(np.float32)
    for sign in (0, 1):
        code, flag = q.fast_code(y, np.full(y.shape, sign, np.uint32))
        x, a, b = (-y, -hi, -lo) if sign else (y, lo, hi)
        want = q.code(x)
        assert np.array_equal(code[~flag], want[~flag])
        assert np.array_equal(q.code(a)[~flag], want[~flag])
        assert np.array_equal(q.code(b)[~flag], want[~flag])
        # every float32 within FAST_ULPS of a threshold is flagged (a map without negative
        # values: negative x take code 0, unflagged)
        near = np.isin(y, _near(t, F.FAST_ULPS))
        assert np.all(flag[near]) if signed or not sign else not np.any(flag)
    rand = np.abs(rng.standard_normal(100_000) * 10.0 ** rng.uniform(-7, 0, 100_000))
    assert q.fast_code(np.minimum(rand, 1).astype(np.float32))[1].mean() < 0.005


def test_maps_without_the_rule_have_none():
    """A map whose thresholds are not piecewise linear in few regions (or not symmetric)
    has no fast rule: the kernels keep the bucket tables."""
    v = np.sort(np.concatenate([[0.0, 1.0], np.geomspace(1e-6, 0.99, 127),
                                -np.geomspace(2e-6, 0.98, 127)])).astype(np.float32)
    q = F.QuantMap(v)
    assert q.fast is None and q.kernel_tables()[6] is None
    with pytest.raises(ValueError, match="no fast rule"):
        q.fast_code(np.float32([0.5]))


@pytest.mark.slow   # ~3 s per map and level: the full run checks every float32, the quick loop the rest
@pytest.mark.parametrize("signed", [True, False])
def test_fast_rule_every_float32(isa, signed):
    """The compiled rule (this level's vector width) over every float32 in [-1, 1]: no
    unflagged element differs from the definition within FAST_ULPS ulps."""
    from fastopt.runtime import dispatch

    got = dispatch.ext._lowbit._fast_check(_map(signed).kernel_tables())
    if isa == "baseline":
        assert got is None
        return
    bad, flagged = got
    assert bad == 0
    assert 0 < flagged < 2 * 0x3F800000 // 100


def _thresholds_block(q, rng, k=6):
    """Values at and around every threshold (k ulps each way), times an absmax 1 element
    that each block of 256 holds."""
    t = q.thresholds[:255]
    y = _near(t, k)
    if q.signed:
        y = np.concatenate([y, -y])
    y = rng.permutation(y)
    nb = -(-len(y) // 255)
    y = np.resize(y, nb * 255).reshape(nb, 255)
    return np.concatenate([np.ones((nb, 1), np.float32), y], axis=1).ravel().astype(np.float32)


def _momentum_at(q, absmax, rng):
    """SGD's momentum from zero state is the gradient: values at and around every threshold
    of the signed map, times ``absmax``."""
    return (_thresholds_block(q, rng) * np.float32(absmax)).astype(np.float32)


def _square_avg_at(q, absmax, rng):
    """RMSprop's square average from zero state is (1 - alpha) g^2: gradients (and their
    neighbours one ulp away) that put it at and around every threshold of the unsigned map,
    times ``absmax``."""
    v = _thresholds_block(q, rng, k=3).astype(np.float64) * absmax
    g = np.sqrt(v / 0.01).astype(np.float32)
    gb = g.view(np.uint32).astype(np.int64)
    return np.concatenate([(gb + d).clip(0).astype(np.uint32).view(np.float32)
                           for d in (-1, 0, 1)])


# per map: the kernel whose first state buffer is int8 in it, its hyperparameters (lr 0),
# and the gradient that puts that state at the map's thresholds
THRESHOLD_CASES = {
    "signed": (F.signed_map, "sgd_step_int8", dict(momentum=0.9), _momentum_at),
    "unsigned": (F.unsigned_map, "rmsprop_step_int8", dict(alpha=0.99), _square_avg_at),
}


@pytest.mark.parametrize("kind, absmax",
                         [("signed", a) for a in (1.0, 3.0e-3, 7.5e4, 1e-37, 1e-39, 2e38)]
                         + [("unsigned", a) for a in (1.0, 2.5e-6)])
def test_kernel_codes_at_every_threshold(isa, kind, absmax, rng):
    """The kernels' int8 codes are the twin's for a state at and around every threshold of
    its map, for several absmax (a subnormal absmax, or one whose reciprocal is subnormal:
    every element recomputed exactly)."""
    make_map, kernel, hyper, grad_at = THRESHOLD_CASES[kind]
    q = make_map()
    g = grad_at(q, absmax, rng)
    out = []
    for mod in (K, R):
        p = np.zeros(g.size, np.float32)
        s = list(K.zeros_int8(g.size, q))
        getattr(mod, kernel)(p, g.copy(), *s, lr=0.0, **hyper)
        out.append(s)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(out[0][0])) > 200
