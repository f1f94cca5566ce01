"""NAdam, added through the kernel table (a row, a rule in fo_rules.h, a NumPy twin, a class,
a docs page).  The table grids (tests/table_grid.py) run it through every generic test; here
what is particular to it: the kernel against its twin on every instruction-set level and
thread count, PyTorch parity, every state format with groups, clipping and the guard,
checkpoints, the CLI and the benchmark row."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference
from fastopt.kernels import lowbit as klow
from fastopt.optim import SPECS
from fastopt.reference import lowbit as rlow

ROOT = Path(__file__).resolve().parents[1]
N = 70001          # several parallel blocks, int8 blocks and a ragged vector tail
OPTIONS = [dict(lr=2e-3),
           dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1, momentum_decay=0.01),
           dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)]


def _arrays(rng, dtype, n=N):
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    g[:64] = 0.0
    g[64:96] = -0.0
    return p, g


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("o", range(len(OPTIONS)))
def test_nadam_kernel_is_its_twin_bit_for_bit(isa, o, dtype, threads, rng):
    fastopt.set_num_threads(threads)
    p, g0 = _arrays(rng, dtype)
    pr = p.copy()
    s = [np.zeros(N, dtype), np.zeros(N, dtype)]
    sr = [x.copy() for x in s]
    for t in range(1, 8):
        g = g0 * dtype(t % 3 - 1.5)
        kernels.nadam_step(p, g, *s, step=t, **OPTIONS[o])
        reference.nadam_step(pr, g, *sr, step=t, **OPTIONS[o])
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", ["bf16", "int8", "f8"])
@pytest.mark.parametrize("o", [1, 2])
def test_nadam_lowbit_kernels_are_their_twins(isa, o, fmt, rng):
    p, g = _arrays(rng, np.float32)
    pr = p.copy()
    if fmt == "bf16":
        s = [np.zeros(N, np.uint16), np.zeros(N, np.uint16)]
        extra = dict(seed=7)
    else:
        nb = -(-N // 256)
        s = [np.zeros(N, np.uint8), np.zeros(nb, np.float32),
             np.zeros(N, np.uint8), np.zeros(nb, np.float32)]
        extra = {}
    sr = [x.copy() for x in s]
    for t in range(1, 4):
        kw = dict(OPTIONS[o], step=t, **extra)
        getattr(klow, f"nadam_step_{fmt}")(p, g, *s, **kw)
        getattr(rlow, f"nadam_step_{fmt}")(pr, g, *sr, **kw)
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)


def test_nadam_mu_product_is_torchs_float32_product():
    """torch keeps prod mu_i as a float32 scalar, also for float64 parameters: the step's
    scales are computed from that product (a float64 product moves float64 results)."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.NAdam([p])
    for _ in range(25):
        p.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
    prod = np.float32(1.0)
    for i in range(1, 26):
        prod = np.float32(prod * np.float32(0.9 * (1.0 - 0.5 * 0.96 ** (i * 4e-3))))
    assert opt.state[p]["mu_product"].dtype == torch.float32
    assert float(opt.state[p]["mu_product"]) == float(prod)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1,
                                         momentum_decay=0.01, eps=1e-6),
                                dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)])
