"""Optimizers with low-precision state: ``state_dtype="bfloat16" | "int8" | "float8"``.

The classes run the kernels of :mod:`fastopt.kernels.lowbit` on the large float32 arrays and
the float32 kernels on the small ones; ``impl="reference"`` runs the NumPy twins.  Checked
here: fused against reference bit for bit (lists, dicts, FlatParams, groups, clipping),
against the kernel functions themselves, thread-count determinism, state objects and their
memory, state dicts and checkpoints (format, block and map recorded; bit-identical resume),
the guard's "nothing changed", and the rejections.
"""

import copy
import pickle

import numpy as np
import pytest

import fastopt
from fastopt.kernels import lowbit as L
from fastopt.optim import SPECS
from fastopt.optim.lowstate import BFloat16State, Float8State, Int8State

# one optimizer per kernel of the table with low-precision state (the first registered)
PER_KERNEL = list({s.row.name: s.name for s in reversed(SPECS.values()) if s.row.lowbit}.values())

LOW = ("bfloat16", "int8", "float8")
STATE_CLASS = {"bfloat16": BFloat16State, "int8": Int8State, "float8": Float8State}
SHAPES = [(70, 80), (10,), (3000, 2), (5,)]          # 5600 and 6000 elements: low-bit state


def _make(name, params, sd, **kw):
    spec = SPECS[name]
    return spec.make(params, 1e-2, state_dtype=sd, **kw)


def _model(rng, shapes=SHAPES):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _grads(rng, params, scale=1.0):
    return [(rng.standard_normal(p.shape) * scale).astype(np.float32) for p in params]


def _state_bits(opt):
    """Every state array (copies), in order."""
    out = []
    for bufs in opt._states.values():
        for e in bufs:
            out += [b.copy() for b in (e.buffers() if hasattr(e, "buffers") else [e])]
    return out


def _bits(params, opt):
    """Copies of the parameters, then of every state array."""
    return [p.copy() for p in params] + _state_bits(opt)


def _assert_same_bits(xs, ys):
    """As many arrays on each side, each pair equal."""
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("sd", LOW)
@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.row.lowbit))
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_fused_equals_reference(rng, name, sd, kind):
    P = _model(rng)
    Q = [p.copy() for p in P]
    wrap = (lambda xs: dict(zip("abcd", xs))) if kind == "dict" else list
    a = _make(name, wrap(P), sd)
    b = _make(name, wrap(Q), sd, impl="reference")
    for _ in range(6):
        G = _grads(rng, P)
        a.step(wrap(G))
        b.step(wrap(G))
    _assert_same_bits(_bits(P, a), _bits(Q, b))


@pytest.mark.parametrize("sd", LOW)
def test_large_arrays_get_low_bit_state_and_small_ones_float32(rng, sd):
    P = _model(rng)
    opt = fastopt.Adam(P, state_dtype=sd)
    kinds = [type(e) for e in opt.state["exp_avg"]]
    low = STATE_CLASS[sd]
    assert kinds == [low, np.ndarray, low, np.ndarray]
    opt2 = fastopt.Adam(_model(rng), state_dtype=sd, min_lowbit_size=0)
    assert all(isinstance(e, low) for e in opt2.state["exp_avg_sq"])
    opt3 = fastopt.Adam(_model(rng), state_dtype=sd, min_lowbit_size=10**6)
    assert all(isinstance(e, np.ndarray) for e in opt3.state["exp_avg_sq"])
    # the int8 maps: signed for the first moment, unsigned for the second
    if sd == "int8":
        assert opt.state["exp_avg"][0].map_name == "signed"
        assert opt.state["exp_avg_sq"][0].map_name == "unsigned"
    if sd == "float8":   # the float8 codes: e3m4 for the first moment, e4m4 for the second
        assert opt.state["exp_avg"][0].code == "e3m4"
        assert opt.state["exp_avg_sq"][0].code == "e4m4"


