"""RAdam, added through the kernel table alone (a row, a rule in fo_rules.h, a NumPy twin, a
class, a docs page).  The table grids (tests/table_grid.py) run it through every generic test;
here what is particular to it: the kernel against its twin on every instruction-set level and
thread count (unrectified and rectified steps, both weight decays), the per-step constants,
PyTorch parity (decoupled_weight_decay too), every state format with groups, clipping and the
guard, checkpoints, the CLI and the benchmark row."""

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
# beta2=0.9: rho_t > 5 from step 4 on (0.999: from step 6 on); 12 steps reach both
OPTIONS = [dict(lr=1e-3), dict(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.1),
           dict(lr=0.05, beta2=0.9, weight_decay=0.1, decoupled_weight_decay=True)]


def _arrays(rng, dtype, n=N):
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    g[:64] = 0.0                       # |g| + eps
    g[64:96] = -0.0
    return p, g


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("o", [0, 1, 2])
def test_radam_kernel_is_its_twin_bit_for_bit(isa, o, dtype, threads, rng):
    fastopt.set_num_threads(threads)
    opts = OPTIONS[o]
    p, g0 = _arrays(rng, dtype)
    pr = p.copy()
    s = [np.zeros(N, dtype), np.zeros(N, dtype)]
    sr = [x.copy() for x in s]
    for t in range(1, 13):
        g = g0 * dtype(t % 3 - 1.5)
        kernels.radam_step(p, g, *s, step=t, **opts)
        reference.radam_step(pr, g, *sr, step=t, **opts)
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)
        assert (s[1] >= 0).all()


@pytest.mark.parametrize("fmt", ["bf16", "int8", "f8"])
def test_radam_lowbit_kernels_are_their_twins(isa, fmt, rng):
    """bfloat16 and int8 state: the generic two-buffer passes of fo_lowbit.h over the rule,
    against the twins of fastopt.reference.lowbit."""
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
    for t in range(1, 8):
        kw = dict(OPTIONS[1 + t % 2], step=t, **extra)
        getattr(klow, f"radam_step_{fmt}")(p, g, *s, **kw)
        getattr(rlow, f"radam_step_{fmt}")(pr, g, *sr, **kw)
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radam_steps_before_and_after_rectification(isa, dtype):
    """beta2=0.9: rho_t = 1, 1.95, 2.85, 3.71, 4.53, 5.31, ... : steps 1-5 are bias-corrected
    momentum steps (p - lr m / (1 - beta1^t), v unused), step 6 the first rectified one."""
    n = 37
    g = np.full(n, 0.5, dtype)
    p, m, v = np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)
    lr = 0.125
    for t in range(1, 6):
        kernels.radam_step(p, g, m, v, step=t, lr=lr, beta2=0.9)
        np.testing.assert_allclose(p, -lr * 0.5 * t, rtol=8 * np.finfo(dtype).eps)
    before = p.copy()
    kernels.radam_step(p, g, m, v, step=6, lr=lr, beta2=0.9)
    rho_inf, b2t = 19.0, 0.9 ** 6
    rho_t = rho_inf - 2 * 6 * b2t / (1 - b2t)
    assert rho_t > 5
    rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    # constant gradient: m / (1 - beta1^t) = 0.5, v / (1 - beta2^t) = 0.25
    expect = before - lr * 0.5 * rect * np.sqrt(1 - b2t) / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(p, expect, rtol=8 * np.finfo(dtype).eps)
    np.testing.assert_allclose(p - before, -lr * rect, rtol=1e-6)


