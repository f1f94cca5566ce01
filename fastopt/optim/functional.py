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
are refused as such.  The optimizer classes (:mod:`fastopt.optim`) run the same compiled calls,
with the tables built once instead of at every call; use them in a training loop
where the arrays stay the same, and these functions where the state lives elsewhere
(a framework's own optimizer objects, a functional training loop).

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

from collections.abc import Sequence

import numpy as np

from ..kernels import _check
from .. import reference as _reference
from .._plan import MultiTensor
from ..runtime.threads import get_num_threads
from ._keywords import checked_keywords
from ..specs import BY_NAME as _KERNELS
from .formats import DENSE

__all__ = ["sgd", "rmsprop", "adam", "adamw"]

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


def _run(kernel, params, grads, states, impl, **hyper):
    groups_by_dtype = _checked(params, grads, states)
    if impl == "reference":
        fn = getattr(_reference, kernel + "_step")
        for i, p in enumerate(params):
            fn(p, grads[i], *([b[i] for b in states.values()] or [None]), **hyper)
        return
    if impl != "fused":
        raise ValueError(f"impl must be 'fused' or 'reference', got {impl!r}")
    step = hyper.pop("step", 1)
    row = _KERNELS[kernel]
    groups = [tuple(hyper[k] for k in row.hyper_names)]
    nt = get_num_threads()
    for ix in groups_by_dtype:
        rows = [[params[i] for i in ix], [grads[i] for i in ix]]
        rows += [[b[i] for i in ix] for b in states.values()]
        mt = MultiTensor(rows, [])   # aliasing is checked above
        mt.set_grads(rows[1])
        DENSE.run_multi(row, mt, groups, step, 1.0, nt)


def _f32(params):
    return any(_check.is_f32(p) for p in params if isinstance(p, np.ndarray)) or not params


@checked_keywords
def sgd(params: Arrays, grads: Arrays, momentum_bufs: Arrays | None, *, lr: float,
        momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0, impl: str = "fused") -> None:
    """SGD with momentum over lists of arrays (see :func:`fastopt.kernels.sgd_step`).

    ``momentum_bufs`` may be None when ``momentum == 0``.
    """
    _lists(params=params, grads=grads, momentum_bufs=momentum_bufs)
    lr, momentum, dampening, nesterov, weight_decay = _check.hyper(
        _KERNELS["sgd"], (lr, momentum, dampening, nesterov, weight_decay), _f32(params))
    states = {}
    if momentum != 0:
        if momentum_bufs is None:
            raise ValueError("momentum_bufs is None, but momentum > 0 needs one buffer per "
                             "parameter (zeros at the start)")
        states["momentum_bufs"] = momentum_bufs
    _run("sgd", params, grads, states, impl, lr=lr, momentum=momentum, dampening=dampening,
         nesterov=nesterov, weight_decay=weight_decay)


@checked_keywords
def rmsprop(params: Arrays, grads: Arrays, square_avgs: Arrays, *, lr: float, alpha: float = 0.9,
            eps: float = 1e-8, eps_inside_sqrt: bool = True, weight_decay: float = 0.0,
            impl: str = "fused") -> None:
    """RMSprop over lists of arrays (see :func:`fastopt.kernels.rmsprop_step`)."""
    _lists(params=params, grads=grads, square_avgs=square_avgs)
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _check.hyper(
        _KERNELS["rmsprop"], (lr, alpha, eps, eps_inside_sqrt, weight_decay), _f32(params))
    hyper = dict(lr=lr, alpha=alpha, eps=eps, eps_inside_sqrt=eps_inside_sqrt,
                 weight_decay=weight_decay)
    _run("rmsprop", params, grads, {"square_avgs": square_avgs}, impl, **hyper)


@checked_keywords
def adam(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays, *, step: int,
         lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
         impl: str = "fused") -> None:
    """Adam (or AdamW) over lists of arrays (see :func:`fastopt.kernels.adam_step`).

    ``step`` counts from 1 and is the same for every array of the call.
    """
    _lists(params=params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs)
    step = _check.integer("step", step, 1, _check.C_LLONG_MAX)
    lr, beta1, beta2, eps, weight_decay, decoupled = _check.hyper(
        _KERNELS["adam"], (lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay),
        _f32(params), step=step)
    _run("adam", params, grads, {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}, impl,
         step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
         decoupled_weight_decay=decoupled)


@checked_keywords
def adamw(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays, *, step: int,
          lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-2, impl: str = "fused") -> None:
    """AdamW (decoupled weight decay) over lists of arrays: :func:`adam` with
    ``decoupled_weight_decay=True`` and PyTorch's default ``weight_decay=1e-2``."""
    adam(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2,
         eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True, impl=impl)
