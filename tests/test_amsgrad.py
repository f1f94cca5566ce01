"""AMSGrad: its kernel row (three state buffers, float32/float64 state), its class, and
fastopt.Adam / AdamW with amsgrad=True, against its NumPy twin and torch.optim.Adam/AdamW
(amsgrad=True).  The table grids (tests/table_grid.py) run it through every generic test."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference

ROOT = Path(__file__).resolve().parents[1]
N = 70001
OPTIONS = [dict(lr=1e-3),
           dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
           dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("o", range(len(OPTIONS)))
def test_amsgrad_kernel_is_its_twin_bit_for_bit(isa, o, dtype, threads, rng):
    fastopt.set_num_threads(threads)
    p = rng.standard_normal(N).astype(dtype)
    g0 = rng.standard_normal(N).astype(dtype)
    g0[:64] = 0.0
    pr = p.copy()
    s = [np.zeros(N, dtype) for _ in range(3)]
    sr = [x.copy() for x in s]
    for t in range(1, 8):
        g = g0 * dtype((0.5, 3.0, 0.0, 0.0, 0.1, 0.1, 0.1)[t - 1])   # v falls after a spike
        kernels.amsgrad_step(p, g, *s, step=t, **OPTIONS[o])
        reference.amsgrad_step(pr, g, *sr, step=t, **OPTIONS[o])
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)
    assert (s[2] > s[1]).mean() > 0.5          # the maximum is not the current v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_amsgrad_max_propagates_nan(dtype):
    p = np.zeros(4, dtype)
    g = np.array([1.0, np.nan, 1.0, 1.0], dtype)
    s = [np.zeros(4, dtype) for _ in range(3)]
    for _ in range(2):
        kernels.amsgrad_step(p, g, *s, step=1, lr=0.1)
    assert np.isnan(s[2][1]) and np.isnan(p[1]) and not np.isnan(s[2][[0, 2, 3]]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", [("Adam", {}), ("Adam", dict(lr=0.01, betas=(0.8, 0.99),
                                                                 weight_decay=0.1, eps=1e-6)),
                                    ("AdamW", {}), ("AdamW", dict(lr=0.01, weight_decay=0.3))])
def test_amsgrad_matches_torch_for_25_steps(cls, kw, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s).astype(dtype) for s in [(33, 7), (5000,)]]
    tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
    opt = getattr(fastopt, cls)(params, amsgrad=True, **kw)
    assert isinstance(opt, fastopt.AMSGrad)
    topt = getattr(torch.optim, cls)(tp, amsgrad=True, **kw)
    for t in range(25):
        scale = 4.0 if t == 3 else 1.0
        grads = [scale * rng.standard_normal(a.shape).astype(dtype) for a in params]
        for x, gr in zip(tp, grads):
            x.grad = torch.from_numpy(gr.copy())
        opt.step(grads)
        topt.step()
    tol = 8 * np.finfo(dtype).eps
    for a, x in zip(params, tp):
        b = x.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        assert np.mean(a == b) > 0.5
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        for s, x in zip(opt.state[name], tp):
            np.testing.assert_allclose(s, topt.state[x][name].numpy(), rtol=tol, atol=tol)


def test_adam_amsgrad_arguments():
    p = [np.ones(3, np.float32)]
    assert type(fastopt.Adam(p)) is fastopt.Adam
    assert type(fastopt.Adam(p, amsgrad=False)) is fastopt.Adam
    a = fastopt.AdamW(p, amsgrad=True)
    assert a.weight_decay == 1e-2 and a.decoupled_weight_decay is True
    b = fastopt.Adam(p, 0.1, (0.5, 0.9), 1e-6, 0.2, amsgrad=True)
    assert b.betas == (0.5, 0.9) and b.weight_decay == 0.2 and b.eps == 1e-6 and b.lr == 0.1
    assert b.decoupled_weight_decay is False
    with pytest.raises(TypeError, match="amsgrad must be a bool"):
        fastopt.Adam(p, amsgrad=1)
    with pytest.raises(ValueError, match="AMSGrad keeps its state in float32"):
        fastopt.Adam([np.ones(5000, np.float32)], amsgrad=True, state_dtype="int8")
    with pytest.raises(TypeError, match="amsgrad"):
        fastopt.functional.adam([np.ones(3)], [np.ones(3)], None, amsgrad=True)


def test_amsgrad_checkpoint_resumes_to_the_same_bits():
    shapes = [(70, 70), (50,)]

    def grads(t):
        r = np.random.default_rng(100 + t)
        return [r.standard_normal(s).astype(np.float32) * (5 if t == 1 else 1) for s in shapes]

    def fresh():
        return [np.random.default_rng(2).standard_normal(s).astype(np.float32) for s in shapes]

    full_p = fresh()
    full = fastopt.Adam(full_p, amsgrad=True)
    for t in range(6):
        full.step(grads(t))
    half_p = fresh()
    half = fastopt.Adam(half_p, amsgrad=True)
    for t in range(3):
        half.step(grads(t))
    saved = half.state_dict()
    resumed_p = [p.copy() for p in half_p]
    resumed = fastopt.Adam(resumed_p, amsgrad=True)
    resumed.load_state_dict(saved)
    for t in range(3, 6):
        resumed.step(grads(t))
    for a, b in zip(resumed_p, full_p):
        np.testing.assert_array_equal(a, b)


def test_amsgrad_cli_trains(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "train", "--optimizer", "amsgrad",
                        "--epochs", "2", "--lr", "0.001", "--save", str(tmp_path / "c.npz")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    acc = float(p.stdout.split("held-out accuracy:")[1].split()[0])
    assert acc > 0.5