@pytest.mark.parametrize("sd", LOW)
def test_the_class_runs_the_kernel_functions(rng, sd):
    """One large array: the optimizer's bits are those of fastopt.kernels.lowbit's calls."""
    p = rng.standard_normal(5000).astype(np.float32)
    q = p.copy()
    opt = fastopt.AdamW([p], lr=1e-2, weight_decay=0.1, state_dtype=sd, seed=7)
    if sd == "bfloat16":
        m, v = L.zeros_bf16(q.shape), L.zeros_bf16(q.shape)
    elif sd == "float8":
        (mc, ma), (vc, va) = L.zeros_float8(q.shape), L.zeros_float8(q.shape)
    else:
        (mc, ma), (vc, va) = L.zeros_int8(q.shape, L.signed_map()), \
            L.zeros_int8(q.shape, L.unsigned_map())
    for t in range(1, 6):
        g = rng.standard_normal(5000).astype(np.float32)
        opt.step([g])
        kw = dict(step=t, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
        if sd == "bfloat16":
            L.adam_step_bf16(q, g, m, v, seed=7, **kw)
        elif sd == "float8":
            L.adam_step_f8(q, g, mc, ma, vc, va, **kw)
        else:
            L.adam_step_int8(q, g, mc, ma, vc, va, **kw)
    np.testing.assert_array_equal(p, q)
    if sd == "bfloat16":
        np.testing.assert_array_equal(opt.state["exp_avg_sq"][0].bits, v)
    else:
        np.testing.assert_array_equal(opt.state["exp_avg_sq"][0].codes, vc)
        np.testing.assert_array_equal(opt.state["exp_avg_sq"][0].absmax, va)


def test_index_offsets_make_arrays_round_independently(rng):
    """bfloat16: two equal arrays with equal gradients round with different bits (their
    global indices differ), and the seed changes the bits."""
    sd = "bfloat16"
    p = rng.standard_normal(8192).astype(np.float32)
    P = [p.copy(), p.copy()]
    opt = fastopt.Adam(P, state_dtype=sd)
    g = rng.standard_normal(8192).astype(np.float32)
    for _ in range(3):
        opt.step([g, g.copy()])
    m0, m1 = (e.bits for e in opt.state["exp_avg"])
    assert not np.array_equal(m0, m1)
    other = [p.copy(), p.copy()]
    opt2 = fastopt.Adam(other, state_dtype=sd, seed=1)
    for _ in range(3):
        opt2.step([g, g.copy()])
    assert not np.array_equal(opt2.state["exp_avg"][0].bits, m0)


@pytest.mark.parametrize("sd", LOW)
@pytest.mark.parametrize("name", PER_KERNEL)
def test_same_bits_for_any_thread_count(isa, rng, name, sd):
    base = _model(rng)
    grads = [_grads(rng, base) for _ in range(4)]
    out = []
    for nt in (1, 2):
        fastopt.set_num_threads(nt)
        try:
            P = [p.copy() for p in base]
            opt = _make(name, P, sd)
            for G in grads:
                opt.step(G)
            out.append((P, _state_bits(opt)))
        finally:
            fastopt.set_num_threads(None)
    _assert_same_bits(out[0][0] + out[0][1], out[1][0] + out[1][1])


@pytest.mark.parametrize("sd", LOW)
def test_flatparams_runs_by_format_and_group(rng, sd):
    shapes = {"W1": (64, 80), "b1": (80,), "W2": (80, 60), "b2": (60,), "W3": (60, 70)}
    fp = fastopt.FlatParams(shapes)
    fp.data[...] = rng.standard_normal(fp.size)
    ref = fastopt.FlatParams(shapes)
    ref.data[...] = fp.data
    groups = [{"params": ["b1", "b2"], "weight_decay": 0.0, "lr": 0.05}]
    a = fastopt.Adam(fp, lr=1e-2, weight_decay=0.1, groups=groups, state_dtype=sd)
    b = fastopt.Adam(ref, lr=1e-2, weight_decay=0.1, groups=groups, state_dtype=sd,
                     impl="reference")
    runs = a.state_runs
    assert [r.stop - r.start for r in runs] == [5120, 80, 4800, 60, 4200]
    low = STATE_CLASS[sd]
    assert [type(e) for e in a.state["exp_avg"]] == [low, np.ndarray, low, np.ndarray, low]
    for _ in range(5):
        g = rng.standard_normal(fp.size).astype(np.float32)
        fp.grad[...] = g
        ref.grad[...] = g
        a.step()
        b.step()
    np.testing.assert_array_equal(fp.data, ref.data)


@pytest.mark.parametrize("sd", LOW)
def test_state_values_and_memory(rng, sd):
    n = 1 << 16
    p = rng.standard_normal(n).astype(np.float32)
    opt = fastopt.Adam([p], state_dtype=sd)
    g = rng.standard_normal(n).astype(np.float32)
    opt.step([g])
    # after one step m = (1 - beta1) g, stored narrowed: its float32 values are close
    m = np.asarray(opt.state["exp_avg"][0])
    assert m.dtype == np.float32 and m.shape == (n,)
    np.testing.assert_allclose(m, 0.1 * g, rtol=0.02 if sd == "bfloat16" else 0.1,
                               atol=0 if sd == "bfloat16" else 0.1 * 0.02 * np.abs(g).max())
    per = opt.state_nbytes / n
    assert per == (4.0 if sd == "bfloat16" else 2 + 8 / 256)
    assert per <= (4 if sd == "bfloat16" else 2.1)
    assert fastopt.Adam([p.copy()]).state_nbytes / n == 8


@pytest.mark.parametrize("sd", LOW)
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_state_dict_resume_is_bit_identical(rng, name, sd):
    base = _model(rng)
    grads = [_grads(rng, base) for _ in range(8)]
    P = [p.copy() for p in base]
    full = _make(name, P, sd, seed=3)
    for G in grads:
        full.step(G)

    Q = [p.copy() for p in base]
    first = _make(name, Q, sd, seed=3)
    for G in grads[:4]:
        first.step(G)
    snap = first.state_dict()
    assert snap["state_dtype"] == sd and snap["seed"] == 3
    entry = next(iter(snap["state"].values()))[0]
    assert entry["format"] == sd
    if sd == "int8":
        assert entry["block"] == 256 and entry["map"] == "signed"
    if sd == "float8":
        assert entry["block"] == 256 and entry["code"] == "e3m4"
    R = [q.copy() for q in Q]
    second = _make(name, R, sd)                   # another seed: the state dict sets it
    second.load_state_dict(snap)
    assert second.seed == 3
    for G in grads[4:]:
        second.step(G)
    _assert_same_bits(_bits(P, full), _bits(R, second))


@pytest.mark.parametrize("sd", LOW)
def test_pickle_and_deepcopy_continue_with_the_same_bits(rng, sd):
    P = _model(rng)
    opt = fastopt.Adam(P, state_dtype=sd)
    opt.step(_grads(rng, P))
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        G = _grads(rng, P)
        Pc = clone._params
        before = [p.copy() for p in P]
        clone.step(G)
        ref_P = [p.copy() for p in before]
        ref = fastopt.Adam(ref_P, state_dtype=sd)
        ref.load_state_dict(opt.state_dict())
        ref.step(G)
        _assert_same_bits(Pc, ref_P)


@pytest.mark.parametrize("sd", LOW)
def test_checkpoint_round_trip(rng, tmp_path, sd):
    shapes = {"W": (100, 60), "b": (60,)}
    fp = fastopt.FlatParams(shapes)
    fp.data[...] = rng.standard_normal(fp.size)
    start = fp.data.copy()
    grads = [rng.standard_normal(fp.size).astype(np.float32) for _ in range(6)]
    opt = fastopt.Adam(fp, state_dtype=sd, seed=5)
    for g in grads[:3]:
        fp.grad[...] = g
        opt.step()
    fastopt.save_checkpoint(tmp_path / "c.npz", fp, opt, epoch=2)
    for g in grads[3:]:
        fp.grad[...] = g
        opt.step()

    fp2 = fastopt.FlatParams(shapes)
    opt2 = fastopt.Adam(fp2, state_dtype=sd)
    extras = fastopt.load_checkpoint(tmp_path / "c.npz", fp2, opt2)
    assert extras["epoch"] == 2 and opt2.step_count == 3 and opt2.seed == 5
    for g in grads[3:]:
        fp2.grad[...] = g
        opt2.step()
    np.testing.assert_array_equal(fp.data, fp2.data)
    assert not np.array_equal(fp.data, start)
    _assert_same_bits(_state_bits(opt), _state_bits(opt2))

    # a float32-state optimizer refuses it, changing nothing
    fp3 = fastopt.FlatParams(shapes)
    opt3 = fastopt.Adam(fp3)
    with pytest.raises(fastopt.train.CheckpointError, match="state_dtype"):
        fastopt.load_checkpoint(tmp_path / "c.npz", fp3, opt3)
    assert opt3.step_count == 0 and not fp3.data.any()


@pytest.mark.parametrize("sd", LOW)
def test_guard_and_clipping(rng, sd):
    P = _model(rng)
    Q = [p.copy() for p in P]
    a = fastopt.Adam(P, state_dtype=sd, max_grad_norm=1.0, skip_nonfinite=True)
    b = fastopt.Adam(Q, state_dtype=sd, max_grad_norm=1.0, skip_nonfinite=True,
                     impl="reference")
    for _ in range(3):
        G = _grads(rng, P, scale=10.0)
        a.step(G)
        b.step(G)
    assert a.grad_norm > 1.0
    _assert_same_bits(P, Q)
    before = _bits(P, a)
    G = _grads(rng, P)
    G[2][5, 1] = np.nan
    a.step(G)
    assert a.skipped_steps == 1 and a.step_count == 3
    _assert_same_bits(before, _bits(P, a))


@pytest.mark.parametrize("name", PER_KERNEL)
def test_float8_with_and_without_clipping(isa, rng, name):
    """float8 compiles each mode twice, with the gradient's multiply by gscale and without it
    (when gscale is 1): clipped steps, unclipped steps and a signaling-NaN gradient give the
    twin's bits (the NaN's payload included)."""
    P = _model(rng)
    Q = [p.copy() for p in P]
    a = _make(name, P, "float8", max_grad_norm=1.0)
    b = _make(name, Q, "float8", max_grad_norm=1.0, impl="reference")
    for scale in (10.0, 10.0, 1e-3):
        G = _grads(rng, P, scale=scale)
        a.step(G)
        b.step(G)
        for x, y in zip(P + _state_bits(a), Q + _state_bits(b)):
            np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))
    assert a.grad_norm < 1.0
    a = _make(name, P, "float8")
    b = _make(name, Q, "float8", impl="reference")
    G = _grads(rng, P)
    G[0][3, 4] = np.uint32(0x7fa00005).view(np.float32)     # a signaling NaN
    with np.errstate(invalid="ignore"):
        a.step(G)
        b.step(G)
    assert np.isnan(P[0][3, 4])
    for x, y in zip(P + _state_bits(a), Q + _state_bits(b)):
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


