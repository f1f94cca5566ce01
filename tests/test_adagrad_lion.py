"""Adagrad and Lion: the two optimizers added through the kernel table alone (a row, a rule in
fo_rules.h, a NumPy twin, a class, a docs page).  The table grids (tests/table_grid.py) run
them through every generic test; here what is particular to them: the kernels against their
twins on every instruction-set level and thread count, edge values, PyTorch parity (Adagrad),
the initial accumulator in every state format, groups, clipping, checkpoints, the CLI and the
benchmark row."""

import json
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
OPTIONS = {"adagrad": [dict(lr=0.01), dict(lr=0.05, lr_decay=0.1, weight_decay=0.1, eps=1e-6)],
           "lion": [dict(lr=0.01), dict(lr=0.02, beta1=0.5, beta2=0.9, weight_decay=0.3)]}
NAMES = list(OPTIONS)


def _arrays(rng, dtype, n=N):
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    g[:64] = 0.0                       # sign(0) = 0, sqrt(0) + eps
    g[64:96] = -0.0
    return p, g


def _step(impl, name, p, g, state, opts, t):
    kw = dict(opts, step=t) if name == "adagrad" else dict(opts)
    getattr(impl, f"{name}_step")(p, g, *state, **kw)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("o", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_is_its_twin_bit_for_bit(isa, name, o, dtype, threads, rng):
    fastopt.set_num_threads(threads)
    opts = OPTIONS[name][o]
    p, g0 = _arrays(rng, dtype)
    pr = p.copy()
    s = [np.full(N, 0.25, dtype) if name == "adagrad" else np.zeros(N, dtype)]
    sr = [x.copy() for x in s]
    for t in range(1, 6):
        g = g0 * dtype(t % 3 - 1.5)
        _step(kernels, name, p, g, s, opts, t)
        _step(reference, name, pr, g, sr, opts, t)
        np.testing.assert_array_equal(p, pr)
        np.testing.assert_array_equal(s[0], sr[0])


@pytest.mark.parametrize("fmt", ["bf16", "int8", "f8"])
@pytest.mark.parametrize("name", NAMES)
def test_lowbit_kernels_are_their_twins(isa, name, fmt, rng):
    """bfloat16 and int8 state: the generic passes of fo_lowbit.h over the rule, against the
    twins of fastopt.reference.lowbit (the dense twin between widening and narrowing)."""
    opts = OPTIONS[name][1]
    p, g = _arrays(rng, np.float32)
    pr = p.copy()
    if fmt == "bf16":
        s, sr = [np.zeros(N, np.uint16)], [np.zeros(N, np.uint16)]
        extra = dict(seed=7)
    else:
        nb = -(-N // 256)
        s = [np.zeros(N, np.uint8), np.zeros(nb, np.float32)]
        sr = [x.copy() for x in s]
        extra = {}
    for t in range(1, 4):
        kw = dict(opts, **extra)
        if fmt == "bf16" or name == "adagrad":
            kw["step"] = t
        getattr(klow, f"{name}_step_{fmt}")(p, g, *s, **kw)
        getattr(rlow, f"{name}_step_{fmt}")(pr, g, *sr, **kw)
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lion_propagates_nan_and_steps_by_lr(isa, dtype):
    p = np.zeros(40, dtype)
    g = np.linspace(-2, 2, 40).astype(dtype)
    g[3] = np.nan
    m = np.zeros(40, dtype)
    kernels.lion_step(p, g, m, lr=0.5)
    assert np.isnan(p[3]) and np.isnan(m[3])
    rest = np.delete(np.arange(40), 3)
    np.testing.assert_array_equal(p[rest], -0.5 * np.sign(g[rest]))


def test_adagrad_matches_torch_for_20_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for dtype, kw in [(np.float32, {}),
                      (np.float32, dict(lr=0.05, lr_decay=0.01, weight_decay=0.1,
                                        initial_accumulator_value=0.1, eps=1e-8)),
                      (np.float64, dict(lr=0.05, lr_decay=0.01, weight_decay=0.1,
                                        initial_accumulator_value=0.1))]:
        params = [rng.standard_normal(s).astype(dtype) for s in [(33, 7), (5000,)]]
        tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
        opt = fastopt.Adagrad(params, **kw)
        topt = torch.optim.Adagrad(tp, **kw)
        for _ in range(20):
            grads = [rng.standard_normal(a.shape).astype(dtype) for a in params]
            for t, gr in zip(tp, grads):
                t.grad = torch.from_numpy(gr.copy())
            opt.step(grads)
            topt.step()
        # torch's CPU kernels may fuse a multiply and an add (FMA) where fastopt rounds
        # twice: a few ulps of the values apart, most elements the same bits
        tol = 4 * np.finfo(dtype).eps
        for a, t in zip(params, tp):
            b = t.detach().numpy()
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
            assert np.mean(a == b) > 0.6
        for s, t in zip(opt.state["sum"], tp):
            np.testing.assert_allclose(s, topt.state[t]["sum"].numpy(), rtol=tol, atol=0)


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8", "float8"])
def test_adagrad_sum_starts_at_initial_accumulator_value(state_dtype):
    params = [np.ones(5000, np.float32), np.ones(10, np.float32)]
    opt = fastopt.Adagrad(params, initial_accumulator_value=0.5, state_dtype=state_dtype)
    for s in opt.state["sum"]:
        np.testing.assert_array_equal(np.asarray(s), 0.5)     # exact: 0.5 in every format
    assert fastopt.Adagrad([np.ones(3)]).state["sum"][0].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="initial_accumulator_value is the optimizer's"):
        fastopt.Adagrad({"w": params[0], "b": params[1]}, initial_accumulator_value=0.5,
                        groups=[{"params": ["b"], "initial_accumulator_value": 0.1}])


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8", "float8"])
@pytest.mark.parametrize("name", NAMES)
def test_fused_is_reference_in_every_state_format_with_groups_and_clipping(name, state_dtype):
    """The optimizer (plan, groups, clipping, guard) on the fused kernels and on the NumPy
    twins: the same bits in every state format."""
    shapes = [(80, 70), (300,), (4097,)]
    cls = SPECS[name].cls
    extra = dict(initial_accumulator_value=0.2) if name == "adagrad" else {}
    runs = []
    for impl in ("fused", "reference"):
        params = {f"p{i}": np.random.default_rng(1).standard_normal(s).astype(np.float32)
                  for i, s in enumerate(shapes)}
        opt = cls(params, lr=0.01, weight_decay=0.05, impl=impl, state_dtype=state_dtype,
                  max_grad_norm=5.0, skip_nonfinite=True,
                  groups=[{"params": ["p1"], "weight_decay": 0.0, "lr": 0.003}], **extra)
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


@pytest.mark.parametrize("state_dtype", ["float32", "int8"])
@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_resumes_to_the_same_bits(name, state_dtype):
    cls = SPECS[name].cls
    shapes = [(70, 70), (50,)]

    def grads(t):
        r = np.random.default_rng(100 + t)
        return [r.standard_normal(s).astype(np.float32) for s in shapes]

    def fresh():
        return [np.random.default_rng(2).standard_normal(s).astype(np.float32) for s in shapes]

    full_p = fresh()
    full = cls(full_p, lr=0.01, state_dtype=state_dtype)
    for t in range(6):
        full.step(grads(t))
    half_p = fresh()
    half = cls(half_p, lr=0.01, state_dtype=state_dtype)
    for t in range(3):
        half.step(grads(t))
    saved = half.state_dict()
    resumed_p = [p.copy() for p in half_p]
    resumed = cls(resumed_p, lr=0.01, state_dtype=state_dtype)
    resumed.load_state_dict(saved)
    for t in range(3, 6):
        resumed.step(grads(t))
    for a, b in zip(resumed_p, full_p):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_cli_trains_with_the_new_optimizers(name, tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "train", "--optimizer", name,
                        "--epochs", "2", "--lr", "0.01" if name == "adagrad" else "0.001",
                        "--save", str(tmp_path / "c.npz")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"optimizer={name}" in p.stdout or name in p.stdout
    acc = float(p.stdout.split("held-out accuracy:")[1].split()[0])
    assert acc > 0.5


def test_bench_rows_for_the_new_optimizers():
    from fastopt.benchmark.cases import OPTIMIZERS, optimizer_case
    assert {"adagrad", "lion"} <= set(OPTIMIZERS)
    for name in NAMES:
        case = optimizer_case(name, 4096)
        assert case.bytes == 4096 * 4 * (3 + 2 * len(SPECS[name].state))
        work = case.build(None)
        assert {"fastopt", "reference", "roofline"} <= set(work.calls)
    assert json.dumps(SPECS["lion"].torch) == "null"      # no PyTorch Lion: no torch column
