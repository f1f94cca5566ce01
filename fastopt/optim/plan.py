"""The compiled plan of an optimizer: which compiled calls a step makes, over which buffers.

The tensors an optimizer updates (its arrays, or runs of a FlatParams) are split into
calls, one per (dtype, state format): float32 tensors with dense state, float64 tensors,
and the tensors kept in a compact format.  Each call owns a ``MultiTensor`` (the table of
chunks the compiled kernels walk: param, grad, then each state buffer's kernel rows), built
once (compiled once, not per instruction set: ``fastopt.set_isa`` swaps the kernels under
it); a step binds the gradients (:meth:`Plan.bind`, which also guards against a gradient
sharing memory with a parameter or a state buffer) and runs each call's kernel in its
format (:meth:`Plan.run`).  A plan holds no hyperparameters and no state of its own: it is
rebuilt from the optimizer after unpickling.
"""

import math

import numpy as np

from .._plan import MultiTensor
from ..kernels import _check
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads
from . import formats

__all__ = ["Plan", "split"]


def split(tensors, compact):
    """The calls' indices: ``[(tensor indices, float32, compact state), ...]``, one per non-empty
    kind (float32 tensors with dense state, float64 tensors, tensors with compact state)."""
    f32 = [i for i, p in enumerate(tensors) if _check.is_f32(p) and not compact[i]]
    f64 = [i for i, p in enumerate(tensors) if not _check.is_f32(p)]
    low = [i for i in range(len(tensors)) if compact[i]]
    return [(ix, is32, lb) for ix, is32, lb in
            ((f32, True, False), (f64, False, False), (low, True, True)) if ix]


class _Call:
    """One compiled call per step: the tensors of one dtype and one state format (their
    indices) and their MultiTensor (rows: param, grad, then each state buffer's kernel rows).

    A ``lowbit`` call's tensors keep a compact state format (``fmt``); ``table`` is its plan
    for the low-precision kernels, ``offsets`` each tensor's global index (the bfloat16
    rounding hash), ``tables`` the format's extra tables (int8: the maps)."""

    __slots__ = ("index", "f32", "lowbit", "fmt", "mt", "table", "offsets", "tables")

    def __init__(self, index, f32, lowbit, fmt):
        self.index = index
        self.f32 = f32
        self.lowbit = lowbit
        self.fmt = fmt
        self.mt = None


class Plan:
    """The compiled calls of one optimizer.

    Parameters
    ----------
    index : list of (list of int, bool, bool)
        The calls (see :func:`split`).
    fmt : StateFormat
        The format of the calls with compact state.
    tensors, groups, offsets : list
        Each compiled tensor, its parameter group and the global index of its first element.
    states : dict of str to list
        Each state buffer's entry per tensor.
    guarded : dict of str to ndarray
        Every buffer a gradient must not share memory with (the parameters and the state's
        kernel rows), by the name messages give it.
    flat_grads : list of ndarray or None
        For a FlatParams, each tensor's gradient (bound once, here).
    """

    def __init__(self, index, fmt, tensors, groups, offsets, states, guarded, flat_grads=None):
        self.calls = [_Call(ix, is32, lb, fmt if lb else formats.DENSE)
                      for ix, is32, lb in index]
        self.extents = _check.Extents(**guarded)
        everything = list(guarded.values())
        for g in self.calls:
            rows = [[tensors[i] for i in g.index], None]
            for bufs in states.values():
                # (each entry's kernel rows: the array, the bits, or the codes and the absmax)
                entries = [bufs[i] for i in g.index]
                rows += [list(r) for r in zip(*(g.fmt.rows(e) for e in entries))]
            g.mt = MultiTensor(rows, everything, [groups[i] for i in g.index])
            if g.lowbit:
                g.table = g.mt.table_capsule()
                g.offsets = np.array([offsets[i] for i in g.index], np.uint64)
                g.tables = g.fmt.kernel_tables([bufs[g.index[0]] for bufs in states.values()])
        self.flat_grads = flat_grads
        if flat_grads is not None:
            for g in self.calls:
                g.mt.set_grads([flat_grads[i] for i in g.index])

    def index(self):
        """The calls' indices, as :func:`split` gave them (what pickling keeps)."""
        return [(g.index, g.f32, g.lowbit) for g in self.calls]

    def bind(self, grads, check):
        """Point each call's table at ``grads`` (one per tensor); changes nothing else.

        The compiled fast checks run first; when they find a problem, ``check(grads)`` (the
        full checks, with messages naming the array) raises, unless the fast checks were too
        strict (a memmap), and the gradients are then bound without them.
        """
        calls = self.calls
        if len(calls) == 1:
            if calls[0].mt.bind_grads(grads) < 0:
                return
        else:
            bound = [c.mt.bind_grads([grads[i] for i in c.index]) for c in calls]
            if all(b < 0 for b in bound):
                return
        check(grads)
        for c in calls:
            c.mt.set_grads([grads[i] for i in c.index])

    def run(self, kernel, groups, step, gscale, n_threads, seed):
        """One step of ``kernel``: each call in its format (gradients bound)."""
        for g in self.calls:
            g.fmt.run(kernel, g, groups, step, gscale, n_threads, seed)

    def grad_stats(self, grads):
        """(sum of squares, all finite) of the bound gradients, over every call."""
        nt = get_num_threads()
        total = 0.0
        for g in self.calls:
            total += ext._optim.grad_sumsq(g.mt, nt)
        finite = math.isfinite(total)
        if not finite and any(not g.f32 for g in self.calls):
            # float64 squares beyond 1e308 overflow: look at the values themselves (rare)
            finite = all(bool(np.isfinite(g).all()) for g in grads)
        return total, finite
