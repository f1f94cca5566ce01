"""The alternating loop: a fastopt kernel then a NumPy matmul, against the two timed apart."""

import numpy as np
import pytest

from fastopt import kernels as K


@pytest.mark.parametrize("n", [1 << 16, 1 << 20, 1 << 24], ids=["64K", "1M", "16M"])
@pytest.mark.parametrize("part", ["kernel", "matmul", "alternating"])
def test_alternating_adam_and_matmul(benchmark, n, part):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    A = rng.standard_normal((256, 256)).astype(np.float32)
    out = np.empty_like(A)
    benchmark.group = f"alternating adam {n} + matmul 256"

    def kernel():
        K.adam_step(p, g, m, v, step=2, lr=1e-3)

    def matmul():
        np.matmul(A, A, out=out)

    fn = {"kernel": kernel, "matmul": matmul,
          "alternating": lambda: (kernel(), matmul())}[part]
    benchmark(lambda: [fn() for _ in range(20)])
