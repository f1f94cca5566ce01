"""Optimizers over lists, tuples and dicts of arrays: one compiled call per step and dtype.

The multi-tensor path must give the bits of the flat path (the same values in one
FlatParams), for any thread count; check the gradients it is given each step as the
kernels do; and group arrays of different dtypes.
"""

import copy
import pickle

import numpy as np
import pytest

import fastopt
from fastopt import functional as F
from fastopt.optim import SPECS
from fastopt.runtime.dispatch import ext

import table_grid

BLOCK = ext._optim.block_size()
# sizes that fill tasks with several small arrays, cut arrays at BLOCK, leave empty arrays
SIZES = [3, 0, BLOCK, BLOCK + 1, 70_001, 1, 5000, 64, 1000, 2 * BLOCK - 7]
SHAPES = [(3,), (0, 4), (BLOCK // 8, 8), (BLOCK + 1,), (70_001,), (1, 1), (50, 100), (8, 8),
          (10, 10, 10), (2 * BLOCK - 7,)]


def _spec_args(name):
    """Constructor arguments exercising every option of each registered optimizer."""
    return {"sgd": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
            "momentum": dict(lr=0.05, beta=0.8),
            "rmsprop": dict(lr=0.01, alpha=0.95, weight_decay=0.01),
            "adam": dict(lr=0.01, weight_decay=0.02),
            "adamw": dict(lr=0.01, weight_decay=0.05)}.get(name) \
        or table_grid.constructor_args(SPECS[name])   # an optimizer added since


def _arrays(rng, dtype=np.float32, shapes=SHAPES):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _flat_of(arrays, dtype=np.float32):
    fp = fastopt.FlatParams({f"a{i}": a.shape for i, a in enumerate(arrays)})
    for i, a in enumerate(arrays):
        fp.params[f"a{i}"][...] = a
    return fp


def test_plan_covers_every_element_once_in_tasks_of_at_most_a_block(rng):
    params = _arrays(rng)
    opt = fastopt.Adam(params)
    (group,) = opt._calls
    tasks = group.mt.chunks()
    seen = [np.zeros(p.size, int) for p in params]
    order = []
    for task in tasks:
        assert 0 < sum(length for _, _, length in task) <= BLOCK
        for t, off, length in task:
            assert 0 < length <= BLOCK
            seen[t][off:off + length] += 1
            order.append((t, off))
    assert all((s == 1).all() for s in seen)
    assert order == sorted(order)       # tensors in order, chunks in order
    # small arrays share a task: fewer tasks than arrays with elements
    assert len(tasks) < sum(1 for p in params if p.size) + sum(p.size // BLOCK for p in params)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(SPECS))
def test_list_gives_the_bits_of_flatparams(isa, name, threads, rng):
    spec = SPECS[name]
    params = _arrays(rng)
    fp = _flat_of(params)
    opt_l = getattr(fastopt, spec.optimizer)(params, **_spec_args(name))
    opt_f = getattr(fastopt, spec.optimizer)(fp, **_spec_args(name))
    with fastopt.num_threads(threads):
        for _ in range(3):
            grads = _arrays(rng)
            for i, g in enumerate(grads):
                fp.grads[f"a{i}"][...] = g
            opt_l.step(grads)
            opt_f.step()
    for i, p in enumerate(params):
        np.testing.assert_array_equal(p, fp.params[f"a{i}"])
    for state in spec.state:
        for i, buf in enumerate(opt_l.state[state]):
            np.testing.assert_array_equal(buf.reshape(-1), opt_f.state[state][0][fp.slice(f"a{i}")])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(SPECS))
def test_list_matches_the_reference_array_by_array(name, dtype, rng):
    cls = getattr(fastopt, SPECS[name].optimizer)
    params = _arrays(rng, dtype)
    ref = [p.copy() for p in params]
    opt, opt_r = cls(params, **_spec_args(name)), cls(ref, **_spec_args(name), impl="reference")
    for _ in range(3):
        grads = _arrays(rng, dtype)
        opt.step(grads)
        opt_r.step(grads)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for p, r in zip(params, ref):
        assert p.dtype == dtype
        np.testing.assert_allclose(p, r, **tol)


def test_mixed_dtypes_make_one_group_each_and_match_separate_optimizers(rng):
    p32, p64 = _arrays(rng, np.float32, SHAPES[:5]), _arrays(rng, np.float64, SHAPES[5:])
    mixed = [p for pair in zip(p32, p64) for p in pair]          # interleaved
    a32, a64 = [p.copy() for p in p32], [p.copy() for p in p64]
    opt = fastopt.Adam(mixed, lr=0.01)
    assert len(opt._calls) == 2
    o32, o64 = fastopt.Adam(a32, lr=0.01), fastopt.Adam(a64, lr=0.01)
    for _ in range(2):
        g32, g64 = _arrays(rng, np.float32, SHAPES[:5]), _arrays(rng, np.float64, SHAPES[5:])
        opt.step([g for pair in zip(g32, g64) for g in pair])
        o32.step(g32)
        o64.step(g64)
    for p, a in zip(mixed, [a for pair in zip(a32, a64) for a in pair]):
        assert p.dtype == a.dtype
        np.testing.assert_array_equal(p, a)
    # with a float32 array present, hyperparameters must hold in float32
    with pytest.raises(ValueError, match="is 1.0 in float32"):
        fastopt.Adam(mixed, betas=(0.9, 1 - 1e-9))
    fastopt.Adam(p64, betas=(0.9, 1 - 1e-9))   # fine in float64


def test_dict_params_take_dict_grads_and_give_dict_state(rng):
    params = {"W1": rng.standard_normal((4, 3)), "b1": np.zeros(3), "W2": rng.standard_normal(3)}
    before = {k: v.copy() for k, v in params.items()}
    opt = fastopt.AdamW(params, lr=0.1)
    grads = {k: np.ones_like(v) for k, v in params.items()}
    opt.step({k: grads[k] for k in ["b1", "W2", "W1"]})   # any key order
    for k in params:
        assert not np.array_equal(params[k], before[k])
    sd = opt.state_dict()
    assert set(sd["state"]["exp_avg"]) == {"W1", "b1", "W2"}
    np.testing.assert_array_equal(sd["state"]["exp_avg"]["b1"], (1 - 0.9) * np.ones(3))
    assert opt.state["exp_avg_sq"]["W1"].shape == (4, 3)
    with pytest.raises(ValueError, match=r"missing \['W2'\]"):
        opt.step({"W1": grads["W1"], "b1": grads["b1"]})
    with pytest.raises(TypeError, match="dict with the keys"):
        opt.step(list(grads.values()))
    with pytest.raises(ValueError, match=r"grads\['b1'\] has shape \(4,\), expected \(3,\) like "
                                         r"params\['b1'\]"):
        opt.step({**grads, "b1": np.ones(4)})
    # a state dict round trip continues with the same bits
    other = {k: v.copy() for k, v in params.items()}
    opt2 = fastopt.AdamW(other, lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    opt.step(grads)
    opt2.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], other[k])
    bad = opt.state_dict()
    bad["state"]["exp_avg"].pop("W2")
    with pytest.raises(ValueError, match="keys of params"):
        opt2.load_state_dict(bad)


