r"""The functional API: one optimizer step over lists of arrays, PyTorch style.

``fastopt.functional.adam(params, grads, exp_avgs, exp_avg_sqs, step=..., lr=...)`` is
``torch.optim._functional.adam`` for NumPy: the caller owns every buffer (parameters,
gradients and the state, zeros at the start) and the step count; the call updates the
parameters and the state in place.  Lists (or tuples) run position by position: the
arrays at one position share a shape and a dtype (float32 or float64); positions of
both dtypes make one compiled call per dtype.  The update rules are those of
:mod:`fastopt.kernels` (``sgd_step``, ``rmsprop_step``, ``adam_step``), element for
element the same bits.

Every argument is checked before any buffer is touched: a rejected call changes
nothing.  An unknown keyword raises TypeError naming the closest one (``did you mean
'weight_decay'?``); PyTorch options fastopt does not have (``amsgrad``, ``foreach``, ...)
are refused as such.  The optimizer classes (:mod:`fastopt.optim`) run the same compiled calls.

The checks of the parameters and the state are cached per list of arrays (:data:`plans`, a
:class:`PlanCache`): a call with the same arrays, unchanged (same buffers, shapes, strides,
dtypes and flags), skips them and checks only its gradients, so a framework's optimizer
that calls these functions every step, per parameter or per model, pays for the full checks
once.  Use them where the state lives elsewhere (a framework's own optimizer objects, a
functional training loop), and the optimizer classes in a loop of your own.

Examples
--------
>>> import numpy as np
>>> from fastopt import functional as F
>>> params = [np.ones(3), np.ones((2, 2))]           # float64
>>> grads = [np.full(3, 0.5), np.full((2, 2), -1.0)]
>>> m = [np.zeros_like(p) for p in params]
>>> v = [np.zeros_like(p) for p in params]
>>> F.adam(params, grads, m, v, step=1, lr=0.1)
>>> params[0]
array([0.9, 0.9, 0.9])
"""

import inspect
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ..kernels import _check
from ..kernels._make import parameters
from .. import reference as _reference
from .._plan import MultiTensor, layout_key
from ..runtime.threads import get_num_threads
from ._keywords import checked_keywords
from ..specs import BY_NAME as _KERNELS
from ..specs import KERNELS
from .formats import DENSE

__all__ = [k.name for k in KERNELS] + ["adamw", "PlanCache", "plans"]

Arrays = Sequence[np.ndarray]


def _lists(**named):
    """The named sequences, checked to be lists or tuples of one length."""
    n = None
    for name, seq in named.items():
        if seq is None:
            continue
        if isinstance(seq, np.ndarray) or not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple of arrays, got {type(seq).__name__}")
        if n is None:
            n = len(seq)
        elif len(seq) != n:
            first = next(iter(named))
            raise ValueError(f"{name} has {len(seq)} arrays, expected {n} like {first}")
    return n


def _checked(params, grads, states):
    """Check every array; return the dtype groups (lists of positions)."""
    written = {}
    for i, p in enumerate(params):
        _check.array(f"params[{i}]", p, writable=True)
        _check.array(f"grads[{i}]", grads[i], writable=False, like=p, like_name=f"params[{i}]")
        written[f"params[{i}]"] = p
        for name, bufs in states.items():
            _check.array(f"{name}[{i}]", bufs[i], writable=True, like=p,
                         like_name=f"params[{i}]")
            written[f"{name}[{i}]"] = bufs[i]
    extents = _check.Extents(**written)   # no two written buffers share memory
    for i, g in enumerate(grads):
        shared = extents.overlapping(g)
        if shared is not None:
            raise ValueError(f"grads[{i}] and {shared} share memory; "
                             "each buffer must be its own array")
    f32 = [i for i, p in enumerate(params) if _check.is_f32(p)]
    f64 = [i for i, p in enumerate(params) if not _check.is_f32(p)]
    return [g for g in (f32, f64) if g]


