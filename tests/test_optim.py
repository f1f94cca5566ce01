"""FlatParams and the optimizer classes."""

import pickle
import re
import tracemalloc

import numpy as np
import pytest

import fastopt
from fastopt import FlatParams

SHAPES = {"W1": (64, 32), "b1": (32,), "W2": (32, 10), "b2": (10,), "scalar": ()}
SUM = sum(int(np.prod(s)) for s in SHAPES.values())


# ------------------------------------------------------------------ FlatParams

def test_flatparams_views_share_one_buffer():
    fp = FlatParams(SHAPES)
    total = sum(int(np.prod(s)) for s in SHAPES.values())
    assert fp.data.shape == (total,) and fp.grad.shape == (total,)
    assert fp.data.dtype == np.float32 and fp.data.flags.c_contiguous
    assert len(fp) == 5 and list(fp) == list(SHAPES)
    for name, shape in SHAPES.items():
        assert fp.params[name].shape == shape
        assert fp.grads[name].shape == shape
        assert np.shares_memory(fp.params[name], fp.data)
        assert np.shares_memory(fp.grads[name], fp.grad)
    fp.params["b1"][...] = 3.0
    np.testing.assert_array_equal(fp.data[fp.slice("b1")], 3.0)
    assert fp.data.sum() == 3.0 * 32
    fp.grads["W2"][...] = 1.0
    fp.zero_grad()
    assert not fp.grad.any()


def test_flatparams_from_arrays_copies(rng):
    arrays = {"W": rng.standard_normal((3, 4)), "b": np.arange(4)}
    fp = FlatParams.from_arrays(arrays)
    np.testing.assert_allclose(fp.params["W"], arrays["W"].astype(np.float32))
    np.testing.assert_array_equal(fp.params["b"], [0, 1, 2, 3])
    assert not np.shares_memory(fp.params["W"], arrays["W"])
    fp.params["b"][...] = 9
    assert arrays["b"][0] == 0


@pytest.mark.parametrize("shapes,exc,msg", [
    ({"W": [3, 4]}, TypeError, "tuple of non-negative ints"),
    ({"W": 3}, TypeError, "tuple of non-negative ints"),
    ({"W": (3, -1)}, ValueError, "non-negative"),
    ({"W": (3.0, 2)}, TypeError, "tuple of non-negative ints"),
    ({"W": (True, 2)}, TypeError, "tuple of non-negative ints"),
    ({"W": ("3",)}, TypeError, "tuple of non-negative ints"),
    ({1: (3,)}, TypeError, "names must be str"),
    ([("W", (3,))], TypeError, "dict"),
])
def test_flatparams_bad_shapes(shapes, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(")):
        FlatParams(shapes)


def test_flatparams_zero_size_entries():
    fp = FlatParams({"empty": (0, 5), "x": (2,)})
    assert fp.size == 2 and fp.params["empty"].shape == (0, 5)


# ------------------------------------------------------------------ optimizers

OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("Momentum", dict(lr=0.1, beta=0.9)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.99, eps_inside_sqrt=False, weight_decay=1e-2)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=1e-2)),
    ("AdamW", dict(lr=0.01)),
]
OPTIMIZERS += [(s.optimizer, dict(lr=0.01)) for s in fastopt.optim.SPECS.values()   # any other
               if s.optimizer not in {n for n, _ in OPTIMIZERS}]
OPT_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in OPTIMIZERS]


def _model(seed=0):
    fp = FlatParams(SHAPES)
    fp.data[...] = np.random.default_rng(seed).standard_normal(fp.size).astype(np.float32)
    return fp


def _grads(fp, t):
    g = np.random.default_rng(1000 + t).standard_normal(fp.size).astype(np.float32)
    # a loss gradient that depends on the parameters, like a real one
    return g + 0.1 * fp.data


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=OPT_IDS)
def test_fused_and_reference_follow_the_same_trajectory(isa, name, kw):
    runs = {}
    for impl in ("fused", "reference"):
        fp = _model()
        opt = getattr(fastopt, name)(fp, impl=impl, **kw)
        for t in range(12):
            fp.grad[...] = _grads(fp, t)
            opt.step()
            if impl == "reference":
                np.testing.assert_allclose(fp.data, runs["fused"][t], rtol=1e-5, atol=1e-6,
                                           err_msg=f"step {t + 1}")
            else:
                runs.setdefault("fused", []).append(fp.data.copy())
        assert opt.step_count == 12


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=OPT_IDS)
def test_flat_and_list_modes_agree(name, kw):
    fp = _model()
    opt_flat = getattr(fastopt, name)(fp, **kw)
    arrays = [fp.params[k].copy() for k in fp]
    opt_list = getattr(fastopt, name)(arrays, **kw)
    for t in range(5):
        fp.grad[...] = _grads(fp, t)
        grads = [fp.grads[k].copy() for k in fp]
        opt_flat.step()
        opt_list.step(grads)
        for k, a in zip(fp, arrays):
            np.testing.assert_allclose(fp.params[k], a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=OPT_IDS)