def _bad_grads(params, opt):
    """(description, bad gradient for position 1, exception, message) for the fast path."""
    p = params[1]
    n = p.size
    unaligned = np.zeros(n * 4 + 1, np.uint8)[1:].view(np.float32).reshape(p.shape)
    return [
        ("list", p.tolist(), TypeError, "must be a numpy.ndarray"),
        ("float64", np.ones(p.shape), TypeError, "dtype float64, expected float32"),
        ("big-endian", np.ones(p.shape, ">f4"), TypeError, "dtype >f4, expected float32"),
        ("strided", np.ones((n * 2,), np.float32)[::2].reshape(p.shape), ValueError,
         "C-contiguous"),
        ("unaligned", unaligned, ValueError, "not aligned"),
        ("shape", np.ones(n + 1, np.float32), ValueError, "expected (5, 4)"),
        ("ndim", np.ones(n, np.float32), ValueError, "expected (5, 4)"),
        ("param", params[0].reshape(p.shape), ValueError, "grads[1] and params[0] share memory"),
        ("state", opt.state["exp_avg"][2].reshape(p.shape), ValueError,
         "grads[1] and exp_avg[2] share memory"),
        ("matrix", np.asmatrix(np.ones(p.shape, np.float32)), TypeError, "numpy.matrix"),
    ]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("case", range(10))
