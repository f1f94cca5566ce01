import numpy as np
import pytest

from fastopt import bench
from fastopt import kernels as K
from fastopt import reference as R
from fastopt._dispatch import ext
from fastopt._threads import get_num_threads

SIZES = {"64K": 1 << 16, "1M": 1 << 20, "16M": 1 << 24}
NAMES = list(bench._OPT_SPECS)


def _buffers(name, n):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    nstate, bpe = bench._OPT_SPECS[name]
    s = [np.abs(rng.standard_normal(n)).astype(np.float32) * 1e-3 for _ in range(nstate)]
    return p, g, s, bpe * n


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("impl", ["fastopt", "reference", "roofline", "torch"])
def test_optimizer(benchmark, request, name, size, impl):
    n = SIZES[size]
    p, g, s, nbytes = _buffers(name, n)
    benchmark.group = f"{name} {size}"
    benchmark.extra_info["bytes"] = nbytes
    if impl == "fastopt":
        fn = bench._opt_call(K, name, p, g, s)
    elif impl == "reference":
        fn = bench._opt_call(R, name, p, g, s)
    elif impl == "roofline":
        nt = get_num_threads()
        fn = lambda: ext._roofline.update([p] + s, g, nt)  # noqa: E731
    else:
        torch = request.getfixturevalue("torch")
        fn = bench._torch_opt(torch, name, p, g)
    benchmark(fn)