def test_radam_matches_torch_for_25_steps():
    """torch.optim.RAdam (foreach off and on; both weight decays): a few ulp apart (torch's
    CPU lerp and addcmul may fuse a multiply and an add where fastopt rounds twice)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for dtype, kw in [(np.float32, {}), (np.float64, {}),
                      (np.float32, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
                      (np.float64, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
                      (np.float32, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
                      (np.float64, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True))]:
        for foreach in (False, True):
            params = [rng.standard_normal(s).astype(dtype) for s in [(33, 7), (5000,)]]
            tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
            opt = fastopt.RAdam(params, **kw)
            topt = torch.optim.RAdam(tp, foreach=foreach, **kw)
            for _ in range(25):
                grads = [rng.standard_normal(a.shape).astype(dtype) for a in params]
                for t, gr in zip(tp, grads):
                    t.grad = torch.from_numpy(gr.copy())
                opt.step(grads)
                topt.step()
            # measured: |difference| <= 2 eps (of 1.0; more ulps of the few parameters near
            # zero), over 90% of the elements the same bits
            tol = 4 * np.finfo(dtype).eps
            for a, t in zip(params, tp):
                b = t.detach().numpy()
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
                assert np.mean(a == b) > 0.85
            for name, atol in (("exp_avg", tol), ("exp_avg_sq", 0)):    # gradients of scale 1
                for s, t in zip(opt.state[name], tp):
                    np.testing.assert_allclose(s, topt.state[t][name].numpy(), rtol=tol,
                                               atol=atol)


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8", "float8"])
def test_radam_fused_is_reference_with_groups_clipping_and_guard(state_dtype):
    shapes = [(80, 70), (300,), (4097,)]
    runs = []
    for impl in ("fused", "reference"):
        params = {f"p{i}": np.random.default_rng(1).standard_normal(s).astype(np.float32)
                  for i, s in enumerate(shapes)}
        opt = fastopt.RAdam(params, lr=0.01, weight_decay=0.05, impl=impl,
                             state_dtype=state_dtype, max_grad_norm=5.0, skip_nonfinite=True,
                             groups=[{"params": ["p1"], "weight_decay": 0.0, "lr": 0.003,
                                      "betas": (0.8, 0.9)}])
        g_rng = np.random.default_rng(9)
        for t in range(4):
            grads = {f"p{i}": g_rng.standard_normal(s).astype(np.float32)
                     for i, s in enumerate(shapes)}
            if t == 2:
                grads["p0"][0, 0] = np.inf          # skipped by the guard
            opt.step(grads)
        assert opt.skipped_steps == 1 and opt.grad_norm is not None
        runs.append([p.copy() for p in params.values()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], np.random.default_rng(1).standard_normal((80, 70))
                              .astype(np.float32))


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8", "float8"])
def test_radam_checkpoint_resumes_to_the_same_bits(state_dtype):
    shapes = [(70, 70), (50,)]

    def grads(t):
        r = np.random.default_rng(100 + t)
        return [r.standard_normal(s).astype(np.float32) for s in shapes]

    def fresh():
        return [np.random.default_rng(2).standard_normal(s).astype(np.float32) for s in shapes]

    full_p = fresh()
    full = fastopt.RAdam(full_p, lr=0.01, state_dtype=state_dtype)
    for t in range(6):
        full.step(grads(t))
    half_p = fresh()
    half = fastopt.RAdam(half_p, lr=0.01, state_dtype=state_dtype)
    for t in range(3):
        half.step(grads(t))
    saved = half.state_dict()
    resumed_p = [p.copy() for p in half_p]
    resumed = fastopt.RAdam(resumed_p, lr=0.01, state_dtype=state_dtype)
    resumed.load_state_dict(saved)
    for t in range(3, 6):
        resumed.step(grads(t))
    for a, b in zip(resumed_p, full_p):
        np.testing.assert_array_equal(a, b)


def test_radam_cli_trains(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "train", "--optimizer", "radam",
                        "--epochs", "2", "--lr", "0.01", "--save", str(tmp_path / "c.npz")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "radam" in p.stdout
    acc = float(p.stdout.split("held-out accuracy:")[1].split()[0])
    assert acc > 0.5
    assert (tmp_path / "c.npz").exists()


def test_radam_bench_row():
    from fastopt.benchmark.cases import OPTIMIZERS, optimizer_case
    assert "radam" in OPTIMIZERS
    case = optimizer_case("radam", 4096)
    assert case.bytes == 4096 * 4 * (3 + 2 * 2)
    assert {"fastopt", "reference", "roofline"} <= set(case.build(None).calls)
    torch = pytest.importorskip("torch")
    assert "torch" in case.build(torch).calls
    assert SPECS["radam"].torch[0] == "RAdam"
