"""The public seams of the optimizer layer (issue 18): ParamSet, Optimizer.params,
Optimizer.like and a complete state_dict()."""

import copy
import pickle

import numpy as np
import pytest

import fastopt
from fastopt.optim.params import ParamSet

OPTIMIZERS = [(fastopt.SGD, dict(lr=0.1, momentum=0.9)), (fastopt.Momentum, dict(lr=0.1)),
              (fastopt.RMSprop, dict(lr=0.01)), (fastopt.Adam, dict(lr=0.01)),
              (fastopt.AdamW, dict(lr=0.01, weight_decay=0.1))]
OPTIMIZERS += [(s.cls, dict(lr=0.01)) for s in fastopt.optim.SPECS.values()   # any other
               if s.cls not in {c for c, _ in OPTIMIZERS}]


def _arrays(rng, n=3, dtype=np.float32):
    return [rng.standard_normal((4, i + 2)).astype(dtype) for i in range(n)]


# ------------------------------------------------------------ ParamSet
def test_paramset_reads_every_container(rng):
    a = _arrays(rng)
    ps = ParamSet(a)
    assert ps.kind == "list" and ps.keys is None and ps.flat is None
    assert ps.names == ["params[0]", "params[1]", "params[2]"]
    assert len(ps) == 3 and all(x is y for x, y in zip(ps, a)) and ps[1] is a[1]
    assert ps.entry_groups == [0, 0, 0]
    assert ps.layout() == ("list", [(0, "float32", (4, 2)), (1, "float32", (4, 3)),
                                    (2, "float32", (4, 4))])
    assert ParamSet(tuple(a)).layout() == ps.layout()

    d = {"W": a[0], "b": a[1]}
    ps = ParamSet(d, groups=[{"params": ["b"], "weight_decay": 0.0}])
    assert ps.kind == "dict" and ps.keys == ["W", "b"]
    assert ps.names == ["params['W']", "params['b']"]
    assert ps.entry_groups == [0, 1]
    assert ps.param_groups == [{"params": ["W"]}, {"params": ["b"], "weight_decay": 0.0}]
    assert ps.pack([1, 2]) == {"W": 1, "b": 2}
    assert ps.unpack({"b": 2, "W": 1}) == [1, 2]

    fp = fastopt.FlatParams({"W": (3, 2), "b": (2,)}, dtype=np.float64)
    ps = ParamSet(fp)
    assert ps.kind == "flat" and ps.flat is fp and ps.names == ["params.data"]
    assert list(ps) == [fp.data] and ps.entries == ["W", "b"]
    assert ps.layout() == ("flat", [("W", "float64", (3, 2)), ("b", "float64", (2,))])

    ps = ParamSet([{"params": [a[0]]}, {"params": [a[1], a[2]], "lr": 0.5}])
    assert ps.kind == "list" and ps.entry_groups == [0, 1, 1]
    assert ps.param_groups[1]["lr"] == 0.5 and ps.param_groups[1]["params"][1] is a[2]


def test_paramset_is_read_only_and_picklable(rng):
    ps = ParamSet(_arrays(rng))
    with pytest.raises(TypeError):
        ps[0] = np.zeros(3)
    with pytest.raises(AttributeError):
        ps.extra = 1
    back = pickle.loads(pickle.dumps(ps))
    assert back.layout() == ps.layout() and back.names == ps.names


def test_paramset_layout_tells_models_apart(rng):
    a = _arrays(rng)
    base = ParamSet(a).layout()
    assert ParamSet(a[:2]).layout() != base
    assert ParamSet([a[0], a[1], a[2].astype(np.float64)]).layout() != base
    assert ParamSet([a[0], a[1], a[2].reshape(-1)]).layout() != base
    assert ParamSet(dict(enumerate(a))).layout() != base