def test_a_bad_gradient_is_reported_and_changes_nothing(case, rng):
    params = [rng.standard_normal(s).astype(np.float32) for s in [(20,), (5, 4), (4, 5)]]
    opt = fastopt.Adam(params, lr=0.1)
    good = [np.ones_like(p) for p in params]
    opt.step(good)
    what, bad, exc, msg = _bad_grads(params, opt)[case]
    before = [p.copy() for p in params]
    state = {k: [b.copy() for b in v] for k, v in opt.state.items()}
    with pytest.raises(exc, match=r"grads\[1\]") as err:
        opt.step([good[0], bad, good[2]])
    assert msg in str(err.value), what
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for k, bufs in opt.state.items():
        for a, b in zip(bufs, state[k]):
            np.testing.assert_array_equal(a, b)
    assert opt.step_count == 1
    opt.step(good)           # and the optimizer still works
    assert opt.step_count == 2


def test_read_only_parameter_is_reported(rng):
    params = [np.ones(3, np.float32), np.ones(4, np.float32)]
    opt = fastopt.SGD(params, lr=0.1)
    params[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        opt.step([np.ones(3, np.float32), np.ones(4, np.float32)])
    np.testing.assert_array_equal(params[0], 1.0)


def test_memmap_gradients_are_accepted(tmp_path, rng):
    params = [np.ones(10, np.float32)]
    mm = np.memmap(tmp_path / "g.bin", dtype=np.float32, mode="w+", shape=(10,))
    mm[:] = 2.0
    fastopt.SGD(params, lr=0.5).step([mm])
    np.testing.assert_array_equal(params[0], 0.0)


def test_gradient_arrays_may_change_between_steps(rng):
    # a fresh list of fresh arrays each step (as autograd and most NumPy code produce)
    params = _arrays(rng)
    ref = [p.copy() for p in params]
    opt, opt_r = fastopt.SGD(params, lr=0.1, momentum=0.9), fastopt.SGD(ref, lr=0.1, momentum=0.9,
                                                                        impl="reference")
    for _ in range(3):
        grads = _arrays(rng)
        opt.step(tuple(grads))
        opt_r.step([g.copy() for g in grads])
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p, r, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ PyTorch, float64

@pytest.mark.slow  # (seconds: out of the quick loop)
@pytest.mark.parametrize("name,kwargs,torch_kwargs", [
    ("Adam", dict(lr=1e-2, weight_decay=0.01), dict(lr=1e-2, weight_decay=0.01)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, weight_decay=0.1)),
    ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True), dict(lr=1e-2, momentum=0.9,
                                                             nesterov=True)),
    ("SGD", dict(lr=1e-2, momentum=0.9, weight_decay=0.01), dict(lr=1e-2, momentum=0.9,
                                                                 weight_decay=0.01)),
    ("RMSprop", dict(lr=1e-3, alpha=0.99, eps_inside_sqrt=False), dict(lr=1e-3, alpha=0.99)),
])
def test_float64_matches_pytorch_within_1e_12_over_25_steps(isa, name, kwargs, torch_kwargs, rng):
    torch = pytest.importorskip("torch")
    params = _arrays(rng, np.float64, SHAPES[:6])
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = getattr(fastopt, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **torch_kwargs, foreach=False)
    for _ in range(25):
        grads = _arrays(rng, np.float64, SHAPES[:6])
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        opt.step(grads)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ functional

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_matches_the_classes(dtype, rng):
    params = _arrays(rng, dtype)
    mine = [p.copy() for p in params]
    m, v = [np.zeros_like(p) for p in mine], [np.zeros_like(p) for p in mine]
    buf = [np.zeros_like(p) for p in mine]
    sq = [np.zeros_like(p) for p in mine]
    opt = fastopt.Adam(params, lr=0.01, weight_decay=0.1)
    for t in (1, 2, 3):
        grads = _arrays(rng, dtype)
        opt.step(grads)
        F.adam(mine, grads, m, v, step=t, lr=0.01, weight_decay=0.1)
    for p, q in zip(params, mine):
        np.testing.assert_array_equal(p, q)
    # each functional against its flat kernel, array by array
    from fastopt import kernels as K
    ref = [p.copy() for p in mine]
    rbuf, rsq = [b.copy() for b in buf], [s.copy() for s in sq]
    grads = _arrays(rng, dtype)
    F.sgd(mine, grads, buf, lr=0.1, momentum=0.9, dampening=0.5)
    F.rmsprop(mine, grads, sq, lr=0.01, alpha=0.9)
    for p, g, b, s in zip(ref, grads, rbuf, rsq):
        K.sgd_step(p, g, b, lr=0.1, momentum=0.9, dampening=0.5)
        K.rmsprop_step(p, g, s, lr=0.01, alpha=0.9)
    for p, q in zip(ref, mine):
        np.testing.assert_array_equal(p, q)