def test_state_dict_resume_gives_the_same_bits(name, kw):
    cls = getattr(fastopt, name)
    fp = _model()
    opt = cls(fp, **kw)
    for t in range(10):
        fp.grad[...] = _grads(fp, t)
        opt.step()
    straight = fp.data.copy()

    fp = _model()
    opt = cls(fp, **kw)
    for t in range(4):
        fp.grad[...] = _grads(fp, t)
        opt.step()
    saved_params = fp.data.copy()
    saved = pickle.loads(pickle.dumps(opt.state_dict()))

    fp2 = FlatParams(SHAPES)
    fp2.data[...] = saved_params
    opt2 = cls(fp2, **kw)
    opt2.load_state_dict(saved)
    assert opt2.step_count == 4
    for t in range(4, 10):
        fp2.grad[...] = _grads(fp2, t)
        opt2.step()
    np.testing.assert_array_equal(fp2.data, straight)


def test_state_dict_is_a_copy_and_restores_hyperparameters():
    fp = _model()
    opt = fastopt.Adam(fp, lr=0.01, betas=(0.8, 0.95))
    fp.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    assert sd["type"] == "Adam" and sd["step"] == 1
    assert sd["hyper"] == {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-8, "weight_decay": 0.0}
    sd["state"]["exp_avg"][0][...] = 123.0
    assert not (opt.state["exp_avg"][0] == 123.0).any()
    other = fastopt.Adam(_model(), lr=0.5)
    other.load_state_dict(opt.state_dict())
    assert other.lr == 0.01 and other.betas == (0.8, 0.95)
    np.testing.assert_array_equal(other.state["exp_avg_sq"][0], opt.state["exp_avg_sq"][0])


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    fp = _model()
    opt = fastopt.Adam(fp, lr=0.01)
    fp.grad[...] = 1.0
    opt.step()
    snapshot = opt.state_dict()
    with pytest.raises(ValueError, match="is for SGD"):
        opt.load_state_dict(fastopt.SGD(_model(), lr=0.1).state_dict())
    small = fastopt.Adam([np.zeros(3, np.float32)]).state_dict()
    with pytest.raises(ValueError, match="buffers|shape"):
        opt.load_state_dict(small)
    bad = opt.state_dict()
    bad["hyper"]["betas"] = (1.5, 0.9)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["hyper"] == snapshot["hyper"] and after["step"] == snapshot["step"]
    for n in snapshot["state"]:
        np.testing.assert_array_equal(after["state"][n][0], snapshot["state"][n][0])


def test_lr_is_settable_and_checked():
    fp = _model()
    opt = fastopt.SGD(fp, lr=0.1)
    opt.lr = 0.5
    fp.grad[...] = 1.0
    before = fp.data.copy()
    opt.step()
    np.testing.assert_allclose(fp.data, before - 0.5, rtol=1e-6)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -1
    assert opt.lr == 0.5


def test_zero_grad():
    fp = _model()
    opt = fastopt.Adam(fp)
    fp.grad[...] = 1.0
    opt.zero_grad()
    assert not fp.grad.any()
    with pytest.raises(TypeError, match="no argument"):
        opt.zero_grad([fp.grad])


def test_zero_grad_list_zeroes_the_last_steps_gradients():
    # As torch's opt.zero_grad(): the gradient arrays the last step read, in place.
    params = [np.ones(3, np.float32), np.ones((2, 2))]
    grads = [np.full(3, 0.5, np.float32), np.full((2, 2), -1.0)]
    opt = fastopt.Adam(params, lr=0.1)
    opt.zero_grad()                       # before any step: nothing to zero
    assert grads[0].all() and grads[1].all()
    opt.step(grads)
    kept = [g for g in grads]
    opt.zero_grad()
    assert all(g is k for g, k in zip(grads, kept))
    assert not grads[0].any() and not grads[1].any()
    assert grads[0].dtype == np.float32 and grads[1].dtype == np.float64