@pytest.mark.parametrize("params, groups, exc, msg", [
    (42, None, TypeError, "params must be a FlatParams"),
    ([np.zeros(3, np.int32)], None, TypeError, r"params\[0\]"),
    ([{"params": np.zeros(3)}], None, TypeError, r"params\[0\]\['params'\] must be a list"),
    ({"W": np.zeros(3)}, [{"params": ["V"]}], ValueError, "names 'V'"),
    ({"W": np.zeros(3)}, [{"params": ["W"]}, {"params": ["W"]}], ValueError, "two groups"),
    ([np.zeros(3)], [{"params": [0]}], TypeError, "groups= names parameters"),
    ({"W": np.zeros(3)}, {"params": ["W"]}, TypeError, "groups must be a list of dicts"),
])
def test_paramset_refusals_name_the_argument(params, groups, exc, msg):
    with pytest.raises(exc, match=msg):
        ParamSet(params, groups)


def test_paramset_unpack_checks_the_container(rng):
    ps = ParamSet({"W": np.zeros(2), "b": np.zeros(1)})
    with pytest.raises(TypeError, match="grads must be a dict"):
        ps.unpack([np.zeros(2), np.zeros(1)])
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        ps.unpack({"W": 1, "c": 2})
    ps = ParamSet([np.zeros(2)])
    with pytest.raises(ValueError, match="state has 2 arrays, expected 1"):
        ps.unpack([1, 2], "state")


# ------------------------------------------------------------ Optimizer.params
def test_optimizer_params_is_the_paramset(rng):
    a = {"W": np.ones((2, 2)), "b": np.zeros(2)}
    opt = fastopt.Adam(a, lr=0.1)
    assert isinstance(opt.params, ParamSet)
    assert opt.params.keys == ["W", "b"] and opt.params[0] is a["W"]
    assert opt.params.layout() == ("dict", [("W", "float64", (2, 2)), ("b", "float64", (2,))])
    with pytest.raises(AttributeError):
        opt.params = [np.zeros(2)]
    fp = fastopt.FlatParams({"W": (2,)})
    opt = fastopt.SGD(fp, lr=0.1)
    assert opt.params.flat is fp and opt.flat is fp and opt.params.kind == "flat"


