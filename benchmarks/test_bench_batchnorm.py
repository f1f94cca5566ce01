import numpy as np
import pytest

from fastopt import kernels as K
from fastopt import reference as R

SHAPES = [(256, 1024), (4096, 1024), (64, 64, 56, 56)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", ["fastopt", "reference", "torch"])
def test_batchnorm_forward_backward(benchmark, request, shape, impl):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    benchmark.group = "batchnorm fwd+bwd " + "x".join(map(str, shape))
    benchmark.extra_info["bytes"] = 8 * 4 * x.size
    if impl == "torch":
        torch = request.getfixturevalue("torch")
        tx = torch.from_numpy(x).requires_grad_()
        tg, tb = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
        trm, trv, tdy = torch.zeros(C), torch.ones(C), torch.from_numpy(dy)

        def fn():
            out = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=True)
            torch.autograd.grad(out, (tx, tg, tb), tdy)
    else:
        mod = K if impl == "fastopt" else R
        y, dx = np.empty_like(x), np.empty_like(x)

        def fn():
            _, m, s = mod.batchnorm_forward(x, gamma, beta, rm, rv, out=y)
            mod.batchnorm_backward(dy, x, gamma, m, s, out=(dx, None, None))
    benchmark(fn)
