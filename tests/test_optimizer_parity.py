"""The optimizers added through the kernel table (Adagrad, Lion, Adamax, RAdam, NAdam, AMSGrad),
one row each: what is particular to them beyond the generic table grids (tests/table_grid.py).

Per row: the kernel against its NumPy twin bit for bit on every instruction-set level and
thread count (zero and signed-zero gradients, the row's option sets and gradient schedule),
the low-precision kernels against their twins, PyTorch parity (25 steps, float32 and
float64, foreach off and on where the row says), the optimizer fused against reference in
every state format with groups, clipping and the guard, checkpoints, the CLI and the benchmark
row.  Then the checks particular to one optimizer (edge values, rectification, arguments).

A new optimizer is a new ``Row``; ``-k <name>`` selects its cases.
"""

from dataclasses import dataclass, field

import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference
from fastopt.kernels import lowbit as klow
from fastopt.optim import SPECS
from fastopt.reference import lowbit as rlow

import cli_run
import table_grid

N = 70001          # several parallel blocks, int8 blocks and a ragged vector tail


def _alternating(steps):
    """Gradient scales t % 3 - 1.5: signs alternate, magnitudes change."""
    return tuple(t % 3 - 1.5 for t in range(1, steps + 1))


def _max_is_not_current_v(state):
    assert (state[2] > state[1]).mean() > 0.5          # the maximum is not the current v


@dataclass(frozen=True)
class Row:
    """One optimizer of the table and the particulars of its tests (data only)."""

    name: str                   # kernel and registry name
    options: tuple              # kernel keyword sets (lr included) of the twin test
    scales: tuple               # gradient scale of each step of the twin test
    initial: float = 0.0        # the state's starting value in the twin test
    positive: tuple = ()        # state buffers strictly positive after every step
    final: object = None        # a check of the twin test's final state
    lowbit: tuple = ()          # low-precision cases: the kernel options of each step
    # PyTorch parity: (class, dtype, keywords, foreach) run in fastopt and torch.optim
    parity: tuple = ()
    parity_steps: int = 25
    spike: tuple = ()           # (step, scale): the gradients of a parity step scaled
    ulps: int = 4               # tolerance, in eps of the dtype
    same_bits: float = 0.85     # fraction of parameters with the very bits of torch's
    exact_states: tuple = ()    # states compared with atol=0 (the others: atol=tolerance)
    group: dict = field(default_factory=dict)     # a group's own hyperparameters
    extra: dict = field(default_factory=dict)     # constructor keywords of the fused test
    checkpoint: tuple = ("float32", "int8")       # state formats of the checkpoint test
    make: tuple = ("", {"lr": 0.01})               # (class, keywords) of the checkpoint test
    checkpoint_spike: float = 1.0                  # gradient scale of its step 1
    cli_lr: str = "0.01"
    nstate: int = 1             # state buffers (the benchmark's bytes per element)


def _kw(lr, **kw):
    return dict(lr=lr, **kw)


_WD = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
_DECOUPLED = dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)