class PlanCache:
    """The plans of recent calls, keyed by the layout of their arrays (thread-safe, bounded).

    A plan is what the argument checks found: the positions of each dtype's arrays, after
    every parameter and state array passed (C-contiguous, aligned, writable, like its
    parameter, no memory shared).  The key (``fastopt._plan.layout_key``) holds, for each
    parameter and state array, its identity, type, data address, dtype, flags, shape and
    strides: a call whose key matches passes the same checks, so they are skipped; a changed
    array (reshaped, made read-only, another buffer) or an array freed and replaced (even at
    the same identity) gives another key.  No array is referenced: the cache keeps no memory
    alive.  The gradients are checked at every call (they are often new arrays), by the
    compiled plan's fast checks.

    Parameters
    ----------
    max_arrays : int
        The bound: the least recently used plans are dropped while the plans hold more
        arrays than this.
    """

    def __init__(self, max_arrays=16384):
        self._entries = OrderedDict()
        self._arrays = 0
        self._max = max_arrays
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        """The plan stored under ``key``, or None."""
        with self._lock:
            plan = self._entries.get(key)
            if plan is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
            return plan

    def put(self, key, plan):
        """Store ``plan`` under ``key``, dropping the oldest plans over the bound."""
        n = _arrays_of(key)
        if n > self._max:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = plan
            self._arrays += n
            while self._arrays > self._max:
                old, _ = self._entries.popitem(last=False)
                self._arrays -= _arrays_of(old)

    def clear(self):
        """Drop every plan."""
        with self._lock:
            self._entries.clear()
            self._arrays = 0


def _arrays_of(key):
    """How many arrays the plan of ``key`` (kernel, states, params, layout) covers."""
    return key[2] * (1 + key[1])


#: The plans of the functional API's recent calls.
plans = PlanCache()


def _run(kernel, params, grads, states, impl, **hyper):
    if impl == "reference":
        _checked(params, grads, states)
        fn = getattr(_reference, kernel + "_step")
        for i, p in enumerate(params):
            fn(p, grads[i], *([b[i] for b in states.values()]
                              or [None] * len(_KERNELS[kernel].state)), **hyper)
        return
    if impl != "fused":
        _checked(params, grads, states)
        raise ValueError(f"impl must be 'fused' or 'reference', got {impl!r}")
    layout = layout_key([params, *states.values()])
    key = None if layout is None else (kernel, len(states), len(params), layout)
    groups_by_dtype = None if key is None else plans.get(key)
    checked = groups_by_dtype is None
    if checked:
        groups_by_dtype = _checked(params, grads, states)
        if key is not None:
            plans.put(key, groups_by_dtype)
    # every table built and every gradient bound before the first update
    calls = []
    for ix in groups_by_dtype:
        rows = [[params[i] for i in ix], None] + [[b[i] for i in ix] for b in states.values()]
        calls.append((MultiTensor(rows), [grads[i] for i in ix]))
    if not checked and any(mt.bind_grads(g) != -1 for mt, g in calls):
        _checked(params, grads, states)     # names the problem (or passes: a memmap gradient)
        checked = True
    if checked:
        for mt, g in calls:
            mt.set_grads(g)
    step = hyper.pop("step", 1)
    row = _KERNELS[kernel]
    groups = [tuple(hyper[k] for k in row.hyper_names)]
    nt = get_num_threads()
    for mt, _ in calls:
        DENSE.run_multi(row, mt, groups, step, 1.0, nt)


def _f32(params):
    return any(_check.is_f32(p) for p in params if isinstance(p, np.ndarray)) or not params