def test_nadam_matches_torch_for_25_steps(dtype, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s).astype(dtype) for s in [(33, 7), (5000,)]]
    tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
    opt = fastopt.NAdam(params, **kw)
    topt = torch.optim.NAdam(tp, **kw)
    for _ in range(25):
        grads = [rng.standard_normal(a.shape).astype(dtype) for a in params]
        for t, gr in zip(tp, grads):
            t.grad = torch.from_numpy(gr.copy())
        opt.step(grads)
        topt.step()
    # torch lerps the first moment (m + (1-b1)(g - m)) where fastopt computes Adam's
    # b1 m + (1-b1) g: a rounding apart, so a few ulps of the values, most bits the same
    tol = 8 * np.finfo(dtype).eps
    for a, t in zip(params, tp):
        b = t.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        assert np.mean(a == b) > 0.5
    for name in ("exp_avg", "exp_avg_sq"):
        for s, t in zip(opt.state[name], tp):
            np.testing.assert_allclose(s, topt.state[t][name].numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8", "float8"])
def test_nadam_fused_is_reference_in_every_state_format_with_groups_and_clipping(state_dtype):
    shapes = [(80, 70), (300,), (4097,)]
    runs = []
    for impl in ("fused", "reference"):
        params = {f"p{i}": np.random.default_rng(1).standard_normal(s).astype(np.float32)
                  for i, s in enumerate(shapes)}
        opt = fastopt.NAdam(params, lr=0.01, weight_decay=0.05, impl=impl,
                            state_dtype=state_dtype, max_grad_norm=5.0, skip_nonfinite=True,
                            groups=[{"params": ["p1"], "momentum_decay": 0.01, "lr": 0.003}])
        g_rng = np.random.default_rng(9)
        for t in range(4):
            grads = {f"p{i}": g_rng.standard_normal(s).astype(np.float32)
                     for i, s in enumerate(shapes)}
            if t == 2:
                grads["p0"][0, 0] = np.inf
            opt.step(grads)
        assert opt.skipped_steps == 1 and opt.grad_norm is not None
        runs.append([p.copy() for p in params.values()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], np.random.default_rng(1).standard_normal(shapes[0])
                              .astype(np.float32))


@pytest.mark.parametrize("state_dtype", ["float32", "int8"])
def test_nadam_checkpoint_resumes_to_the_same_bits(state_dtype):
    shapes = [(70, 70), (50,)]

    def grads(t):
        r = np.random.default_rng(100 + t)
        return [r.standard_normal(s).astype(np.float32) for s in shapes]

    def fresh():
        return [np.random.default_rng(2).standard_normal(s).astype(np.float32) for s in shapes]

    full_p = fresh()
    full = fastopt.NAdam(full_p, state_dtype=state_dtype)
    for t in range(6):
        full.step(grads(t))
    half_p = fresh()
    half = fastopt.NAdam(half_p, state_dtype=state_dtype)
    for t in range(3):
        half.step(grads(t))
    saved = half.state_dict()
    resumed_p = [p.copy() for p in half_p]
    resumed = fastopt.NAdam(resumed_p, state_dtype=state_dtype)
    resumed.load_state_dict(saved)
    for t in range(3, 6):
        resumed.step(grads(t))
    for a, b in zip(resumed_p, full_p):
        np.testing.assert_array_equal(a, b)


def test_nadam_refuses_bad_hyperparameters_before_touching_buffers():
    p = np.ones(10, np.float32)
    g = np.ones(10, np.float32)
    m, v = np.zeros(10, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="momentum_decay"):
        kernels.nadam_step(p, g, m, v, step=1, lr=0.1, momentum_decay=-1.0)
    with pytest.raises(ValueError, match="momentum_decay"):
        fastopt.NAdam([p], momentum_decay=-1.0)
    assert (p == 1).all() and (m == 0).all() and (v == 0).all()


def test_nadam_cli_trains(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "train", "--optimizer", "nadam",
                        "--epochs", "2", "--lr", "0.002", "--save", str(tmp_path / "c.npz")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    acc = float(p.stdout.split("held-out accuracy:")[1].split()[0])
    assert acc > 0.5


def test_nadam_bench_row():
    from fastopt.benchmark.cases import OPTIMIZERS, optimizer_case
    assert "nadam" in OPTIMIZERS
    case = optimizer_case("nadam", 4096)
    assert case.bytes == 4096 * 4 * (3 + 2 * 2)
    assert {"fastopt", "reference", "roofline"} <= set(case.build(None).calls)
    assert SPECS["nadam"].torch[0] == "NAdam"