@pytest.mark.parametrize("sd", LOW)
def test_rejected_calls_change_nothing(rng, sd):
    P = _model(rng)
    opt = fastopt.RMSprop(P, lr=1e-2, state_dtype=sd)
    opt.step(_grads(rng, P))
    before = _bits(P, opt)
    G = _grads(rng, P)
    G[0] = G[0].astype(np.float64)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step(G)
    G = _grads(rng, P)
    G[2] = opt.state["square_avg"][2].to_float32()[:, :1].copy()   # wrong shape
    with pytest.raises(ValueError, match=r"grads\[2\]"):
        opt.step(G)
    other = fastopt.RMSprop(_model(rng), lr=1e-2,
                            state_dtype="int8" if sd == "bfloat16" else "bfloat16")
    with pytest.raises(ValueError, match="state_dtype"):
        opt.load_state_dict(other.state_dict())
    snap = opt.state_dict()
    bad = copy.deepcopy(snap)
    if sd == "int8":
        bad["state"]["square_avg"][0]["map"] = "signed"
        match = "quantization map"
    elif sd == "float8":
        bad["state"]["square_avg"][0]["code"] = "e3m4"
        match = "float8 code"
    else:
        bad["state"]["square_avg"][0]["bits"] = bad["state"]["square_avg"][0]["bits"][:10]
        match = "shape"
    bad["step"] = 99
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(bad)
    assert opt.step_count == 1
    _assert_same_bits(before, _bits(P, opt))


