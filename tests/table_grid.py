"""The test grids over the kernel table (fastopt.specs.KERNELS) and the registry (SPECS).

A kernel or optimizer added to the table is tested by every grid with no test edit: its
options come from its row (each hyperparameter at its default, then each varied alone to
another value its rule allows, keeping the combinations the joint rules accept), unless a
test file gives it a hand-written grid.

The quick loop (``pytest -m "not slow"``) runs a subset of each grid marked with ``quick``
below; plain ``pytest`` (CI) runs every case.  A new row, option set, level or size joins
both with no edit here.
"""

import itertools

import numpy as np
import pytest

from fastopt import specs
from fastopt.kernels import _check

KERNELS = {k.name: k for k in specs.KERNELS}
LOWBIT = [k.name for k in specs.KERNELS if k.lowbit]

# another value each rule allows (the defaults are the first)
_OTHER = {">=0": [0.01], ">0": [1e-6], "[0,1)": [0.5], "[0,1]": [0.5], "bool": [True, False]}

# the learning rate of the grids' calls (0.01 unless said here)
LR = {"sgd": 0.05}


def lr(name):
    return LR.get(name, 0.01)


def options(name):
    """Keyword arguments for kernel ``name`` (all but lr and step): the defaults, and each
    hyperparameter alone at other values (the optional state switched on when it has one)."""
    k = KERNELS[name]
    base = {h.name: h.default for h in k.hyper if h.name != "lr"}
    for n in _check.optional_names(k):     # a kernel with optional state: with the state
        base[n] = 0.9
    seen = []
    for h in k.hyper:
        if h.name == "lr":
            continue
        for v in [base[h.name], *_OTHER[h.rule]]:
            o = {**base, h.name: v}
            values = tuple(lr(name) if n == "lr" else o[n] for n in k.hyper_names)
            try:
                _check.hyper(k, values, True, step=1 if k.step else None)
            except ValueError:
                continue
            if o not in seen:
                seen.append(o)
    return seen


def dense_state(name, n, dtype, opts=None):
    """Zero state buffers of kernel ``name`` (None where the options leave them unused)."""
    k = KERNELS[name]
    values = {"lr": lr(name), **{h.name: h.default for h in k.hyper if h.name != "lr"},
              **(opts or {})}
    if not _check.uses_state(k, values):
        return [None] * len(k.state)
    return [np.zeros(n, dtype) for _ in k.state]


def call_dense(mod, name, param, grad, state, t, opts, lr_=None):
    """One ``<name>_step`` of ``mod`` (fastopt.kernels or fastopt.reference) at step ``t``."""
    kw = dict(opts)
    if KERNELS[name].step:
        kw["step"] = t
    getattr(mod, f"{name}_step")(param, grad, *state, lr=lr(name) if lr_ is None else lr_, **kw)


def signed(name):
    """Whether each state buffer of ``name`` may be negative (int8: the signed map)."""
    return [not b.nonnegative for b in KERNELS[name].state]


def combos(*lists):
    return list(itertools.product(*lists))


def constructor_args(spec, lr_=0.01):
    """Arguments for the registered optimizer ``spec`` (its class): ``lr``, and its optional
    state switched on where the constructor takes the hyperparameter (SGD's momentum)."""
    import inspect

    params = inspect.signature(spec.cls).parameters
    return {"lr": lr_, **{n: 0.9 for n in _check.optional_names(spec.row) if n in params}}


# ------------------------------------------------------------------ the quick loop's subset

def quick(family, option):
    """Mark a grid test whose quick-loop subset is chosen by `mark_outside_quick_subset`.

    Parameters
    ----------
    family : callable
        ``family(params) -> key``: the kernel family of a case, from its parameters (the
        ``callspec.params`` of the item, fixture parameters such as ``isa`` included).
    option : str
        The name of the parameter that is the case's option set.
    """
    return pytest.mark.grid(family=family, option=option)


GRID_ITEMS = pytest.StashKey()     # the grid cases collected, before ``-m``/``-k`` deselect


def mark_outside_quick_subset(items):
    """Mark ``slow`` the cases of ``quick`` grids that the quick loop leaves to the full run.

    Per test and kernel family, the quick loop keeps every case of the family's first option
    set (so every level, size, dtype and thread count the grid has, per family) and each
    other option set once: the k-th option set at the k-th value (cyclically) of every other
    parameter, so these cases walk the levels and sizes too.  Nothing is removed: the full
    run (no ``-m``) collects and runs every case, as before.  Returns the grid cases.
    """
    groups = {}
    for item in items:
        mark = item.get_closest_marker("grid")
        if mark is None or not hasattr(item, "callspec"):
            continue
        key = (item.module.__name__, item.originalname,
               mark.kwargs["family"](item.callspec.params))
        groups.setdefault(key, (mark.kwargs["option"], []))[1].append(item)
    for option, members in groups.values():
        by_option = {}
        for item in members:
            by_option.setdefault(_value(item, option), []).append(item)
        for k, cases in enumerate(by_option.values()):
            if k == 0:
                continue
            keep = _kth_combination(cases, option, k)
            for item in cases:
                if item is not keep:
                    item.add_marker(pytest.mark.slow)
    return [item for _, members in groups.values() for item in members]


def _value(item, name):
    """A key for the value of parameter ``name`` of ``item`` (the object itself when hashable)."""
    v = item.callspec.params[name]
    try:
        hash(v)
    except TypeError:
        return id(v)
    return v


def _kth_combination(cases, option, k):
    """The case whose every parameter but ``option`` is at its k-th value (cyclically, in
    the order of collection)."""
    axes = {}
    for item in cases:
        for name in item.callspec.params:
            if name != option:
                values = axes.setdefault(name, [])
                if _value(item, name) not in values:
                    values.append(_value(item, name))
    want = {name: values[k % len(values)] for name, values in axes.items()}
    for item in cases:
        if all(_value(item, name) == v for name, v in want.items()):
            return item
    return cases[k % len(cases)]     # not a full product: any one, still rotating