def _step(kernel, params, grads, states, values, step, impl):
    """One step of ``kernel`` (a row of the kernel table) over lists: ``states`` holds each
    state buffer's list (in the row's order), ``values`` the hyperparameters (row's order)."""
    named = {f"{b.name}s": s for b, s in zip(kernel.state, states)}
    _lists(params=params, grads=grads, **named)
    if kernel.step:
        step = _check.integer("step", step, 1, _check.C_LLONG_MAX)
    hyper = _check.hyper(kernel, values, _f32(params), step=step)
    kwargs = dict(zip(kernel.hyper_names, hyper))
    used = {}
    if _check.uses_state(kernel, kwargs):
        for name, bufs in named.items():
            if bufs is None:
                if kernel.optional is None:
                    raise TypeError(f"{name} must be a list or tuple of arrays, got NoneType")
                need = " and ".join(f"{n} > 0" for n in _check.optional_names(kernel))
                raise ValueError(f"{name} is None, but {need} needs one buffer per parameter "
                                 "(zeros at the start)")
            used[name] = bufs
    if kernel.step:
        kwargs["step"] = step
    _run(kernel.name, params, grads, used, impl, **kwargs)


def _functional(kernel):
    """``fastopt.functional.<kernel>``: the kernel's step over lists of arrays, with the
    signature of ``fastopt.kernels.<kernel>_step`` (each state buffer a list, named in the
    plural) and ``impl``; unknown keywords raise TypeError with the closest name."""
    P = inspect.Parameter
    state = Arrays | None if kernel.optional else Arrays
    params = [P("params", P.POSITIONAL_OR_KEYWORD, annotation=Arrays),
              P("grads", P.POSITIONAL_OR_KEYWORD, annotation=Arrays)]
    params += [P(f"{b.name}s", P.POSITIONAL_OR_KEYWORD, annotation=state) for b in kernel.state]
    params += [p for p in parameters(kernel, "step") if p.kind is P.KEYWORD_ONLY]
    params.append(P("impl", P.KEYWORD_ONLY, default="fused", annotation=str))
    defaults = [p.name for p in params if p.default is not P.empty]
    head = ", ".join(p.name for p in params if p.kind is P.POSITIONAL_OR_KEYWORD)
    kw = ", ".join(f"{p.name}=_d_{p.name}" if p.name in defaults else p.name
                   for p in params if p.kind is P.KEYWORD_ONLY)
    source = (f"def _factory(_kernel, _step, {', '.join('_d_' + n for n in defaults)}):\n"
              f"    def {kernel.name}({head}, *, {kw}):\n"
              f"        _step(_kernel, params, grads, ({''.join(f'{b.name}s, ' for b in kernel.state)}), "
              f"({''.join(h + ', ' for h in kernel.hyper_names)}), "
              f"{'step' if kernel.step else 'None'}, impl)\n"
              f"    return {kernel.name}\n")
    local = {}
    exec(source, globals(), local)   # (the function's globals: this module's)
    fn = local["_factory"](kernel, _step, *[p.default for p in params if p.name in defaults])
    fn.__qualname__ = kernel.name
    fn.__signature__ = inspect.Signature(params, return_annotation=None)
    when = " and ".join(f"{n} == 0" for n in _check.optional_names(kernel))
    fn.__doc__ = (f"The {kernel.name} step over lists of arrays (see "
                  f":func:`fastopt.kernels.{kernel.name}_step`, whose arguments it takes, each "
                  "state buffer a list of arrays like ``params``)."
                  + ("\n\n``step`` counts from 1 and is the same for every array of the call."
                     if kernel.step else "")
                  + (f"\n\nThe state lists may be None when {when}." if when else "") + "\n")
    return checked_keywords(fn)


# sgd, rmsprop, adam, ...: one per row of the kernel table
for _k in KERNELS:
    globals()[_k.name] = _functional(_k)
del _k


@checked_keywords
def adamw(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays, *, step: int,
          lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-2, impl: str = "fused") -> None:
    """AdamW (decoupled weight decay) over lists of arrays: :func:`fastopt.functional.adam` with
    ``decoupled_weight_decay=True`` and PyTorch's default ``weight_decay=1e-2``."""
    adam(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2,
         eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True, impl=impl)