def test_bad_settings_are_refused(rng):
    P = _model(rng)
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        fastopt.Adam(P, state_dtype="float16")
    with pytest.raises(ValueError, match="min_lowbit_size"):
        fastopt.Adam(P, state_dtype="int8", min_lowbit_size=-1)
    with pytest.raises(ValueError, match="seed"):
        fastopt.Adam(P, state_dtype="bfloat16", seed=-1)
    wide = [p.astype(np.float64) for p in P]
    with pytest.raises(ValueError, match=r"params\[0\] is float64"):
        fastopt.Adam(wide, state_dtype="int8")
    assert fastopt.Adam(P, state_dtype=np.float32).state_dtype == "float32"
    # SGD without momentum has no state: state_dtype has nothing to store
    opt = fastopt.SGD(P, lr=0.1, state_dtype="int8")
    assert opt.state == {} and opt.state_nbytes == 0
    opt.step(_grads(rng, P))
    # with low-bit momentum buffers, momentum cannot become 0
    opt = fastopt.SGD(P, lr=0.1, momentum=0.9, state_dtype="int8")
    with pytest.raises(ValueError, match="momentum must stay > 0"):
        opt.momentum = 0.0
    assert opt.momentum == 0.9
    assert "state_dtype='int8'" in repr(opt)


