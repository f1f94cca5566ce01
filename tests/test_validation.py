"""Bad input: a clear TypeError/ValueError naming the argument, and every buffer unchanged."""

import warnings

import numpy as np
import pytest

from fastopt import kernels as K
from fastopt import reference as R
from fastopt.kernels import _check
from fastopt.optim import SPECS

import table_grid

N = 10

# Kernel (short name) -> its state buffers, from the one registry of optimizers.
STATES = {spec.kernel.removesuffix("_step"): spec.state for spec in SPECS.values()}


def fresh():
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(N).astype(np.float32)
            for name in ("param", "grad", "state1", "state2", "state3")}


def run(mod, kernel, b, **override):
    """Call ``kernel`` with buffers b (and overrides for arguments)."""
    args = dict(b)
    args.update({k: v for k, v in override.items() if k in args})
    hyper = {k: v for k, v in override.items() if k not in args}
    if kernel in table_grid.KERNELS:   # any kernel of the table: lr 0.1, step 1, its state on
        k = table_grid.KERNELS[kernel]
        h = dict(lr=0.1, **{n: 0.9 for n in _check.optional_names(k)})
        if k.step:
            h["step"] = 1
        h.update(hyper)
        state = [args[f"state{i + 1}"] for i in range(len(k.state))]
        getattr(mod, f"{kernel}_step")(args["param"], args["grad"], *state, **h)
    elif kernel == "clip":
        h = dict(max_norm=1.0)
        h.update(hyper)
        mod.clip_grad_norm_(args["grad"], **h)
    elif kernel == "norm":
        mod.global_norm(args["grad"])


