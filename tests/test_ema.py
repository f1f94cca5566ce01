"""Weight averaging: the fused kernel against its NumPy twin, and fastopt.optim.EMA."""

import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference
from fastopt.optim import EMA

SIZES = [0, 1, 17, 16384 + 3, 70000]     # empty, tails, one block and a bit, several threads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_kernel_matches_twin_bits_any_threads(isa, rng, dtype, n):
    ema0 = rng.standard_normal(n).astype(dtype)
    p = rng.standard_normal(n).astype(dtype) * 3
    out = {}
    for threads in (1, 2):
        fastopt.set_num_threads(threads)
        for impl in (kernels, reference):
            e = ema0.copy()
            for decay in (0.9, 0.999, 0.3):
                impl.ema_update(e, p, decay=decay)
            out[threads, impl.__name__] = e
    first = out[1, kernels.__name__]
    for e in out.values():
        assert e.tobytes() == first.tobytes()
    if n:
        assert not np.array_equal(first, ema0)


def test_twin_is_thincs_rule():
    # thinc: ema -= (1 - decay) * (ema - weights), float32; the same bits
    rng = np.random.default_rng(3)
    e, w = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    mine, theirs = e.copy(), e.copy()
    for t in range(1, 6):
        decay = min((1.0 + t) / (10.0 + t), 0.9999)
        kernels.ema_update(mine, w, decay=decay)
        theirs -= (1 - decay) * (theirs - w)
    assert mine.tobytes() == theirs.tobytes()


def test_refusals_change_nothing(rng):
    e = rng.standard_normal(8).astype(np.float32)
    keep = e.copy()
    for impl in (kernels, reference):
        with pytest.raises(ValueError, match="decay"):
            impl.ema_update(e, np.ones(8, np.float32), decay=1.5)
        with pytest.raises(TypeError, match="dtype"):
            impl.ema_update(e, np.ones(8), decay=0.5)
        with pytest.raises(ValueError, match="shape"):
            impl.ema_update(e, np.ones(9, np.float32), decay=0.5)
        with pytest.raises(ValueError, match="share memory"):
            impl.ema_update(e, e, decay=0.5)
        with pytest.raises(ValueError, match="read-only"):
            ro = e.copy()
            ro.flags.writeable = False
            impl.ema_update(ro, np.ones(8, np.float32), decay=0.5)
    assert np.array_equal(e, keep)


def test_ema_class_over_an_optimizer_matches_the_kernel_per_array(isa, rng):
    params = {"W": rng.standard_normal((300, 300)).astype(np.float32),
              "b": rng.standard_normal(7), "c": np.zeros(0, np.float32)}
    opt = fastopt.Adam(params, lr=0.01)
    ema = EMA(opt, decay=0.9)
    expect = {k: v.copy() for k, v in params.items()}
    for t in range(4):
        fastopt.set_num_threads(1 + t % 2)
        opt.step({k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()})
        ema.update()
        for k in params:
            reference.ema_update(expect[k], params[k], decay=0.9)
    assert ema.num_updates == 4
    for k in params:
        assert ema.averages[k].tobytes() == expect[k].tobytes()


def test_schedule_zeros_swap_copy_to_and_state():
    w = [np.ones(5, np.float32), np.full(3, 2.0)]
    ema = EMA(w, decay=lambda t: min((1.0 + t) / (10.0 + t), 0.9999), init="zeros")
    ema.update()
    np.testing.assert_allclose(ema.averages[0], 9 / 11, rtol=1e-6)
    np.testing.assert_allclose(ema.averages[1], 2 * 9 / 11)
    with ema.swapped():
        np.testing.assert_allclose(w[1], 2 * 9 / 11)
    assert np.array_equal(w[1], np.full(3, 2.0))
    sd = ema.state_dict()
    ema.update(decay=0.0)
    assert np.array_equal(ema.averages[1], w[1])
    ema.load_state_dict(sd)
    assert ema.num_updates == 1
    np.testing.assert_allclose(ema.averages[1], 2 * 9 / 11)
    other = [np.zeros(5, np.float32), np.zeros(3)]
    ema.copy_to(other)
    assert np.array_equal(other[0], ema.averages[0])
    ema.copy_to()
    assert np.array_equal(w[0], ema.averages[0])
    with pytest.raises(ValueError, match="decay"):
        ema.decay = -0.1
    with pytest.raises(ValueError, match="schedule at update"):
        EMA(w, decay=lambda t: 2.0).update()
    with pytest.raises(ValueError, match="init"):
        EMA(w, init="ones")
    with pytest.raises(ValueError, match="averages"):
        ema.load_state_dict({"num_updates": 1, "averages": [np.zeros(5, np.float32)]})


def test_flatparams():
    fp = fastopt.FlatParams({"w": (4,), "b": (2,)})
    fp.data[...] = 1.0
    ema = EMA(fp, decay=0.5, init="zeros")
    ema.update()
    np.testing.assert_array_equal(ema.averages[0], np.full(6, 0.5, np.float32))


def test_attributes_checked_when_set():
    """(audit) num_updates set to a bad value was kept and failed later, or shifted a
    schedule below t = 1; a misspelled attribute was silently ignored."""
    w = np.zeros(3)
    ema = EMA([w], decay=lambda t: min((1 + t) / (10 + t), 0.9999))
    ema.update()
    before = ema.averages[0].copy()
    for bad, err in ((-5, ValueError), ("x", TypeError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="num_updates"):
            ema.num_updates = bad
        assert ema.num_updates == 1
    ema.num_updates = np.int64(7)
    assert ema.num_updates == 7 and type(ema.num_updates) is int
    with pytest.raises(AttributeError, match="decy"):
        ema.decy = 0.5
    with pytest.raises(ValueError, match="num_updates"):
        ema.load_state_dict({"num_updates": -1, "averages": [np.ones(3)]})
    np.testing.assert_array_equal(ema.averages[0], before)
    w[...] = 1.0
    ema.update()                               # the schedule at t = 8: decay 0.5
    np.testing.assert_array_equal(ema.averages[0], before + 0.5 * (1.0 - before))
