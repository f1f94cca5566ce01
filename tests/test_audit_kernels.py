"""Audit regressions of the kernels' per-step constants (NAdam's product of momentum caches)."""

import threading

import numpy as np
import pytest

from fastopt import kernels, reference

N_STEPS = 10_000


def _old_product(beta1, momentum_decay, step):
    """The product as the kernels recomputed it at every step before (O(step)): torch's
    float32 scalar times each mu_i rounded to float32."""
    prod = np.float32(1.0)
    for i in range(1, step + 1):
        prod = np.float32(prod * np.float32(beta1 * (1.0 - 0.5 * 0.96 ** (i * momentum_decay))))
    return prod


def _one_step(step, impl=kernels, dtype=np.float64, **kw):
    """The parameters after one NAdam step at ``step`` from fixed arrays."""
    rng = np.random.default_rng(5)
    p, g = rng.standard_normal((2, 33)).astype(dtype)
    m = rng.standard_normal(33).astype(dtype)
    v = np.abs(rng.standard_normal(33)).astype(dtype)
    impl.nadam_step(p, g, m, v, step=step, lr=0.01, **kw)
    return p


@pytest.mark.parametrize("beta1, md", [(0.9, 4e-3), (0.999, 4e-3), (0.99, 0.0), (0.5, 1.0),
                                      (0.999, 100.0), (0.0, 4e-3)])
def test_twins_product_is_the_old_recomputation_at_every_step(beta1, md):
    # the twin's loop (ending at a fixed point) against the full loop, steps 1..10**4
    prod = np.float32(1.0)
    for t in range(1, N_STEPS + 1):
        prod = np.float32(prod * np.float32(beta1 * (1.0 - 0.5 * 0.96 ** (t * md))))
        if t in (1, 2, 10, 150, 300, 1000, 4321) or t % 2000 == 0:
            assert reference._nadam_mu_product(beta1, md, t) == prod, t
    assert prod == _old_product(beta1, md, N_STEPS)


def test_torch_state_dicts_product_is_the_old_recomputation():
    pytest.importorskip("torch")
    from fastopt.integrations.torch import _nadam_mu_product
    for beta1, md in ((0.9, 4e-3), (0.8, 0.01)):
        for step in (1, 2, 5000, N_STEPS, 3, N_STEPS):       # on, back, on again
            assert _nadam_mu_product(beta1, md, step) == float(_old_product(beta1, md, step))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nadam_product_continued_over_10k_steps_is_the_recomputed_one(isa, dtype):
    """The kernels continue the last product (O(1) per step); at every checked step, after a
    step back, and with more configurations interleaved than are remembered, the step is
    the twin's (which recomputes the product from i = 1), bit for bit."""
    configs = [dict(beta1=0.9, momentum_decay=4e-3)] + [
        dict(beta1=b, momentum_decay=md) for b in (0.8, 0.5) for md in (4e-3, 0.01)]
    checks = {1, 2, 3, 100, 2_500, 7_777, N_STEPS}
    for t in range(1, N_STEPS + 1):
        kernels.nadam_step(*_arrays_one(dtype), step=t, lr=0.01, **configs[0])
        if t in checks:
            np.testing.assert_array_equal(_one_step(t, kernels, dtype, **configs[0]),
                                          _one_step(t, reference, dtype, **configs[0]))
    for t in (N_STEPS // 2, N_STEPS, 3):                          # steps back and forth
        for c in configs:                                           # 5 > the memos kept
            np.testing.assert_array_equal(_one_step(t, kernels, dtype, **c),
                                          _one_step(t, reference, dtype, **c))


def _arrays_one(dtype):
    return [np.zeros(1, dtype) for _ in range(4)]


def test_nadam_product_per_thread():
    """Two threads running chains of different configurations side by side."""
    out = {}

    def run(beta1):
        for t in range(1, 2001):
            kernels.nadam_step(*_arrays_one(np.float64), step=t, lr=0.01, beta1=beta1)
        out[beta1] = _one_step(2001, kernels, beta1=beta1)

    threads = [threading.Thread(target=run, args=(b,)) for b in (0.9, 0.7)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for b in (0.9, 0.7):
        np.testing.assert_array_equal(out[b], _one_step(2001, reference, beta1=b))


HUGE_STEP = r"""
import numpy as np
from fastopt import kernels, reference
for beta1 in (0.9, 0.999, 0.0):
    out = []
    for impl in (kernels, reference):
        p, g, m, v = np.ones(5), np.ones(5), np.zeros(5), np.zeros(5)
        impl.nadam_step(p, g, m, v, step=2**62, lr=0.01, beta1=beta1)
        out.append(p)
    assert np.array_equal(*out) and np.isfinite(out[0]).all(), out
print("ok")
"""


def test_nadam_huge_step_ends():
    """A step of 2**62 (a corrupted checkpoint) looped 2**62 times (a hang): the product,
    once it underflows to 0, stays 0 and the loop ends there (the same bits)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", HUGE_STEP], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