def test_functional_checks_everything_first(rng):
    params = _arrays(rng, np.float64, SHAPES[:3])
    grads = _arrays(rng, np.float64, SHAPES[:3])
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match="exp_avg_sqs has 2 arrays, expected 3"):
        F.adam(params, grads, m, v[:2], step=1, lr=0.1)
    with pytest.raises(TypeError, match=r"exp_avgs\[2\] has dtype float32, expected float64"):
        F.adam(params, grads, m[:2] + [m[2].astype(np.float32)], v, step=1, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[2\] and exp_avgs\[2\] share memory"):
        F.adam(params, grads[:2] + [m[2]], m, v, step=1, lr=0.1)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] and exp_avg_sqs\[0\] share memory"):
        F.adam(params, grads, m, [m[0]] + v[1:], step=1, lr=0.1)
    with pytest.raises(ValueError, match="step must be >= 1"):
        F.adam(params, grads, m, v, step=0, lr=0.1)
    with pytest.raises(ValueError, match="momentum_bufs is None"):
        F.sgd(params, grads, None, lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="params must be a list or tuple"):
        F.rmsprop(params[0], grads, m, lr=0.1)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for a in m + v:
        assert not a.any()
    F.sgd(params, grads, None, lr=0.1)       # plain SGD needs no buffers
    np.testing.assert_allclose(params[0], before[0] - 0.1 * grads[0])


def _adam_run(params, grads_seq, clear):
    """F.adam over the gradients of grads_seq; clear: drop the plan cache before each call."""
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_seq, 1):
        if clear:
            F.plans.clear()
        F.adam(params, grads, m, v, step=t, lr=0.01, weight_decay=0.1)
    return m, v