def matrix(n):
    """A (1, n) float32 numpy.matrix (a subclass numpy discourages, which users still pass)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(np.zeros((1, n), np.float32))


def unaligned(n):
    """A C-contiguous float32 array whose address is not a multiple of 4."""
    a = np.zeros(4 * n + 1, np.uint8)[1:].view(np.float32)
    assert not a.flags.aligned and a.flags.c_contiguous
    return a


def _buffer_cases():
    f32 = lambda: np.zeros(N, np.float32)  # noqa: E731
    cases = []
    for kernel, state in STATES.items():
        bufs = ["param", "grad"] + [f"state{i + 1}" for i in range(len(state))]
        for arg in bufs:
            if arg == "param":  # param sets the dtype of the call: the other buffers must follow
                cases += [
                    (kernel, {arg: np.zeros(N, np.float64)}, TypeError,
                     "grad has dtype float32, expected float64 like param"),
                    (kernel, {arg: np.zeros(N, np.int32)}, TypeError,
                     "param has dtype int32; supported dtypes are float32 and float64"),
                ]
            else:
                cases += [
                    (kernel, {arg: np.zeros(N, np.float64)}, TypeError,
                     "dtype float64, expected float32 like param"),
                    (kernel, {arg: np.zeros(N, np.int32)}, TypeError,
                     "dtype int32, expected float32 like param"),
                ]
            cases += [
                (kernel, {arg: [0.0] * N}, TypeError, "numpy.ndarray"),
                (kernel, {arg: np.zeros(2 * N, np.float32)[::2]}, ValueError, "C-contiguous"),
                # undefined behaviour in the kernels (UBSan flags the misaligned loads)
                (kernel, {arg: unaligned(N)}, ValueError, "not aligned to 4 bytes"),
                # a matrix stays 2-D when flattened and multiplies as a matrix in the reference
                (kernel, {arg: matrix(N)}, TypeError,
                 "numpy.matrix, expected a plain numpy.ndarray"),
            ]
            if arg != "param":
                cases.append((kernel, {arg: np.zeros(N + 1, np.float32)}, ValueError,
                              "shape (11,), expected (10,) like param"))
                cases.append((kernel, {arg: np.zeros((2, 5), np.float32)}, ValueError,
                              "shape (2, 5), expected (10,)"))
            if arg != "grad":
                ro = f32()
                ro.flags.writeable = False
                cases.append((kernel, {arg: ro}, ValueError, "read-only"))
    return cases


BUFFER_CASES = _buffer_cases()


def _expected_name(kernel, arg):
    if arg.startswith("state") and kernel in STATES:
        return STATES[kernel][int(arg[len("state"):]) - 1]
    return arg


@pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("kernel,override,exc,msg", BUFFER_CASES,
                         ids=[f"{c[0]}-{next(iter(c[1]))}-{c[3][:20]}" for c in BUFFER_CASES])
def test_bad_buffer_is_rejected_and_nothing_changes(mod, kernel, override, exc, msg):
    b = fresh()
    before = {k: v.copy() for k, v in b.items()}
    bad = next(iter(override.values()))
    bad_before = np.array(bad, copy=True)
    with pytest.raises(exc) as err:
        run(mod, kernel, b, **override)
    text = str(err.value)
    assert msg in text
    assert _expected_name(kernel, next(iter(override))) in text
    for k in b:
        np.testing.assert_array_equal(b[k], before[k], err_msg=k)
    np.testing.assert_array_equal(np.asarray(bad), bad_before)


HYPER_CASES = [
    ("sgd", dict(lr=-0.1), ValueError, "lr must be >= 0"),
    ("sgd", dict(lr=float("nan")), ValueError, "lr must be finite"),
    ("sgd", dict(lr=float("inf")), ValueError, "lr must be finite"),
    ("sgd", dict(lr="0.1"), TypeError, "lr must be a real number"),
    ("sgd", dict(lr=None), TypeError, "lr must be a real number"),
    ("sgd", dict(momentum=1.0), ValueError, "momentum must be in [0, 1)"),
    ("sgd", dict(momentum=-0.1), ValueError, "momentum must be in [0, 1)"),
    ("sgd", dict(dampening=1.5), ValueError, "dampening must be in [0, 1]"),
    ("sgd", dict(weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
    ("sgd", dict(nesterov=True, dampening=0.5), ValueError, "nesterov"),
    ("sgd", dict(nesterov="yes"), TypeError, "nesterov must be True or False"),
    ("sgd", dict(state1=None), ValueError, "momentum_buf is None"),
    ("rmsprop", dict(alpha=1.0), ValueError, "alpha must be in [0, 1)"),
    ("rmsprop", dict(eps=0.0), ValueError, "eps must be > 0"),
    ("rmsprop", dict(eps=-1e-8), ValueError, "eps must be > 0"),
    ("rmsprop", dict(lr=-1.0), ValueError, "lr must be >= 0"),
    ("adam", dict(beta1=1.0), ValueError, "beta1 must be in [0, 1)"),
    ("adam", dict(beta1=-0.5), ValueError, "beta1 must be in [0, 1)"),
    ("adam", dict(beta2=1.0), ValueError, "beta2 must be in [0, 1)"),
    ("adam", dict(beta2=float("nan")), ValueError, "beta2 must be finite"),
    ("adam", dict(eps=0.0), ValueError, "eps must be > 0"),
    ("adam", dict(step=0), ValueError, "step must be >= 1"),
    ("adam", dict(step=1.5), TypeError, "step must be an int"),
    ("adam", dict(weight_decay=float("-inf")), ValueError, "weight_decay must be finite"),
    ("adam", dict(decoupled_weight_decay=1), TypeError, "decoupled_weight_decay must be True"),
    ("clip", dict(max_norm=0.0), ValueError, "max_norm must be > 0"),
    ("clip", dict(max_norm=-1.0), ValueError, "max_norm must be > 0"),
    ("clip", dict(max_norm=float("nan")), ValueError, "max_norm must be finite"),
    # values the kernels' float32 arithmetic cannot hold: accepted once, then NaN or inf
    ("adam", dict(eps=1e-46), ValueError, "eps = 1e-46 is 0 in float32"),
    ("rmsprop", dict(eps=1e-46), ValueError, "eps = 1e-46 is 0 in float32"),
    ("adam", dict(lr=1e39), ValueError, "lr = 1e+39 overflows float32"),
    ("sgd", dict(lr=1e39), ValueError, "lr = 1e+39 overflows float32"),
    ("rmsprop", dict(lr=1e39), ValueError, "lr = 1e+39 overflows float32"),
    ("sgd", dict(weight_decay=3.5e38), ValueError, "weight_decay = 3.5e+38 overflows float32"),
    ("adam", dict(beta2=0.99999999), ValueError, "beta2 = 0.99999999 is 1.0 in float32"),
    ("rmsprop", dict(alpha=1 - 1e-9), ValueError, "is 1.0 in float32"),
    ("sgd", dict(momentum=1 - 1e-9), ValueError, "is 1.0 in float32"),
    ("adam", dict(lr=1e30, weight_decay=1e30, decoupled_weight_decay=True), ValueError,
     "the decay factor 1 - lr * weight_decay = -1e+60 overflows float32"),
    # integers beyond the kernel's C type (step is a long long), booleans as counts
    ("adam", dict(lr=1e38, beta1=0.9), ValueError, "lr / (1 - beta1**step) = 1e+39 overflows"),
    ("adam", dict(step=2**63), ValueError, "step must be <= 9223372036854775807"),
    ("adam", dict(step=True), TypeError, "step must be an int, got bool"),
    ("adam", dict(step=np.True_), TypeError, "step must be an int, got bool"),
]


@pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("kernel,override,exc,msg", HYPER_CASES,
                         ids=[f"{c[0]}-{c[3][:25]}" for c in HYPER_CASES])
def test_bad_hyperparameter_is_rejected_and_nothing_changes(mod, kernel, override, exc, msg):
    b = fresh()
    before = {k: v.copy() for k, v in b.items()}
    with pytest.raises(exc) as err:
        run(mod, kernel, b, **override)
    assert msg in str(err.value)
    for k in b:
        np.testing.assert_array_equal(b[k], before[k], err_msg=k)


ALIAS_CASES = [
    ("sgd", ("param", "grad")),
    ("sgd", ("param", "state1")),
    ("sgd", ("grad", "state1")),
    ("rmsprop", ("param", "state1")),
    ("rmsprop", ("param", "grad")),
    ("adam", ("param", "state1")),
    ("adam", ("param", "state2")),
    ("adam", ("state1", "state2")),
    ("adam", ("param", "grad")),
    ("adam", ("grad", "state2")),
]


@pytest.mark.parametrize("mod", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("kernel,pair", ALIAS_CASES, ids=[f"{k}-{a}-{b}" for k, (a, b) in ALIAS_CASES])
@pytest.mark.parametrize("how", ["same", "overlap"])
def test_buffers_sharing_memory_are_rejected(mod, kernel, pair, how):
    b = fresh()
    big = np.arange(2 * N, dtype=np.float32)
    a_name, b_name = pair
    if how == "same":
        b[a_name] = big[:N]
        b[b_name] = big[:N]
    else:  # partial overlap
        b[a_name] = big[:N]
        b[b_name] = big[N // 2:N // 2 + N]
    before = {k: v.copy() for k, v in b.items()}
    with pytest.raises(ValueError, match="share memory"):
        run(mod, kernel, b)
    for k in b:
        np.testing.assert_array_equal(b[k], before[k], err_msg=k)
    np.testing.assert_array_equal(big, np.arange(2 * N, dtype=np.float32))


def test_momentum_buf_may_be_none_without_momentum():
    p = np.ones(3, np.float32)
    g = np.ones(3, np.float32)
    K.sgd_step(p, g, None, lr=0.5)
    np.testing.assert_array_equal(p, 0.5)


def test_read_only_grad_is_accepted():
    p = np.ones(3, np.float32)
    g = np.ones(3, np.float32)
    g.flags.writeable = False
    m, v = np.zeros(3, np.float32), np.zeros(3, np.float32)
    K.adam_step(p, g, m, v, step=1, lr=0.5)
    np.testing.assert_allclose(p, 0.5, rtol=1e-6)
    assert K.global_norm(g) == pytest.approx(3 ** 0.5)


def test_clip_rejects_read_only_grad():
    g = np.full(3, 10.0, np.float32)
    g.flags.writeable = False
    with pytest.raises(ValueError, match="grad is read-only"):
        K.clip_grad_norm_(g, 1.0)
    np.testing.assert_array_equal(g, 10.0)


def test_float32_edges_that_are_accepted():
    # The largest step, the largest float32 below 1 as beta, the smallest positive float32 as eps,
    # and an lr that is 0 in float32 (a decayed schedule: no update, as lr = 0) are all valid.
    for mod in (K, R):
        p, g = np.ones(3, np.float32), np.ones(3, np.float32)
        m, v = np.zeros(3, np.float32), np.zeros(3, np.float32)
        with np.errstate(all="ignore"):
            mod.adam_step(p, g, m, v, step=2**63 - 1, lr=1e-46, beta1=0.99999994,
                          beta2=0.99999994, eps=1.4e-45)
        np.testing.assert_array_equal(p, 1.0)
        assert (m > 0).all() and (v > 0).all()


def test_integer_check_for_counts():
    # The one check for an integer argument a kernel takes as a C type (e.g. a thread count).
    from fastopt.kernels import _check

    assert _check.integer("n", np.int64(3), 1, _check.C_INT_MAX) == 3
    assert _check.integer("n", 2**31 - 1, 1, _check.C_INT_MAX) == 2**31 - 1
    for bad, exc, msg in [(True, TypeError, "n must be an int, got bool"),
                          (np.True_, TypeError, "n must be an int, got bool"),
                          (2.0, TypeError, "n must be an int, got float"),
                          (2**40, ValueError, "n must be <= 2147483647, got 1099511627776"),
                          (0, ValueError, "n must be >= 1, got 0")]:
        with pytest.raises(exc, match=msg):
            _check.integer("n", bad, 1, _check.C_INT_MAX)


def test_unaligned_batchnorm_input_is_rejected():
    x = unaligned(8 * 3).reshape(8, 3)
    x[...] = np.arange(24).reshape(8, 3)
    C = 3
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    for mod in (K, R):
        with pytest.raises(ValueError, match="x is not aligned"):
            mod.batchnorm_forward(x, np.ones(C, np.float32), np.zeros(C, np.float32), rm, rv)
        with pytest.raises(ValueError, match="gamma is not aligned"):
            mod.batchnorm_forward(np.ones((8, 3), np.float32), unaligned(C), np.zeros(C, np.float32),
                                  rm, rv)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