def test_zero_grad_dict_and_explicit_gradients():
    params = {"W": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    opt = fastopt.SGD(params, lr=0.1)
    grads = {"W": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    opt.zero_grad(grads)                  # the given ones, before any step
    assert not grads["W"].any() and not grads["b"].any()
    # reading the gradients of a later step: the last step's are those it read
    g2 = {"W": np.full((2, 3), 2.0, np.float32), "b": np.full(3, 2.0, np.float32)}
    opt.step(grads)
    opt.step(g2)
    grads["W"][...] = 7.0
    opt.zero_grad()
    assert not g2["W"].any() and not g2["b"].any() and (grads["W"] == 7.0).all()


def test_zero_grad_refuses_bad_gradients_and_changes_nothing():
    params = [np.ones(3, np.float32), np.ones(2, np.float32)]
    opt = fastopt.Adam(params)
    g = [np.ones(3, np.float32), np.ones(2, np.float32)]
    with pytest.raises(ValueError, match="2 arrays|length|expected"):
        opt.zero_grad(g[:1])
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(3,\)"):
        opt.zero_grad([g[0], np.ones(3, np.float32)])
    assert g[0].all()
    ro = np.ones(2, np.float32)
    ro.flags.writeable = False
    opt.step([g[0], ro])                  # a read-only gradient is fine for a step...
    with pytest.raises(ValueError, match=r"grads\[1\] is read-only"):
        opt.zero_grad()                   # ...not for zeroing: refused before any write
    assert g[0].all() and ro.all()
    with pytest.raises(TypeError, match="list or tuple|grads"):
        opt.zero_grad(np.ones(3, np.float32))


def test_optimizer_params_is_the_public_accessor():
    params = {"W": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    opt = fastopt.Adam(params)
    assert len(opt.params) == 2
    assert all(a is b for a, b in zip(opt.params, params.values()))
    assert opt.params.keys == ["W", "b"] and opt.params.kind == "dict"
    with pytest.raises(AttributeError):
        opt.params = [np.ones(3, np.float32)]


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=OPT_IDS)
def test_step_allocates_no_arrays(name, kw):
    n = 1_000_000  # 4 MB per buffer: any temporary array would show
    fp = FlatParams({"w": (n,)})
    fp.grad[...] = 0.5
    opt = getattr(fastopt, name)(fp, **kw)
    opt.step()  # warm up (first-call caches)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(3):
            opt.step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 16_384, f"{name}.step() allocated {peak} bytes"


def test_reference_impl_allocates_temporaries():
    # The contrast that makes the previous test meaningful: tracemalloc does see NumPy temporaries.
    n = 1_000_000
    fp = FlatParams({"w": (n,)})
    opt = fastopt.Adam(fp, impl="reference")
    opt.step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        opt.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak > 4 * n


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(lr=-1.0), ValueError, "lr must be >= 0"),
    (dict(lr=0.1, betas=(0.9,)), TypeError, "betas must be a pair"),
    (dict(lr=0.1, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0, 1\)"),
    (dict(lr=0.1, eps=0), ValueError, "eps must be > 0"),
    (dict(lr=0.1, weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    (dict(lr=0.1, impl="cuda"), ValueError, "impl must be one of"),
])
def test_optimizer_constructor_checks(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        fastopt.Adam(_model(), **kw)


def test_constructor_checks_other_optimizers():
    with pytest.raises(ValueError, match="nesterov"):
        fastopt.SGD(_model(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum must be in"):
        fastopt.SGD(_model(), lr=0.1, momentum=1.2)
    with pytest.raises(ValueError, match="beta must be in"):
        fastopt.Momentum(_model(), lr=0.1, beta=1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        fastopt.RMSprop(_model(), lr=0.1, alpha=1.0)
    with pytest.raises(TypeError, match="FlatParams, or a list, tuple or dict"):
        fastopt.Adam(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match=r"params\[1\] has dtype int32; supported dtypes are "
                                        "float32 and float64"):
        fastopt.Adam([np.zeros(3, np.float32), np.zeros(3, np.int32)])
    shared = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        fastopt.Adam([shared[:3], shared[1:]])


def test_list_step_checks_every_grad_before_updating_any():
    params = [np.ones(3, np.float32), np.ones(4, np.float32)]
    opt = fastopt.Adam(params, lr=0.1)
    good, bad = np.ones(3, np.float32), np.ones(5, np.float32)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(5,\), expected \(4,\) like params\[1\]"):
        opt.step([good, bad])
    np.testing.assert_array_equal(params[0], 1.0)
    assert not opt.state["exp_avg"][0].any()
    assert opt.step_count == 0
    with pytest.raises(ValueError, match="grads has 1 arrays, expected 2"):
        opt.step([good])
    with pytest.raises(TypeError, match="needs the gradients"):
        opt.step()
    with pytest.raises(ValueError, match="share memory"):
        opt.step([good, params[1]])
    np.testing.assert_array_equal(params[1], 1.0)


def test_flat_step_takes_no_argument():
    fp = _model()
    with pytest.raises(TypeError, match="no argument"):
        fastopt.SGD(fp, lr=0.1).step([fp.grad])


def test_momentum_is_sgd_with_dampening():
    fp1, fp2 = _model(), _model()
    a = fastopt.Momentum(fp1, lr=0.1, beta=0.8)
    b = fastopt.SGD(fp2, lr=0.1, momentum=0.8, dampening=0.8)
    for t in range(5):
        fp1.grad[...] = _grads(fp1, t)
        fp2.grad[...] = _grads(fp2, t)
        a.step()
        b.step()
    np.testing.assert_array_equal(fp1.data, fp2.data)


def test_adamw_decays_weights_without_gradient():
    fp = FlatParams({"w": (4,)})
    fp.data[...] = 2.0
    opt = fastopt.AdamW(fp, lr=0.1, weight_decay=0.5)
    opt.step()  # zero gradient: only the decoupled decay acts
    np.testing.assert_allclose(fp.data, 2.0 * (1 - 0.1 * 0.5), rtol=1e-6)


# ------------------------------------------------------------------ against PyTorch (optional)

@pytest.mark.parametrize("name,kw,torch_name,torch_kw", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3), "SGD",
     dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), "SGD",
     dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("RMSprop", dict(lr=0.01, alpha=0.99, eps_inside_sqrt=False), "RMSprop",
     dict(lr=0.01, alpha=0.99, eps=1e-8)),
    ("Adam", dict(lr=0.01, weight_decay=1e-2), "Adam", dict(lr=0.01, weight_decay=1e-2)),
    ("AdamW", dict(lr=0.01), "AdamW", dict(lr=0.01)),
])
def test_matches_pytorch(name, kw, torch_name, torch_kw):
    torch = pytest.importorskip("torch")
    fp = _model()
    tp = torch.nn.Parameter(torch.from_numpy(fp.data.copy()))
    opt = getattr(fastopt, name)(fp, **kw)
    topt = getattr(torch.optim, torch_name)([tp], **torch_kw)
    for t in range(10):
        g = _grads(fp, t)
        fp.grad[...] = g
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        np.testing.assert_allclose(fp.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ all or nothing

def _matrix(a):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(a)


def _list_opt():
    params = [np.ones(3, np.float32), np.ones((1, 4), np.float32)]
    return params, fastopt.Adam(params, lr=0.1)


@pytest.mark.parametrize("case", ["matrix grad", "grad aliases another param",
                                  "grad aliases another param's state", "param made read-only"])
def test_list_step_checks_every_param_and_grad_before_updating_any(case):
    params, opt = _list_opt()
    grads = [np.ones(3, np.float32), np.ones((1, 4), np.float32)]
    if case == "matrix grad":
        grads[1] = _matrix(grads[1])
        exc, msg = TypeError, r"grads\[1\] is a numpy.matrix"
    elif case == "grad aliases another param":
        grads = [params[1].reshape(-1)[:3], grads[1]]
        exc, msg = ValueError, r"grads\[0\] and params\[1\] share memory"
    elif case == "grad aliases another param's state":
        grads[0] = opt.state["exp_avg_sq"][1].reshape(-1)[1:]
        exc, msg = ValueError, r"grads\[0\] and exp_avg_sq\[1\] share memory"
    else:
        params[1].flags.writeable = False
        exc, msg = ValueError, r"params\[1\] is read-only"
    before = [p.copy() for p in params]
    with pytest.raises(exc, match=msg):
        opt.step(grads)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert opt.step_count == 0
    assert not any(s.any() for bufs in opt.state.values() for s in bufs)


def test_list_mode_refuses_a_matrix_parameter():
    with pytest.raises(TypeError, match=r"params\[1\] is a numpy.matrix"):
        fastopt.SGD([np.ones(3, np.float32), _matrix(np.ones((2, 2), np.float32))], lr=0.1)


@pytest.mark.parametrize("kw,msg", [
    (dict(lr=1e39), "lr = 1e+39 overflows float32"),
    (dict(eps=1e-46), "eps = 1e-46 is 0 in float32"),
    (dict(betas=(0.9, 0.99999999)), "betas[1] = 0.99999999 is 1.0 in float32"),
])
def test_constructor_refuses_what_float32_cannot_hold(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        fastopt.Adam(_model(), **{"lr": 0.1, **kw})


def _trained_adam(lr=0.01):
    fp = _model()
    opt = fastopt.Adam(fp, lr=lr)
    fp.grad[...] = 1.0
    opt.step()
    return opt


def _assert_same_state(opt, snapshot):
    after = opt.state_dict()
    assert after["hyper"] == snapshot["hyper"] and after["step"] == snapshot["step"]
    assert after["epoch"] == snapshot["epoch"] and opt.lr == snapshot["hyper"]["lr"]
    for n in snapshot["state"]:
        np.testing.assert_array_equal(after["state"][n][0], snapshot["state"][n][0])


def _failing_at_7(epoch):
    if epoch >= 7:
        raise ZeroDivisionError("no learning rate after epoch 6")
    return 0.1


@pytest.mark.parametrize("change,exc,msg", [
    # the next step (2**63) would not fit the kernel's step counter
    (dict(step=2**63 - 1), ValueError, "step must be <="),
    (dict(step=2**63), ValueError, "step must be <="),
    (dict(step=True), TypeError, "step must be an int"),
    (dict(epoch=10**30), ValueError, "epoch must be <="),
    (dict(hyper={"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-46, "weight_decay": 0.0}),
     ValueError, "eps = 1e-46 is 0 in float32"),
    (dict(hyper={"lr": 1e39}), ValueError, "lr = 1e\\+39 overflows"),
    (dict(hyper={"betas": "ab"}), TypeError, "betas must be a pair"),
    (dict(state={"exp_avg": [np.zeros(SUM, np.float32)]}), ValueError, "state_dict has state"),
    (dict(state={"exp_avg": np.zeros((1, SUM), np.float32),
                 "exp_avg_sq": np.zeros((1, SUM), np.float32)}), ValueError, "must be a list"),
])
def test_load_state_dict_is_all_or_nothing(change, exc, msg):
    opt = _trained_adam()
    snapshot = opt.state_dict()
    bad = {**opt.state_dict(), **change}
    bad["state"] = change.get("state", {n: [b + 1 for b in bufs]
                                        for n, bufs in opt.state_dict()["state"].items()})
    with pytest.raises(exc, match=msg):
        opt.load_state_dict(bad)
    _assert_same_state(opt, snapshot)


@pytest.mark.parametrize("schedule,epoch,msg", [
    (_failing_at_7, 7, "ZeroDivisionError: no learning rate after epoch 6"),
    (fastopt.schedules.exponential(0.1), 10**30, "epoch must be <="),   # was OverflowError
    (lambda e: float("nan") if e > 3 else 0.1, 5, "must be finite"),
    (lambda e: 1e39 if e > 1 else 0.1, 2, "overflows float32"),
])
def test_load_state_dict_checks_the_schedule_at_the_restored_epoch(schedule, epoch, msg):
    fp = _model()
    opt = fastopt.SGD(fp, lr=schedule, momentum=0.9)
    fp.grad[...] = 1.0
    opt.step()
    snapshot = opt.state_dict()
    bad = opt.state_dict()
    bad["epoch"] = epoch
    bad["state"]["momentum_buf"][0] += 5
    with pytest.raises(ValueError, match=msg):
        opt.load_state_dict(bad)
    _assert_same_state(opt, snapshot)
    assert opt.epoch == 1


def test_set_epoch_with_a_failing_schedule_changes_nothing():
    opt = fastopt.SGD(_model(), lr=_failing_at_7)
    opt.set_epoch(3)
    with pytest.raises(ValueError, match="failed at epoch 7: ZeroDivisionError"):
        opt.set_epoch(7)
    assert opt.epoch == 3 and opt.lr == 0.1


def test_long_exponential_decay_reaches_zero_without_error():
    # lr0 * 0.95**2000 is below float32's smallest value: the step is 0, as with lr = 0.
    fp = _model()
    opt = fastopt.SGD(fp, lr=fastopt.schedules.exponential(0.01))
    opt.set_epoch(2000)
    fp.grad[...] = 1.0
    before = fp.data.copy()
    opt.step()
    np.testing.assert_array_equal(fp.data, before)
