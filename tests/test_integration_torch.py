"""fastopt.integrations.torch against torch.optim: parity, groups, schedulers, state dicts."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fot = pytest.importorskip("fastopt.integrations.torch")

from fastopt.optim import SPECS  # noqa: E402

TWINS = sorted(name for name, cls in fot.CLASSES.items() if hasattr(torch.optim, name))
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


def _params(dtype, seed=0, shapes=((7, 5), (5,), (3, 4, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def _grads(params, step, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _run(opt, params, steps, start=0, sched=None, skip=()):
    for t in range(start, start + steps):
        for i, (p, g) in enumerate(zip(params, _grads(params, t))):
            p.grad = None if (t, i) in skip else g.clone()
        opt.step()
        if sched is not None:
            sched.step()


def _close(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **TOL[x.dtype])


def test_classes_follow_the_registry():
    # every registry entry with a torch twin has its drop-in, under the twin's name
    for spec in SPECS.values():
        if spec.torch is not None:
            assert spec.torch[0] in fot.CLASSES
    assert {"SGD", "Adam", "AdamW", "RMSprop"} <= set(fot.CLASSES)
    for name, cls in fot.CLASSES.items():
        assert issubclass(cls, torch.optim.Optimizer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", TWINS)
def test_parity_20_steps(name, dtype):
    kw = {"SGD": dict(lr=0.05, momentum=0.9, weight_decay=1e-3),
          "RMSprop": dict(lr=1e-2, weight_decay=1e-3),
          "Adam": dict(lr=1e-2, weight_decay=1e-3),
          "AdamW": dict(lr=1e-2)}.get(name, dict(lr=1e-2))
    a, b = _params(dtype), _params(dtype)
    ours = fot.CLASSES[name](a, **kw)
    theirs = getattr(torch.optim, name)(b, **kw)
    _run(ours, a, 20)
    _run(theirs, b, 20)
    _close(a, b)
    # the state is under torch's names, with torch's values
    for pa, pb in zip(a, b):
        for k, v in theirs.state[pb].items():
            if k == "step":
                assert float(ours.state_dict()["state"][0]["step"]) == float(v)
            elif k == "mu_product":      # NAdam's: fastopt's kernel computes it from step
                continue
            else:
                torch.testing.assert_close(ours.state[pa][k], v, **TOL[dtype])


def test_sgd_nesterov_and_plain():
    for kw in (dict(lr=0.1, momentum=0.8, nesterov=True), dict(lr=0.1)):
        a, b = _params(torch.float32), _params(torch.float32)
        _run(fot.SGD(a, **kw), a, 10)
        _run(torch.optim.SGD(b, **kw), b, 10)
        _close(a, b)


def test_zero_copy_updates_the_tensors_in_place():
    p = torch.nn.Parameter(torch.ones(4))
    data = p.data_ptr()
    opt = fot.Adam([p], lr=0.1)
    p.grad = torch.ones(4)
    opt.step()
    assert p.data_ptr() == data
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.9))
    # the state tensors share fastopt's buffers: they follow the next step
    m = opt.state[p]["exp_avg"]
    before = m.clone()
    opt.step()
    assert not torch.equal(m, before)


def test_param_groups_and_schedulers():
    def build(mod, params):
        w, b, c = params
        opt = mod.Adam([{"params": [w, c]}, {"params": [b], "lr": 0.05, "weight_decay": 0.1}],
                       lr=0.01, betas=(0.8, 0.99))
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    a, b = _params(torch.float32), _params(torch.float32)
    oa, sa = build(fot, a)
    ob, sb = build(torch.optim, b)
    _run(oa, a, 10, sched=sa)
    _run(ob, b, 10, sched=sb)
    assert oa.param_groups[1]["lr"] == ob.param_groups[1]["lr"] == 0.05 * 0.5 ** 3
    _close(a, b)
    # a changed hyperparameter takes effect at the next step
    oa.param_groups[0]["betas"] = ob.param_groups[0]["betas"] = (0.5, 0.9)
    _run(oa, a, 3, start=10)
    _run(ob, b, 3, start=10)
    _close(a, b)


def test_lambda_and_onecycle_schedulers():
    for make in (lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
                 lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=12)):
        a, b = _params(torch.float32), _params(torch.float32)
        oa, ob = fot.SGD(a, lr=0.1, momentum=0.9), torch.optim.SGD(b, lr=0.1, momentum=0.9)
        _run(oa, a, 12, sched=make(oa))
        _run(ob, b, 12, sched=make(ob))
        _close(a, b)


def test_missing_grads_and_add_param_group_keep_per_param_steps():
    a, b = _params(torch.float32), _params(torch.float32)
    oa = fot.Adam(a[:2], lr=0.02)
    ob = torch.optim.Adam(b[:2], lr=0.02)
    skip = {(0, 1), (1, 1), (4, 0)}
    _run(oa, a[:2], 5, skip=skip)
    _run(ob, b[:2], 5, skip=skip)
    oa.add_param_group({"params": [a[2]], "lr": 0.03})
    ob.add_param_group({"params": [b[2]], "lr": 0.03})
    _run(oa, a, 6, start=5)
    _run(ob, b, 6, start=5)
    _close(a, b)
    steps = [float(s["step"]) for s in oa.state_dict()["state"].values()]
    assert steps == [10.0, 9.0, 6.0]


@pytest.mark.parametrize("name", TWINS)
def test_state_dict_round_trips_with_torch(name):
    kw = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    ref = _params(torch.float64)
    tref = getattr(torch.optim, name)(ref, **kw)
    _run(tref, ref, 10)
    # fastopt 5 steps -> torch 3 steps -> fastopt 2 steps: the same as torch all along
    a = _params(torch.float64)
    oa = fot.CLASSES[name](a, **kw)
    _run(oa, a, 5)
    sd = copy.deepcopy(oa.state_dict())
    ob = getattr(torch.optim, name)(a, **kw)
    ob.load_state_dict(sd)
    _run(ob, a, 3, start=5)
    oc = fot.CLASSES[name](a, **kw)
    oc.load_state_dict(ob.state_dict())
    _run(oc, a, 2, start=8)
    if name == "NAdam":
        # torch casts NAdam's float32 mu_product to the parameters' dtype when it loads a
        # state dict (then multiplies in float64): its own round trip moves these float64
        # values ~1e-10 away from the uninterrupted run
        for x, y in zip(a, ref):
            torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-9, atol=1e-11)
        return
    _close(a, ref)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8", "float8"])
def test_lowbit_state_round_trips(state_dtype):
    def make(params):
        return fot.Adam(params, lr=0.01, state_dtype=state_dtype, min_lowbit_size=16)

    a, b = _params(torch.float32), _params(torch.float32)
    oa, ob = make(a), make(b)
    _run(oa, a, 8)
    _run(ob, b, 4)
    sd = copy.deepcopy(ob.state_dict())
    assert sd["fastopt_state_dtype"] == state_dtype
    b2 = [torch.nn.Parameter(p.detach().clone()) for p in b]
    oc = make(b2)
    oc.load_state_dict(sd)
    _run(oc, b2, 4, start=4)
    for x, y in zip(a, b2):            # continuing gives the same bits as never stopping
        assert torch.equal(x, y)
    # and the low-precision trajectory stays near the float32 one
    f = _params(torch.float32)
    _run(fot.Adam(f, lr=0.01), f, 8)
    for x, y in zip(a, f):
        torch.testing.assert_close(x, y, rtol=0, atol=0.02)
    with pytest.raises(ValueError, match="state_dtype"):
        fot.Adam(_params(torch.float32), lr=0.01).load_state_dict(sd)


def test_closure_and_zero_grad():
    p = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = fot.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss) == 13.0
    torch.testing.assert_close(p.detach(), torch.tensor([1.5, -1.0]))
    opt.zero_grad(set_to_none=True)
    assert p.grad is None
    opt.step()                                  # no gradient: nothing moves
    torch.testing.assert_close(p.detach(), torch.tensor([1.5, -1.0]))
    p.grad = torch.ones(2)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(2))


def test_refusals_change_nothing():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="maximize"):
        fot.Adam([p], maximize=True)
    with pytest.raises(ValueError, match="bfloat16"):      # AMSGrad's state is float32/64
        fot.Adam([p], amsgrad=True, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="centered"):
        fot.RMSprop([p], centered=True)
    with pytest.raises(ValueError, match="maximize"):
        fot.SGD([p], lr=0.1, maximize=True)
    with pytest.raises(TypeError, match="did you mean 'weight_decay'"):
        fot.Adam([p], weight_decy=0.1)
    with pytest.raises(ValueError, match="bfloat16"):
        fot.Adam([torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))])
    with pytest.raises(ValueError):
        fot.Adam([p], lr=-1.0)
    with pytest.raises(ValueError):
        fot.Adam([p], state_dtype="float16")
    fot.Adam([p], fused=True, foreach=False)       # accepted: fastopt is always fused
    opt = fot.Adam([p], lr=0.1)
    with pytest.raises(ValueError, match="capturable"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "capturable": True})
    assert len(opt.param_groups) == 1
    # a bad value written into a group is refused at the step, before anything moves
    p.grad = torch.ones(3)
    opt.step()
    before = p.detach().clone()
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_named_parameters():
    model = torch.nn.Linear(3, 2)
    opt = fot.AdamW(model.named_parameters(), lr=0.01)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    model(torch.ones(4, 3)).sum().backward()
    opt.step()


@pytest.mark.slow
def test_trains_a_module_as_torch_does():
    def train(make):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 3))
        opt = make(model.parameters())
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60)
        g = torch.Generator().manual_seed(1)
        X = torch.randn(256, 20, generator=g)
        y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
        losses = []
        for _ in range(60):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X), y)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        return losses, [p.detach() for p in model.parameters()]

    la, pa = train(lambda ps: fot.AdamW(ps, lr=0.01))
    lb, pb = train(lambda ps: torch.optim.AdamW(ps, lr=0.01))
    assert la[-1] < 0.5 * la[0]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- amsgrad (audit)
AMSGRAD_CASES = [("Adam", dict(amsgrad=True)),
                 ("Adam", dict(amsgrad=True, weight_decay=0.1)),
                 ("Adam", dict(amsgrad=True, decoupled_weight_decay=True, weight_decay=0.1)),
                 ("Adam", dict(decoupled_weight_decay=True, weight_decay=0.1)),
                 ("AdamW", dict(amsgrad=True, lr=0.01))]


@pytest.mark.parametrize("name, kwargs", AMSGRAD_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_amsgrad_and_decoupled_parity_20_steps(name, kwargs, dtype):
    ours, theirs = _params(dtype), _params(dtype)
    opt = getattr(fot, name)(ours, **kwargs)
    ref = getattr(torch.optim, name)(theirs, **kwargs)
    _run(opt, ours, 20)
    _run(ref, theirs, 20)
    _close(ours, theirs)
    mine, twin = opt.state_dict(), ref.state_dict()
    assert sorted(mine["state"][0]) == sorted(twin["state"][0])
    for k, v in twin["state"][0].items():
        torch.testing.assert_close(mine["state"][0][k], v, **TOL[dtype])
    # the state dict goes to the twin and back; both go on as one
    back = getattr(fot, name)(theirs, **kwargs)
    back.load_state_dict(mine)
    twin2 = getattr(torch.optim, name)(ours, **kwargs)
    twin2.load_state_dict(twin)


def test_amsgrad_per_group_and_toggled():
    ours, theirs = _params(torch.float32), _params(torch.float32)
    opt = fot.Adam([{"params": ours[:1], "amsgrad": True}, {"params": ours[1:]}], lr=0.01)
    ref = torch.optim.Adam([{"params": theirs[:1], "amsgrad": True}, {"params": theirs[1:]}],
                           lr=0.01)
    _run(opt, ours, 5)
    _run(ref, theirs, 5)
    for o in (opt, ref):                   # True -> False: the max buffer stays, unused
        o.param_groups[0]["amsgrad"] = False
    _run(opt, ours, 5, start=5)
    _run(ref, theirs, 5, start=5)
    _close(ours, theirs)
    # False -> True at step > 0: no max_exp_avg_sq (torch raises KeyError), nothing moves
    opt.param_groups[1]["amsgrad"] = True
    before = [p.detach().clone() for p in ours]
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        _run(opt, ours, 1, start=10)
    assert all(torch.equal(p.detach(), b) for p, b in zip(ours, before))


# ---------------------------------------------------------------- group options (audit)
@pytest.mark.parametrize("name, key", [("Adam", "maximize"), ("Adam", "capturable"),
                                       ("RMSprop", "centered"), ("SGD", "maximize")])
def test_unsupported_option_written_mid_training_is_refused(name, key):
    # (the old code checked the groups only when the set of parameters changed, and went on
    # ignoring e.g. maximize=True)
    cls, value = getattr(fot, name), True
    p = torch.nn.Parameter(torch.ones(3))
    opt = cls([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    before = p.detach().clone()
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=key):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_missing_state_buffer_is_refused():
    ours = _params(torch.float32)
    opt = fot.Adam(ours, lr=0.01)
    _run(opt, ours, 3)
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][1]["exp_avg_sq"]        # the old code started it again at zeros
    fresh = _params(torch.float32)
    opt2 = fot.Adam(fresh, lr=0.01)
    opt2.load_state_dict(sd)
    before = [p.detach().clone() for p in fresh]
    with pytest.raises(ValueError, match="exp_avg_sq"):
        _run(opt2, fresh, 1, start=3)
    assert all(torch.equal(p.detach(), b) for p, b in zip(fresh, before))


# ---------------------------------------------------------------- parameters' memory (audit)
def test_parameter_data_replaced_keeps_training_as_torch():
    """``p.data = t`` after a step: the old code went on updating the old memory (the
    parameter stopped moving); a changed dtype or shape is refused as torch refuses it."""
    ours, theirs = _params(torch.float32), _params(torch.float32)
    opt, ref = fot.Adam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01)
    _run(opt, ours, 3)
    _run(ref, theirs, 3)
    for ps in (ours, theirs):
        ps[0].data = ps[0].data.clone()
        ps[2].data = torch.zeros_like(ps[2].data)
    _run(opt, ours, 3, start=3)
    _run(ref, theirs, 3, start=3)
    _close(ours, theirs)
    assert float(opt.state[ours[0]]["step"]) == 6       # current without a state_dict()
    ours[1].data = ours[1].data.double()
    before = [p.detach().clone() for p in ours]
    with pytest.raises(ValueError, match="float64"):
        _run(opt, ours, 1, start=6)
    assert all(torch.equal(p.detach(), b) for p, b in zip(ours, before))