# ------------------------------------------------------------ Optimizer.like
@pytest.mark.parametrize("cls, kw", OPTIMIZERS)
def test_like_is_the_same_optimizer_over_other_arrays(cls, kw, rng):
    a = _arrays(rng)
    sd = "bfloat16" if cls._spec.row.lowbit else "float32"   # (a kernel with float state only)
    opt = cls(a, **kw, max_grad_norm=1.5, skip_nonfinite=True, state_dtype=sd,
              min_lowbit_size=10, seed=7)
    grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in a]
    opt.step(grads)
    b = [p.copy() for p in a]
    twin = opt.like(b)
    assert type(twin) is cls and twin.step_count == 0 and twin.params[0] is b[0]
    assert twin.hyper() == opt.hyper() and twin.impl == opt.impl
    for k in ("max_grad_norm", "skip_nonfinite", "state_dtype", "min_lowbit_size", "seed"):
        assert getattr(twin, k) == getattr(opt, k), k
    assert all(not np.asarray(e).any() for bufs in twin.state.values() for e in bufs)
    # with the progress loaded, it continues with the same bits
    twin.load_state_dict(opt.state_dict())
    g2 = [rng.standard_normal(p.shape).astype(p.dtype) for p in a]
    opt.step(g2)
    twin.step(g2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_like_overrides_and_refuses_unknown_keywords(rng):
    opt = fastopt.AdamW(_arrays(rng), lr=0.01, weight_decay=0.1)
    twin = opt.like(_arrays(rng), lr=0.5, impl="reference", betas=(0.8, 0.9))
    assert twin.lr == 0.5 and twin.impl == "reference" and twin.betas == (0.8, 0.9)
    assert twin.weight_decay == 0.1 and opt.lr == 0.01
    with pytest.raises(TypeError, match="did you mean 'weight_decay'"):
        opt.like(_arrays(rng), weight_deacy=0.5)
    with pytest.raises(ValueError, match="lr"):
        opt.like(_arrays(rng), lr=-1.0)


def test_like_keeps_a_schedule_and_momentum_settings(rng):
    opt = fastopt.SGD(_arrays(rng), lr=lambda e: 0.1 / e, momentum=0.9, nesterov=True)
    opt.set_epoch(3)
    twin = opt.like(_arrays(rng))
    assert twin.schedule is opt.schedule and twin.epoch == 1 and twin.lr == 0.1
    assert twin.nesterov and twin.momentum == 0.9
    m = fastopt.Momentum(_arrays(rng), lr=0.1, beta=0.8)
    assert m.like(_arrays(rng)).hyper() == m.hyper()
    m.dampening = 0.5
    assert m.like(_arrays(rng)).hyper() == m.hyper()
    assert m.like(_arrays(rng), beta=0.7).hyper()["dampening"] == 0.7


def test_like_carries_parameter_groups(rng):
    # by name (dict and FlatParams) ...
    d = {"W": rng.standard_normal(5).astype(np.float32), "b": np.zeros(2, np.float32)}
    opt = fastopt.AdamW(d, lr=0.01, groups=[{"params": ["b"], "weight_decay": 0.0}])
    opt.param_groups[0]["lr"] = 0.02
    d2 = {k: v.copy() for k, v in d.items()}
    twin = opt.like(d2)
    assert [{k: v for k, v in g.items()} for g in twin.param_groups] == opt.param_groups
    fp = fastopt.FlatParams.from_arrays(d)
    assert opt.like(fp).param_groups == opt.param_groups
    # ... by position (PyTorch-style groups) ...
    a = _arrays(rng)
    opt = fastopt.SGD([{"params": a[:2]}, {"params": a[2:], "lr": 0.5}], lr=0.1)
    b = [p.copy() for p in a]
    twin = opt.like(b)
    assert twin.param_groups[1]["lr"] == 0.5 and twin.param_groups[1]["params"][0] is b[2]
    g = [np.ones_like(p) for p in a]
    opt.step(g)
    twin.step(g)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # ... or refused, unless groups= says what to do
    with pytest.raises(ValueError, match="cannot be carried over"):
        opt.like(b[:2])
    assert len(opt.like(b[:2], groups=None).param_groups) == 1


# ------------------------------------------------------------ a complete state_dict
def _everything_set(rng, cls=fastopt.SGD):
    d = {"W": rng.standard_normal(300).astype(np.float32),
         "b": rng.standard_normal(3).astype(np.float32)}
    opt = cls(d, lr=0.1, momentum=0.9, groups=[{"params": ["b"], "weight_decay": 0.0}],
              state_dtype="int8", min_lowbit_size=100, seed=11, skip_nonfinite=True)
    opt.param_groups[0]["lr"] = 0.05
    opt.step({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in d.items()})
    opt.step({"W": np.full(300, np.nan, np.float32), "b": np.zeros(3, np.float32)})  # skipped
    opt.set_epoch(4)
    return d, opt


def test_state_dict_is_complete(rng):
    d, opt = _everything_set(rng)
    sd = opt.state_dict()
    assert {"type", "step", "epoch", "hyper", "state", "skipped_steps", "groups",
            "state_dtype", "min_lowbit_size", "seed"} <= set(sd)
    assert sd["skipped_steps"] == 1 and sd["epoch"] == 4 and sd["step"] == 1
    assert sd["groups"] == [{"lr": 0.05}, {"weight_decay": 0.0}]
    assert (sd["state_dtype"], sd["min_lowbit_size"], sd["seed"]) == ("int8", 100, 11)
    plain = fastopt.Adam([np.zeros(2)], lr=0.1).state_dict()
    assert plain["groups"] == [{}] and plain["state_dtype"] == "float32"


def test_load_state_dict_restores_every_bit(rng):
    d, opt = _everything_set(rng)
    sd = opt.state_dict()
    d2 = {k: v.copy() for k, v in d.items()}
    other = opt.like(d2, seed=0)
    other.param_groups[0].pop("lr")
    other.param_groups[1]["weight_decay"] = 0.3
    other.load_state_dict(copy.deepcopy(sd))
    back = other.state_dict()
    assert back.keys() == sd.keys()
    for k in sd:
        if k != "state":
            assert back[k] == sd[k], k
    for n in sd["state"]:
        for key in sd["state"][n]:
            a, b = sd["state"][n][key], back["state"][n][key]
            if isinstance(a, dict):
                assert a.keys() == b.keys()
                for f in a:
                    np.testing.assert_array_equal(a[f], b[f])
            else:
                np.testing.assert_array_equal(a, b)
    g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in d.items()}
    opt.step(g)
    other.step(g)
    for k in d:
        np.testing.assert_array_equal(d[k], d2[k])


