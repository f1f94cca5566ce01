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


@pytest.mark.parametrize("impl", ["fastopt", "reference", "roofline", "torch"])
def test_adam_float64(benchmark, request, impl):
    n = SIZES["1M"]
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    s = [np.abs(rng.standard_normal(n)) * 1e-3 for _ in range(2)]
    spec = OPTIMIZERS["adam"]
    benchmark.group = "adam float64 1M"
    benchmark.extra_info["bytes"] = spec.bytes_per_element(np.float64) * n
    if impl == "fastopt":
        fn = lambda: spec.call(K, p, g, s, step=10)  # noqa: E731
    elif impl == "reference":
        fn = lambda: spec.call(R, p, g, s, step=10)  # noqa: E731
    elif impl == "roofline":
        nt = get_num_threads()
        views = [a.view(np.float32) for a in [p] + s]
        fn = lambda: ext._roofline.update(views, g.view(np.float32), nt)  # noqa: E731
    else:
        fn = spec.torch_step(request.getfixturevalue("torch"), p, g)
    benchmark(fn)


@pytest.mark.parametrize("case", ["200x64-1K", "100x1K-10K"])
@pytest.mark.parametrize("impl", ["list", "flat", "torch"])
def test_adam_list(benchmark, request, case, impl):
    import fastopt

    count, lo, hi = {"200x64-1K": (200, 64, 1024), "100x1K-10K": (100, 1024, 10240)}[case]
    rng = np.random.default_rng(0)
    sizes = [int(k) for k in rng.integers(lo, hi + 1, count)]
    params = [rng.standard_normal(k).astype(np.float32) for k in sizes]
    grads = [rng.standard_normal(k).astype(np.float32) for k in sizes]
    benchmark.group = f"adam list {case}"
    if impl == "list":
        opt = fastopt.Adam(params, lr=1e-3)
        fn = lambda: opt.step(grads)  # noqa: E731
    elif impl == "flat":
        fp = fastopt.FlatParams({f"p{i}": (k,) for i, k in enumerate(sizes)})
        fp.grad[...] = np.concatenate(grads)
        fn = fastopt.Adam(fp, lr=1e-3).step
    else:
        fn = OPTIMIZERS["adam"].torch_optimizer(request.getfixturevalue("torch"), params,
                                                grads).step
    benchmark(fn)