ROWS = [
    Row("adagrad",
        options=(_kw(0.01), _kw(0.05, lr_decay=0.1, weight_decay=0.1, eps=1e-6)),
        scales=_alternating(5), initial=0.25,
        lowbit=((_kw(0.05, lr_decay=0.1, weight_decay=0.1, eps=1e-6),) * 3,),
        parity=(("Adagrad", np.float32, {}, None),
                ("Adagrad", np.float32, dict(lr=0.05, lr_decay=0.01, weight_decay=0.1,
                                             initial_accumulator_value=0.1, eps=1e-8), None),
                ("Adagrad", np.float64, dict(lr=0.05, lr_decay=0.01, weight_decay=0.1,
                                             initial_accumulator_value=0.1), None)),
        parity_steps=20, same_bits=0.6, exact_states=("sum",),
        group=dict(weight_decay=0.0, lr=0.003), extra=dict(initial_accumulator_value=0.2)),
    Row("lion",
        options=(_kw(0.01), _kw(0.02, beta1=0.5, beta2=0.9, weight_decay=0.3)),
        scales=_alternating(5),
        lowbit=((_kw(0.02, beta1=0.5, beta2=0.9, weight_decay=0.3),) * 3,),
        group=dict(weight_decay=0.0, lr=0.003), cli_lr="0.001"),
    Row("adamax",
        options=(_kw(2e-3), _kw(0.05, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.1)),
        scales=_alternating(5), positive=(1,),          # exp_inf >= eps: never negative
        lowbit=((_kw(0.05, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.1),) * 3,),
        parity=tuple(("Adamax", d, kw, f) for d, kw in [(np.float32, {}), (np.float64, {}),
                                                        (np.float32, _WD), (np.float64, _WD)]
                     for f in (False, True)),
        exact_states=("exp_inf",),
        group=dict(weight_decay=0.0, lr=0.003, betas=(0.8, 0.9)),
        checkpoint=("float32", "bfloat16", "int8"), cli_lr="0.002", nstate=2),
    # beta2=0.9: rho_t > 5 from step 4 on (0.999: from step 6 on); 12 steps reach both
    Row("radam",
        options=(_kw(1e-3), _kw(0.05, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.1),
                 _kw(0.05, beta2=0.9, weight_decay=0.1, decoupled_weight_decay=True)),
        scales=_alternating(12),
        # the two weight decays alternating, steps 1-7
        lowbit=(tuple(_kw(0.05, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.1) if t % 2 == 0
                      else _kw(0.05, beta2=0.9, weight_decay=0.1, decoupled_weight_decay=True)
                      for t in range(1, 8)),),
        parity=tuple(("RAdam", d, kw, f) for kw in [{}, _WD, _DECOUPLED]
                     for d in (np.float32, np.float64) for f in (False, True)),
        exact_states=("exp_avg_sq",),
        group=dict(weight_decay=0.0, lr=0.003, betas=(0.8, 0.9)),
        checkpoint=("float32", "bfloat16", "int8"), nstate=2),
    # torch lerps the first moment (m + (1-b1)(g - m)) where fastopt computes Adam's
    # b1 m + (1-b1) g: a rounding apart, so a few ulps of the values, most bits the same
    Row("nadam",
        options=(_kw(2e-3),
                 _kw(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1,
                     momentum_decay=0.01),
                 _kw(0.01, weight_decay=0.1, decoupled_weight_decay=True)),
        scales=_alternating(7),
        lowbit=((_kw(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1,
                     momentum_decay=0.01),) * 3,
                (_kw(0.01, weight_decay=0.1, decoupled_weight_decay=True),) * 3),
        parity=tuple(("NAdam", d, kw, None)
                     for kw in [{}, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1,
                                         momentum_decay=0.01, eps=1e-6), _DECOUPLED]
                     for d in (np.float32, np.float64)),
        ulps=8, same_bits=0.5,
        group=dict(momentum_decay=0.01, lr=0.003), make=("", {}), cli_lr="0.002", nstate=2),
    # AMSGrad: float32/float64 state only; fastopt.Adam/AdamW(amsgrad=True) make one
    Row("amsgrad",
        options=(_kw(1e-3), _kw(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
                 _kw(0.01, weight_decay=0.1, decoupled_weight_decay=True)),
        scales=(0.5, 3.0, 0.0, 0.0, 0.1, 0.1, 0.1), final=_max_is_not_current_v,  # v falls
        parity=tuple((cls, d, dict(kw, amsgrad=True), None)
                     for cls, kw in [("Adam", {}),
                                     ("Adam", dict(lr=0.01, betas=(0.8, 0.99),
                                                   weight_decay=0.1, eps=1e-6)),
                                     ("AdamW", {}), ("AdamW", dict(lr=0.01, weight_decay=0.3))]
                     for d in (np.float32, np.float64)),
        spike=((3, 4.0),), ulps=8, same_bits=0.5,
        checkpoint=("float32",), make=("Adam", {"amsgrad": True}), checkpoint_spike=5.0,
        cli_lr="0.001", nstate=3),
]
ROW = {r.name: r for r in ROWS}