def test_functional_plan_cache_hit_gives_the_bits_of_a_fresh_plan(rng):
    dtypes = [np.float32, np.float64, np.float32, np.float64]
    params = [rng.standard_normal(s).astype(d) for s, d in zip(SHAPES[:4], dtypes)]
    grads_seq = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params]
                 for _ in range(4)]
    cold = [p.copy() for p in params]
    cold_state = _adam_run(cold, grads_seq, clear=True)
    warm = [p.copy() for p in params]
    F.plans.clear()
    hits = F.plans.hits
    warm_state = _adam_run(warm, grads_seq, clear=False)
    assert F.plans.hits - hits == 3          # the first call builds the plan, 3 reuse it
    for a, b in zip(warm + warm_state[0] + warm_state[1], cold + cold_state[0] + cold_state[1]):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_functional_plan_cache_never_uses_a_stale_plan(rng):
    params = _arrays(rng, np.float32, SHAPES[:3])
    grads = _arrays(rng, np.float32, SHAPES[:3])
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    F.plans.clear()
    F.adam(params, grads, m, v, step=1, lr=0.1)
    F.adam(params, grads, m, v, step=2, lr=0.1)
    assert F.plans.hits >= 1

    def unchanged(call, error, match):
        before = [a.copy() for a in params + m + v]
        with pytest.raises(error, match=match):
            call()
        for a, b in zip(params + m + v, before):
            np.testing.assert_array_equal(a, b)

    # the same array objects, changed since the plan: each is refused as a fresh call is
    params[1].flags.writeable = False
    unchanged(lambda: F.adam(params, grads, m, v, step=3, lr=0.1), ValueError,
              r"params\[1\] is read-only")
    params[1].flags.writeable = True
    m[2].shape = (m[2].size,) + (1,) * (m[2].ndim - 1) if m[2].ndim > 1 else (1, m[2].size)
    unchanged(lambda: F.adam(params, grads, m, v, step=3, lr=0.1), ValueError,
              r"exp_avgs\[2\] has shape")
    m[2].shape = params[2].shape
    # a gradient that shares memory with a state buffer, on a cached plan
    unchanged(lambda: F.adam(params, grads[:2] + [v[2]], m, v, step=3, lr=0.1),
              ValueError, r"grads\[2\] and exp_avg_sqs\[2\] share memory")
    # a state buffer replaced by an alias of another (a new object: another key)
    unchanged(lambda: F.adam(params, grads, m, [m[0]] + v[1:], step=3, lr=0.1), ValueError,
              r"exp_avgs\[0\] and exp_avg_sqs\[0\] share memory")
    # the same object, its memory moved (resize reallocates: 64 MB is always a new mapping)
    addr = v[0].ctypes.data
    v[0].resize(16 << 20, refcheck=False)
    v[0].resize(params[0].shape, refcheck=False)
    v[0][...] = 0.0
    assert v[0].ctypes.data != addr
    misses = F.plans.misses
    F.adam(params, grads, m, v, step=3, lr=0.1)
    assert F.plans.misses == misses + 1


def test_layout_key_tells_every_checked_property_apart():
    from fastopt._plan import layout_key

    a = np.zeros((4, 6), np.float32)
    base = layout_key([[a]])
    assert isinstance(base, bytes) and layout_key([[a]]) == base
    a.shape = (6, 4)                                      # the same object, reshaped
    assert layout_key([[a]]) != base
    a.shape = (4, 6)
    assert layout_key([[a]]) == base
    a.flags.writeable = False                             # the same object, read-only
    assert layout_key([[a]]) != base
    a.flags.writeable = True
    assert layout_key([[a.view()]]) != base               # another object, same memory
    assert layout_key([[a], []]) == base and layout_key([[], [a]]) == base
    assert layout_key([[a, [1.0]]]) is None


def test_plan_cache_is_bounded_and_shared_safely_by_threads(rng):
    import threading
    from fastopt.optim.functional import PlanCache

    cache = PlanCache(max_arrays=9)
    for k in range(5):
        cache.put(("adam", 2, 1, bytes([k])), [[0]])            # 3 arrays each
    assert len(cache) == 3 and cache.get(("adam", 2, 1, bytes([0]))) is None
    assert cache.get(("adam", 2, 1, bytes([4]))) == [[0]]
    # threads stepping their own arrays through the shared cache get the serial bits
    F.plans.clear()
    work = [(_arrays(rng, np.float32, SHAPES[:3]), _arrays(rng, np.float32, SHAPES[:3]))
            for _ in range(4)]
    expected = []
    for params, grads in work:
        mine = [p.copy() for p in params]
        _adam_run(mine, [grads] * 20, clear=True)
        expected.append(mine)
    errors = []

    def run(params, grads):
        try:
            _adam_run(params, [grads] * 20, clear=False)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for (params, _), exp in zip(work, expected):
        for a, b in zip(params, exp):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ pickle and copy

