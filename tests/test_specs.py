"""The kernel table (``fastopt/specs.py``) against what it describes.

The table is the one home of each kernel's hyperparameters, rules, defaults and state
buffers: checked here against the wrappers' and the twins' signatures, the argument checks,
the compiled entry points and the optimizer registry derived from it.
"""

import inspect

import pytest

from fastopt import kernels, reference, specs
from fastopt.kernels import _check
from fastopt.optim import SPECS
from fastopt.runtime.dispatch import ext

KERNELS = {k.name: k for k in specs.KERNELS}
NAMES = sorted(KERNELS)

# the rules the table may name: (values that pass, values refused with ValueError)
RULES = {">=0": ([0.0, 2.5], [-1e-3]),
         ">0": ([1e-3], [0.0, -1.0]),
         "[0,1)": ([0.0, 0.5], [1.0, -0.1]),
         "[0,1]": ([0.0, 1.0], [1.5, -0.1])}


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_signatures_follow_the_table(name, impl):
    k = KERNELS[name]
    params = inspect.signature(getattr(impl, f"{name}_step")).parameters.values()
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    assert positional == ["param", "grad", *k.state_names]
    expected = {h.name: inspect.Parameter.empty if h.default is None else h.default
                for h in k.hyper}
    if k.step:
        expected["step"] = inspect.Parameter.empty
    assert keyword == expected


def _hyper_check(k, values, f32=False):
    return _check.hyper(k, values, f32, step=1 if k.step else None)


@pytest.mark.parametrize("name", NAMES)
def test_rules_are_the_checks(name):
    """Each hyperparameter's rule, probed alone from valid defaults (lr = 0.1)."""
    k = KERNELS[name]
    base = [0.1 if h.default is None else h.default for h in k.hyper]
    assert _hyper_check(k, base) is not None
    for i, h in enumerate(k.hyper):
        if h.rule == "bool":
            assert h.ctype == "bint"
            with pytest.raises(TypeError, match=h.name):
                _hyper_check(k, base[:i] + [1] + base[i + 1:])
            continue
        assert h.ctype == "double"
        ok, bad = RULES[h.rule]
        for v in ok:
            _hyper_check(k, base[:i] + [v] + base[i + 1:])
        for v in bad:
            with pytest.raises(ValueError, match=h.name):
                _hyper_check(k, base[:i] + [v] + base[i + 1:])


@pytest.mark.parametrize("name", NAMES)
def test_compiled_entry_points_follow_the_table(name):
    k = KERNELS[name]
    doc = getattr(ext._optim, f"{name}_step").__doc__   # (embedsignature: the signature first)
    head = doc[:doc.index(")")]
    args = [a.split(":")[0].split()[-1].strip() for a in head[head.index("(") + 1:].split(",")]
    assert args == (["param", "grad", *k.state_names, *k.hyper_names]
                    + (["step"] if k.step else []) + ["n_threads"])
    assert callable(getattr(ext._optim, f"{name}_multi"))


def test_registry_derives_from_the_table():
    for spec in SPECS.values():
        assert spec.row is KERNELS[spec.kernel.removesuffix("_step")]
        k = KERNELS[spec.kernel.removesuffix("_step")]
        assert spec.state == k.state_names
        assert spec.nonnegative == tuple(b.name for b in k.state if b.nonnegative)
        assert spec.passes == 3 + 2 * len(k.state)
    # the values the registry held before it derived them (public names kept)
    assert SPECS["adam"].state == ("exp_avg", "exp_avg_sq") and SPECS["adam"].passes == 7
    assert SPECS["rmsprop"].nonnegative == ("square_avg",) and SPECS["sgd"].nonnegative == ()
    # (the order of one group's hyperparameters in the compiled calls, MULTI_ARGS before)
    assert KERNELS["sgd"].hyper_names == ("lr", "momentum", "dampening", "nesterov",
                                          "weight_decay")


