"""The test grids over the kernel table (fastopt.specs.KERNELS) and the registry (SPECS).

A kernel or optimizer added to the table is tested by every grid with no test edit: its
options come from its row (each hyperparameter at its default, then each varied alone to
another value its rule allows, keeping the combinations the joint rules accept), unless a
test file gives it a hand-written grid.
"""

import itertools

import numpy as np

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