@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_optimizer_pickles_and_continues_with_the_same_bits(how, kind, rng):
    arrays = _arrays(rng, np.float64, SHAPES[:4]) + _arrays(rng, np.float32, SHAPES[4:6])
    params = arrays if kind == "list" else {f"p{i}": a for i, a in enumerate(arrays)}
    opt = fastopt.Adam(params, lr=fastopt.schedules.exponential(0.01), weight_decay=0.01)
    grads = [_arrays(rng, np.float64, SHAPES[:4]) + _arrays(rng, np.float32, SHAPES[4:6])
             for _ in range(3)]
    as_kind = (lambda g: g) if kind == "list" else (lambda g: {f"p{i}": a for i, a in enumerate(g)})
    opt.step(as_kind(grads[0]))
    clone = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    assert clone.step_count == 1 and clone.hyper() == opt.hyper()
    for g in grads[1:]:
        opt.step(as_kind(g))
        clone.step(as_kind(g))
    mine = clone._params
    assert all(a is not b for a, b in zip(mine, opt._params))   # its own arrays
    for a, b in zip(opt._params, mine):
        np.testing.assert_array_equal(a, b)
    # the clone's state is its own too
    assert not np.shares_memory(clone._states["exp_avg"][0], opt._states["exp_avg"][0])


def test_hyperparameters_set_between_steps_are_checked(rng):
    params = [np.ones(4, np.float32)]
    opt = fastopt.SGD(params, lr=0.1, momentum=0.9)
    opt.momentum = 0.5
    assert opt.hyper()["momentum"] == 0.5
    for name, value, exc, msg in [("momentum", 1.5, ValueError, "momentum must be in"),
                                  ("nesterov", "yes", TypeError, "nesterov must be True"),
                                  ("weight_decay", -1, ValueError, "weight_decay must be >= 0")]:
        with pytest.raises(exc, match=msg):
            setattr(opt, name, value)
        assert opt.hyper()["momentum"] == 0.5 and opt.hyper()["weight_decay"] == 0.0
    plain = fastopt.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="cannot become non-zero"):
        plain.momentum = 0.5
    opt.momentum = 0.0          # buffers kept; the update ignores them, as torch's
    adam = fastopt.Adam(params)
    adam.eps = 1e-6
    adam.betas = [0.8, 0.99]
    assert adam.betas == (0.8, 0.99)
    with pytest.raises(ValueError, match="eps must be > 0"):
        adam.eps = 0.0
    with pytest.raises(ValueError, match=r"betas\[1\] must be in"):
        adam.betas = (0.9, 1.0)
    assert adam.hyper() == {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0}
    adam.step([np.ones(4, np.float32)])
    np.testing.assert_allclose(params[0], 1 - 1e-3, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_over_flatparams_pickles_with_its_model(dtype, rng):
    fp = fastopt.FlatParams({"W": (30, 20), "b": (20,)}, dtype=dtype)
    fp.data[...] = rng.standard_normal(fp.size)
    opt = fastopt.AdamW(fp, lr=0.01)
    fp.grad[...] = rng.standard_normal(fp.size)
    opt.step()
    saved, before = opt.state_dict(), fp.data.copy()
    g = rng.standard_normal(fp.size)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        fp2 = clone.flat
        assert fp2 is not fp and fp2.dtype == dtype
        np.testing.assert_array_equal(fp2.data, fp.data)
        fp.grad[...] = g
        fp2.grad[...] = g
        opt.step()
        clone.step()
        np.testing.assert_array_equal(fp2.params["W"], fp.params["W"])   # views follow the copy
        assert not np.array_equal(fp.data, before)
        opt.load_state_dict(saved)                  # back to the state the clones were made in
        fp.data[...] = before