# The constructors' defaults that are the class's own, not its kernel row's (each in the
# class's docstring): every ``lr`` (the row requires it; a class may default to torch's),
# AdamW's decoupled weight decay of 1e-2, and Momentum's one ``beta`` (momentum and
# dampening both).
OWN_DEFAULTS = {"adamw": {"weight_decay": 1e-2}}
OWN_HYPER = {"momentum": {"beta": 0.9}}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_constructors_follow_their_rows(name):
    """Each optimizer's explicit signature against its kernel's row: the hyperparameters after
    ``lr`` in the row's order (a pair, as ``betas``, for its parts; those the class fixes left
    out), with the row's defaults; a row and a class that drift apart fail here."""
    entry = SPECS[name]
    cls, row = entry.cls, entry.row
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params[:2]] == ["params", "lr"]
    hyper = {p.name: p.default for p in params[2:] if p.kind is p.POSITIONAL_OR_KEYWORD}
    if name in OWN_HYPER:
        assert hyper == OWN_HYPER[name]
        return
    defaults = {h.name: h.default for h in row.hyper}
    expected, covered = {}, set(cls._fixed)
    for h in row.hyper[1:]:
        pair = next((p for p, parts in cls._pairs.items() if h.name in parts), None)
        if h.name in cls._fixed or pair in expected:
            continue
        parts = cls._pairs.get(pair, (h.name,))
        expected[pair or h.name] = (tuple(defaults[x] for x in parts) if pair
                                    else defaults[h.name])
        covered.update(parts)
    expected.update(OWN_DEFAULTS.get(name, {}))
    assert list(hyper.items()) == list(expected.items())
    assert covered == set(defaults) - {"lr"}
    assert set(cls._fixed) <= set(defaults)


def test_table_is_consistent():
    for k in specs.KERNELS:
        names = [c.name for c in k.consts]
        assert len(set(names)) == len(names) and names[0] == "gscale"
        assert all(c.kind in ("real", "bint") for c in k.consts)
        assert k.optional is None or k.optional in names
        halves = [b.half for b in k.state]
        assert set(halves) <= {0, 1}
        if k.lowbit:          # (the halves round the bfloat16 state: only for low-bit kernels)
            assert len(set(halves)) == len(halves)
        assert set(h.rule for h in k.hyper) <= set(RULES) | {"bool"}


def test_one_checker_reads_the_rules_from_the_row():
    """_check.hyper checks a row it has never seen by its rules alone, in the row's order."""
    from fastopt.specs import Hyper, Kernel

    toy = Kernel("toy", "ToyHyper", hyper=(Hyper("lr", "double", ">=0", None),
                                           Hyper("rho", "double", "[0,1)", 0.5),
                                           Hyper("tau", "double", "[0,1]", 1.0),
                                           Hyper("eps", "double", ">0", 1e-8),
                                           Hyper("flip", "bint", "bool", False)),
                 step=False, consts=(), state=())
    assert _check.hyper(toy, (0.1, 0.5, 1.0, 1e-8, True), False) == (0.1, 0.5, 1.0, 1e-8, True)
    assert _check.hyper(toy, (_check.UNCHECKED, 0, 0, 1, False), True)[0] is _check.UNCHECKED
    for bad, name in [((-1, 0.5, 1, 1, False), "lr"), ((0, 1.0, 1, 1, False), "rho"),
                      ((0, 0.5, 1.5, 1, False), "tau"), ((0, 0.5, 1, 0.0, False), "eps"),
                      ((0, 0.5, 1, 1e-46, False), "eps")]:
        with pytest.raises(ValueError, match=name):
            _check.hyper(toy, bad, True)
    with pytest.raises(TypeError, match="flip"):
        _check.hyper(toy, (0, 0.5, 1, 1, 1), False)
    with pytest.raises(ValueError, match="momentum"):  # the first failing rule, in the row's order
        _check.hyper(KERNELS["sgd"], (0.1, 2.0, 2.0, False, -1.0), False)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        _check.hyper(KERNELS["adam"], (0.1, 1.0, 0.9, 1e-8, 0.0, False), False,
                     names={"beta1": "betas[0]"})