def _ids(cases):
    return ["-".join(str(x) for x in c) for c in cases]


def _arrays(rng, dtype, n=N):
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    g[:64] = 0.0                       # sign(0) = 0, sqrt(0) + eps, |g| + eps
    g[64:96] = -0.0
    return p, g


def _kernel_step(mod, name, p, g, state, opts, t):
    kw = dict(opts, step=t) if table_grid.KERNELS[name].step else dict(opts)
    getattr(mod, f"{name}_step")(p, g, *state, **kw)


# ------------------------------------------------------------------ kernels and twins

TWIN = [(r.name, o) for r in ROWS for o in range(len(r.options))]


@table_grid.quick(family=lambda p: p["name"], option="o")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,o", TWIN, ids=_ids(TWIN))
def test_kernel_is_its_twin_bit_for_bit(isa, name, o, dtype, threads, rng):
    row = ROW[name]
    fastopt.set_num_threads(threads)
    opts = row.options[o]
    p, g0 = _arrays(rng, dtype)
    pr = p.copy()
    s = [np.full(N, row.initial, dtype) for _ in table_grid.KERNELS[name].state]
    sr = [x.copy() for x in s]
    nonnegative = [b.nonnegative for b in table_grid.KERNELS[name].state]
    for t, scale in enumerate(row.scales, 1):
        g = g0 * dtype(scale)
        _kernel_step(kernels, name, p, g, s, opts, t)
        _kernel_step(reference, name, pr, g, sr, opts, t)
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)
        for i, a in enumerate(s):
            if nonnegative[i]:
                assert (a >= 0).all()
            if i in row.positive:
                assert (a > 0).all()
    if row.final is not None:
        row.final(s)


LOWBIT = [(r.name, c, fmt) for r in ROWS for c in range(len(r.lowbit))
          for fmt in ("bf16", "int8", "f8")]


@pytest.mark.parametrize("name,c,fmt", LOWBIT, ids=_ids(LOWBIT))
def test_lowbit_kernels_are_their_twins(isa, name, c, fmt, rng):
    """bfloat16, int8 and float8 state: the generic passes of fo_lowbit.h over the rule, against the
    twins of fastopt.reference.lowbit (the dense twin between widening and narrowing)."""
    k = table_grid.KERNELS[name]
    p, g = _arrays(rng, np.float32)
    pr = p.copy()
    if fmt == "bf16":
        s = [np.zeros(N, np.uint16) for _ in k.state]
        extra = dict(seed=7)
    else:
        nb = -(-N // 256)
        s = [a for _ in k.state for a in (np.zeros(N, np.uint8), np.zeros(nb, np.float32))]
        extra = {}
    sr = [x.copy() for x in s]
    for t, opts in enumerate(ROW[name].lowbit[c], 1):
        kw = dict(opts, **extra)
        if fmt == "bf16" or k.step:
            kw["step"] = t
        getattr(klow, f"{name}_step_{fmt}")(p, g, *s, **kw)
        getattr(rlow, f"{name}_step_{fmt}")(pr, g, *sr, **kw)
        np.testing.assert_array_equal(p, pr)
        for a, b in zip(s, sr):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ PyTorch

PARITY = [(r.name, i) for r in ROWS for i in range(len(r.parity))]


def _parity_id(case):
    name, i = case
    cls, dtype, kw, foreach = ROW[name].parity[i]
    kws = "-".join(k for k in kw if k != "amsgrad") or "defaults"
    return f"{name}-{cls}-{np.dtype(dtype).name}-{kws}" + (
        "" if foreach is None else f"-foreach={foreach}")


@pytest.mark.parametrize("name,i", PARITY, ids=[_parity_id(c) for c in PARITY])
def test_matches_torch(name, i):
    """torch.optim's class over 25 steps (Adagrad: 20): a few ulp apart (torch's CPU lerp,
    addcmul and addcdiv may fuse a multiply and an add where fastopt rounds twice), most
    elements the same bits, and every state buffer."""
    torch = pytest.importorskip("torch")
    row = ROW[name]
    cls, dtype, kw, foreach = row.parity[i]
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s).astype(dtype) for s in [(33, 7), (5000,)]]
    tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
    opt = getattr(fastopt, cls)(params, **kw)
    assert isinstance(opt, SPECS[name].cls)
    topt = getattr(torch.optim, cls)(tp, **kw, **({} if foreach is None else
                                                  {"foreach": foreach}))
    spike = dict(row.spike)
    for t in range(row.parity_steps):
        scale = spike.get(t, 1.0)
        grads = [scale * rng.standard_normal(a.shape).astype(dtype) for a in params]
        for x, gr in zip(tp, grads):
            x.grad = torch.from_numpy(gr.copy())
        opt.step(grads)
        topt.step()
    tol = row.ulps * np.finfo(dtype).eps
    for a, x in zip(params, tp):
        b = x.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        assert np.mean(a == b) > row.same_bits
    for state in SPECS[name].state:                     # gradients of scale 1
        atol = 0 if state in row.exact_states else tol
        for s, x in zip(opt.state[state], tp):
            np.testing.assert_allclose(s, topt.state[x][state].numpy(), rtol=tol, atol=atol)