@pytest.mark.slow  # (seconds: out of the quick loop)
@pytest.mark.parametrize("sd", LOW)
def test_training_matches_float32_state(rng, sd):
    """A least-squares problem: low-precision state reaches float32 state's loss."""
    X = rng.standard_normal((512, 96)).astype(np.float32)
    w_true = rng.standard_normal((96, 64)).astype(np.float32)
    Y = X @ w_true
    losses = {}
    for fmt in ("float32", sd):
        W = np.zeros((96, 64), np.float32)
        opt = fastopt.Adam([W], lr=0.05, state_dtype=fmt)
        for _ in range(300):
            R = X @ W - Y
            opt.step([(X.T @ R / len(X)).astype(np.float32)])
        losses[fmt] = float(np.mean((X @ W - Y) ** 2))
    assert losses["float32"] < 1e-2 * float(np.mean(Y ** 2))
    assert losses[sd] < 2 * losses["float32"] + 1e-3 * float(np.mean(Y ** 2))


def test_ml_dtypes_bfloat16_names_the_format(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    opt = fastopt.Adam(_model(rng), state_dtype=ml_dtypes.bfloat16)
    assert opt.state_dtype == "bfloat16"
    assert isinstance(opt.state["exp_avg"][0], BFloat16State)
    # the bits viewed as ml_dtypes' bfloat16 are the values np.asarray gives
    e = opt.state["exp_avg"][0]
    e.bits[...] = L.float32_to_bf16(rng.standard_normal(e.shape).astype(np.float32))
    np.testing.assert_array_equal(e.bits.view(ml_dtypes.bfloat16).astype(np.float32),
                                  np.asarray(e))


@pytest.mark.parametrize("sd", LOW)
@pytest.mark.parametrize("name", ["adamw", "rmsprop", "momentum"])
def test_many_arrays_one_call_same_bits(isa, rng, name, sd):
    """Many arrays of all sizes with low-precision state (min_lowbit_size=0): the one
    multi-tensor call gives the reference's bits, and the same bits on 1 and 2 threads, at
    every ISA level."""
    shapes = [(int(n),) for n in rng.integers(1, 20000, size=40)] + [(257,), (256,), (16385,)]
    base = _model(rng, shapes)
    grads = [_grads(rng, base) for _ in range(3)]
    runs = []
    for nt, impl in ((1, "fused"), (2, "fused"), (1, "reference")):
        fastopt.set_num_threads(nt)
        try:
            P = [p.copy() for p in base]
            opt = _make(name, P, sd, min_lowbit_size=0, impl=impl, seed=11)
            for G in grads:
                opt.step(G)
            runs.append(_bits(P, opt))
        finally:
            fastopt.set_num_threads(None)
    for other in runs[1:]:
        _assert_same_bits(runs[0], other)
