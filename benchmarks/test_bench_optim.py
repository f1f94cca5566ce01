import numpy as np
import pytest

from fastopt.benchmark import OPTIMIZERS
from fastopt import kernels as K
from fastopt import reference as R
from fastopt.runtime.dispatch import ext
from fastopt.runtime.threads import get_num_threads

SIZES = {"64K": 1 << 16, "1M": 1 << 20, "16M": 1 << 24}
NAMES = list(OPTIMIZERS)


def _buffers(name, n):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    spec = OPTIMIZERS[name]
    s = [np.abs(rng.standard_normal(n)).astype(np.float32) * 1e-3 for _ in spec.state]
    return p, g, s, spec.bytes_per_element() * n


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("impl", ["fastopt", "reference", "roofline", "torch"])
def test_optimizer(benchmark, request, name, size, impl):
    n = SIZES[size]
    p, g, s, nbytes = _buffers(name, n)
    benchmark.group = f"{name} {size}"
    benchmark.extra_info["bytes"] = nbytes
    if impl == "fastopt":
        fn = lambda: OPTIMIZERS[name].call(K, p, g, s, step=10)  # noqa: E731
    elif impl == "reference":
        fn = lambda: OPTIMIZERS[name].call(R, p, g, s, step=10)  # noqa: E731
    elif impl == "roofline":
        nt = get_num_threads()
        fn = lambda: ext._roofline.update([p] + s, g, nt)  # noqa: E731
    else:
        torch = request.getfixturevalue("torch")
        fn = OPTIMIZERS[name].torch_step(torch, p, g)
    benchmark(fn)