def test_load_state_dict_checks_min_lowbit_size(rng):
    d, opt = _everything_set(rng)
    other = opt.like({k: v.copy() for k, v in d.items()}, min_lowbit_size=200)
    before = other.state_dict()
    with pytest.raises(ValueError, match="min_lowbit_size=100"):
        other.load_state_dict(opt.state_dict())
    assert other.state_dict()["step"] == before["step"]


def test_pickles_from_before_paramset_load_and_continue(rng):
    # The state an optimizer pickled before ParamSet and the checked options had: the
    # container in flat/_params/_names/_keys, the options as public attributes.
    d = {"W": rng.standard_normal(5000).astype(np.float32), "b": np.ones(3, np.float32)}
    opt = fastopt.AdamW(d, lr=0.01, groups=[{"params": ["b"], "weight_decay": 0.0}],
                        state_dtype="int8", max_grad_norm=2.0)
    opt.step({k: np.full(v.shape, 0.5, np.float32) for k, v in d.items()})
    twin_d = {k: v.copy() for k, v in d.items()}
    twin = opt.like(twin_d)
    twin.load_state_dict(opt.state_dict())
    state = twin.__getstate__()
    ps = state.pop("_pset")
    state.update(flat=ps.flat, _params=ps.arrays, _names=ps.names, _keys=ps.keys)
    del state["_members"]
    for name in ("impl", "max_grad_norm", "skip_nonfinite", "seed", "state_dtype",
                 "min_lowbit_size"):
        state[name] = state.pop("_" + name)
    state["param_groups"] = [{**g, "params": list(g["params"])} for g in state["param_groups"]]
    old = fastopt.AdamW.__new__(fastopt.AdamW)
    old.__setstate__(state)
    assert old.params.keys == ["W", "b"] and old.params.entry_groups == [0, 1]
    assert old.max_grad_norm == 2.0 and old.state_dtype == "int8"
    g = {k: np.full(v.shape, 0.25, np.float32) for k, v in d.items()}
    opt.step(g)
    old.step(g)
    for k in d:
        np.testing.assert_array_equal(d[k], twin_d[k])
    with pytest.raises(TypeError, match="cannot change"):
        old.param_groups[0]["params"].append("b")


@pytest.mark.parametrize("case", ["list_dense", "dict_int8_groups", "flat_bf16_groups",
                                  "flat_rmsprop"])
def test_pickles_from_main_before_the_split_load_and_continue(case):
    # Optimizers pickled by main at 295ee5c (before optimizers.py was split into optimizer.py,
    # algorithms.py, plan.py, state.py), with the bits of their next step there
    # (tests/data/make_optimizer_pickles.py made them).
    import pickle
    from pathlib import Path

    with open(Path(__file__).parent / "data" / "optimizers_main_295ee5c.pkl", "rb") as f:
        blob, after = pickle.load(f)[case]
    opt = pickle.loads(blob)
    r = np.random.default_rng(11)
    if opt.params.flat is not None:
        opt.params.flat.grad[:] = np.random.default_rng(3).standard_normal(opt.params.flat.grad.size)
        opt.step()
        np.testing.assert_array_equal(opt.params.flat.data, after)
        return
    if opt.params.keys is not None:
        opt.step({k: r.standard_normal(v.shape).astype(v.dtype)
                  for k, v in zip(opt.params.keys, opt.params)})
    else:
        opt.step([r.standard_normal(p.shape).astype(p.dtype) for p in opt.params])
    for p, a in zip(opt.params, after):
        np.testing.assert_array_equal(p, a)