# ------------------------------------------------------------------ the optimizer

FUSED = [(r.name, f) for r in ROWS if r.lowbit
         for f in ("float32", "bfloat16", "int8", "float8")]


@pytest.mark.parametrize("name,state_dtype", FUSED, ids=_ids(FUSED))
def test_fused_is_reference_with_groups_clipping_and_guard(name, state_dtype):
    """The optimizer (plan, groups, clipping, guard) on the fused kernels and on the NumPy
    twins: the same bits in every state format."""
    row = ROW[name]
    shapes = [(80, 70), (300,), (4097,)]
    runs = []
    for impl in ("fused", "reference"):
        params = {f"p{i}": np.random.default_rng(1).standard_normal(s).astype(np.float32)
                  for i, s in enumerate(shapes)}
        opt = SPECS[name].cls(params, lr=0.01, weight_decay=0.05, impl=impl,
                              state_dtype=state_dtype, max_grad_norm=5.0, skip_nonfinite=True,
                              groups=[{"params": ["p1"], **row.group}], **row.extra)
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
    assert not np.array_equal(runs[0][0], np.random.default_rng(1).standard_normal(shapes[0])
                              .astype(np.float32))


CHECKPOINT = [(r.name, f) for r in ROWS for f in r.checkpoint]


@pytest.mark.parametrize("name,state_dtype", CHECKPOINT, ids=_ids(CHECKPOINT))
def test_checkpoint_resumes_to_the_same_bits(name, state_dtype):
    row = ROW[name]
    cls_name, kw = row.make
    cls = getattr(fastopt, cls_name) if cls_name else SPECS[name].cls
    shapes = [(70, 70), (50,)]

    def grads(t):
        r = np.random.default_rng(100 + t)
        scale = row.checkpoint_spike if t == 1 else 1
        return [r.standard_normal(s).astype(np.float32) * scale for s in shapes]

    def fresh():
        return [np.random.default_rng(2).standard_normal(s).astype(np.float32) for s in shapes]

    full_p = fresh()
    full = cls(full_p, state_dtype=state_dtype, **kw)
    assert isinstance(full, SPECS[name].cls)
    for t in range(6):
        full.step(grads(t))
    half_p = fresh()
    half = cls(half_p, state_dtype=state_dtype, **kw)
    for t in range(3):
        half.step(grads(t))
    saved = half.state_dict()
    resumed_p = [p.copy() for p in half_p]
    resumed = cls(resumed_p, state_dtype=state_dtype, **kw)
    resumed.load_state_dict(saved)
    for t in range(3, 6):
        resumed.step(grads(t))
    for a, b in zip(resumed_p, full_p):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ the CLI and the benchmark


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ROW))
def test_cli_trains(name, tmp_path):
    p = cli_run.run("train", "--optimizer", name, "--epochs", "2", "--lr", ROW[name].cli_lr,
                    "--save", str(tmp_path / "c.npz"))
    assert f"optimizer {name}" in p.stdout
    acc = float(p.stdout.split("held-out accuracy:")[1].split()[0])
    assert acc > 0.5
    assert (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("name", list(ROW))
def test_bench_row(name):
    from fastopt.benchmark.cases import OPTIMIZERS, optimizer_case
    assert name in OPTIMIZERS
    case = optimizer_case(name, 4096)
    assert case.bytes == 4096 * 4 * (3 + 2 * ROW[name].nstate)
    assert len(SPECS[name].state) == ROW[name].nstate
    work = case.build(None)
    assert {"fastopt", "reference", "roofline"} <= set(work.calls)
    torch_name = ROW[name].parity[0][0] if ROW[name].parity else None
    if torch_name is None:
        assert SPECS[name].torch is None            # no PyTorch Lion: no torch column
    else:
        assert SPECS[name].torch[0] == torch_name
        torch = pytest.importorskip("torch")
        assert "torch" in case.build(torch).calls


# ------------------------------------------------------------------ particular to one


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamax_first_step_and_nan(isa, dtype):
    """Step 1 from zeros: m = (1 - beta1) g, u = |g| + eps, p - lr m / ((1 - beta1) u); a zero
    gradient of either sign leaves p and gives u = eps; a NaN gradient reaches p and u."""
    g = np.linspace(-2, 2, 41).astype(dtype)
    g[0], g[1], g[7] = 0.0, -0.0, np.nan
    p, m, u = np.ones(41, dtype), np.zeros(41, dtype), np.zeros(41, dtype)
    kernels.adamax_step(p, g, m, u, step=1, lr=0.5, eps=1e-3)
    assert np.isnan(p[7]) and np.isnan(m[7]) and np.isnan(u[7])
    np.testing.assert_array_equal(u[:2], dtype(1e-3))
    np.testing.assert_array_equal(p[:2], 1.0)
    rest = np.arange(2, 41) != 7
    np.testing.assert_array_equal(u[2:][rest], np.abs(g[2:][rest]) + dtype(1e-3))
    expect = 1 - 0.5 * g[2:][rest] / (np.abs(g[2:][rest]) + 1e-3)
    np.testing.assert_allclose(p[2:][rest], expect, rtol=4 * np.finfo(dtype).eps)


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


def test_nadam_refuses_bad_hyperparameters_before_touching_buffers():
    p = np.ones(10, np.float32)
    g = np.ones(10, np.float32)
    m, v = np.zeros(10, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="momentum_decay"):
        kernels.nadam_step(p, g, m, v, step=1, lr=0.1, momentum_decay=-1.0)
    with pytest.raises(ValueError, match="momentum_decay"):
        fastopt.NAdam([p], momentum_decay=-1.0)
    assert (p == 1).all() and (m == 0).all() and (v == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_amsgrad_max_propagates_nan(dtype):
    p = np.zeros(4, dtype)
    g = np.array([1.0, np.nan, 1.0, 1.0], dtype)
    s = [np.zeros(4, dtype) for _ in range(3)]
    for _ in range(2):
        kernels.amsgrad_step(p, g, *s, step=1, lr=0.1)
    assert np.isnan(s[2][1]) and np.isnan(p[1]) and not np.isnan(s[2][[0, 2, 3]]).any()


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
