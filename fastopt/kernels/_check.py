"""Argument checks shared by ``fastopt.kernels`` and ``fastopt.reference`` (and the classes).

Every check runs before any buffer is touched, so a rejected call changes
nothing.  Errors name the argument and say what was expected.  What passes
also works in the kernels: arrays are plain, C-contiguous, aligned float32
ndarrays; hyperparameters keep their meaning in float32 (``float32=True``);
integers fit the C type the kernel takes (``integer(..., hi)``).
"""

import bisect
import math
import numbers
import operator
import re

import numpy as np

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

#: The dtypes the kernels compute in.  Every buffer of one call has the same dtype.
FLOATS = (_F32, _F64)

#: Largest values of the C integer types the kernels take (``int`` thread
#: counts, ``long long`` step counts).
C_INT_MAX = 2**31 - 1
C_LLONG_MAX = 2**63 - 1

# float32 rounding (round to nearest even) of a double x: |x| >= _F32_INF rounds to
# infinity, 0 < |x| <= _F32_ZERO rounds to zero, _F32_ONE <= x < 1 rounds to 1.
_F32_INF = 2.0**128 * (1 - 2.0**-25)    # FLT_MAX plus half an ulp
_F32_ZERO = 2.0**-150                   # half the smallest subnormal
_F32_ONE = 1 - 2.0**-25                 # half an ulp below 1


def array(name, a, *, writable, like=None, like_name="param", dtypes=FLOATS):
    """A C-contiguous, aligned float32 or float64 ndarray (of ``like``'s shape and dtype, when given).

    ndarray subclasses other than ``numpy.memmap`` are refused: they may
    redefine arithmetic (``numpy.matrix``: ``*`` is a matrix product, and a
    reshape stays 2-D), so the reference and the kernels would disagree.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {_names(dtypes)}, "
                        f"got {type(a).__name__}")
    if type(a) is not np.ndarray and not isinstance(a, np.memmap):
        raise TypeError(f"{name} is a {type(a).__module__}.{type(a).__name__}, expected a plain "
                        f"numpy.ndarray (use numpy.asarray)")
    if like is not None:
        if a.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, expected {like.dtype} like {like_name} "
                            "(every buffer of one call has the same dtype)")
    elif a.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {a.dtype}; supported dtypes are {_names(dtypes)} "
                        f"(convert with {name}.astype(numpy.{dtypes[0]}))")
    flags = a.flags
    if not flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not flags.aligned:
        raise ValueError(f"{name} is not aligned to {a.dtype.itemsize} bytes, as {a.dtype} must be "
                         "(pass a copy)")
    if like is not None and a.shape != like.shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {like.shape} like {like_name}")
    if writable and not flags.writeable:
        raise ValueError(f"{name} is read-only, but it is updated in place")
    return a


def _names(dtypes):
    return " and ".join(str(d) for d in dtypes) if len(dtypes) < 3 else ", ".join(map(str, dtypes))


def disjoint(**named):
    """No two of the named arrays (None is skipped) may share memory."""
    arrays = list(named.values())
    n = len(arrays)
    for i in range(n):
        ai = arrays[i]
        if ai is None:
            continue
        for j in range(i + 1, n):
            aj = arrays[j]
            if aj is not None and _may_share(ai, aj):
                names = list(named)
                raise ValueError(f"{names[i]} and {names[j]} share memory; "
                                 "each buffer must be its own array")


_may_share = np.may_share_memory


def _extent(a):
    """(first byte, one past the last byte) of a C-contiguous array."""
    lo = a.__array_interface__["data"][0]
    return lo, lo + a.nbytes


class Extents:
    """The memory of named C-contiguous arrays that must not overlap, for fast lookups.

    Building it checks that no two of the arrays share memory (as
    :func:`disjoint`, in O(n log n)); :meth:`overlapping` then tells, in
    O(log n), which of them an array shares memory with.
    """

    def __init__(self, **named):
        spans = sorted((*_extent(a), i, name) for i, (name, a) in enumerate(named.items())
                       if a.size)
        for (_, hi, i, first), (lo, _, j, second) in zip(spans, spans[1:]):
            if lo < hi:  # (named in the order they were given)
                first, second = (first, second) if i < j else (second, first)
                raise ValueError(f"{first} and {second} share memory; "
                                 "each buffer must be its own array")
        self._starts = [lo for lo, _, _, _ in spans]
        self._spans = spans

    def overlapping(self, a):
        """The name of an array that shares memory with ``a`` (C-contiguous), or None."""
        if not a.size:
            return None
        lo, hi = _extent(a)
        i = bisect.bisect_left(self._starts, hi) - 1  # last span starting before a ends
        if i >= 0 and self._spans[i][1] > lo:
            return self._spans[i][3]
        return None


def real(name, x):
    """A finite real number, as a Python float."""
    if type(x) is float:  # fast path for the common case
        if math.isfinite(x):
            return x
        raise ValueError(f"{name} must be finite, got {x}")
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


# With float32=True a check also holds for the float32 value the kernels compute with:
# no value overflows to infinity, a value that must be > 0 does not round to 0, one
# that must be < 1 does not round to 1.  (A value >= 0 may round to 0: a learning rate
# that a schedule decays below 1.4e-45 simply stops the updates, as lr = 0 does.)

def _no_overflow(name, x):
    if abs(x) >= _F32_INF:
        raise ValueError(f"{name} = {x:.8g} overflows float32 (the kernels compute in float32; "
                         "the largest float32 is 3.4028235e+38)")
    return x


def at_least(name, x, lo, *, float32=False):
    """A finite number >= lo (and finite in float32, with float32=True)."""
    x = real(name, x)
    if x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x}")
    return _no_overflow(name, x) if float32 else x


def positive(name, x, *, float32=False):
    """A finite number > 0 (and > 0 and finite in float32, with float32=True)."""
    x = real(name, x)
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {x}")
    if float32 and x <= _F32_ZERO:
        raise ValueError(f"{name} = {x} is 0 in float32 (the kernels compute in float32; "
                         "the smallest positive float32 is 1.4e-45)")
    return _no_overflow(name, x) if float32 else x


def unit_interval(name, x, *, closed_right=False, float32=False):
    """0 <= x < 1 (or <= 1 with closed_right); with float32, x < 1 holds in float32 too."""
    x = real(name, x)
    if x < 0 or x > 1 or (x == 1 and not closed_right):
        raise ValueError(f"{name} must be in [0, {'1]' if closed_right else '1)'}, got {x}")
    if float32 and not closed_right and x >= _F32_ONE:
        raise ValueError(f"{name} = {x} is 1.0 in float32 (the kernels compute in float32); "
                         "it must be at most 0.99999994")
    return x


def integer(name, x, lo, hi=None):
    """An int (not a bool) in [lo, hi]: ``hi`` is the largest value the consumer's C type holds.

    ``integer("n", n, 1, C_INT_MAX)`` is the check for a thread count.
    """
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        x = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(x).__name__}") from None
    if x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x}")
    if hi is not None and x > hi:
        raise ValueError(f"{name} must be <= {hi}, got {x}")
    return x


def flag(name, x):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__}")
    return bool(x)


# ------------------------------------------------------- one check per kernel


def nesterov_rule(nesterov, momentum, dampening):
    """Nesterov momentum needs momentum > 0 and no dampening (the kernels and SGD check this)."""
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")


# Hyperparameters that reach the kernels' arithmetic are checked in the buffers' dtype:
# with float32 buffers, ``float32=True`` (they must keep their meaning in float32).
def is_f32(a):
    """Whether the kernels compute ``a``'s update in float32 (else float64)."""
    return a.dtype == _F32


def _finite_constant(name, x, f32):
    """A per-step constant the kernels compute with, finite in their dtype."""
    if f32:
        return _no_overflow(name, x)
    if not math.isfinite(x):
        raise ValueError(f"{name} = {x} overflows float64")
    return x


# The hyperparameter constraints of each optimizer, in one place: the kernels' wrappers,
# the reference, :mod:`fastopt.functional` and the optimizer classes all call these
# (``lr=UNCHECKED``: the caller checks the learning rate itself, as the classes do).

#: Pass as ``lr`` to a ``*_hyper`` check when the caller checks the learning rate itself.
UNCHECKED = object()


# A hyperparameter's rule in the kernel table (:class:`fastopt.specs.Hyper`) -> its check.
_RULES = {
    ">=0": lambda name, x, f32: at_least(name, x, 0.0, float32=f32),
    ">0": lambda name, x, f32: positive(name, x, float32=f32),
    "[0,1)": lambda name, x, f32: unit_interval(name, x, float32=f32),
    "[0,1]": lambda name, x, f32: unit_interval(name, x, closed_right=True, float32=f32),
    "bool": lambda name, x, f32: flag(name, x),
}


def _sgd_rules(h, step, f32):
    nesterov_rule(h["nesterov"], h["momentum"], h["dampening"])


def _adam_rules(h, step, f32):
    lr = h["lr"]
    if lr is not UNCHECKED and step is not None:   # the per-step constants the update is computed with
        _finite_constant("lr / (1 - beta1**step)", lr / (1 - h["beta1"]**step), f32)
        if h["decoupled_weight_decay"]:
            _finite_constant("the decay factor 1 - lr * weight_decay",
                             1 - lr * h["weight_decay"], f32)


#: The rules between a kernel's hyperparameters (after each one's own rule holds).
_JOINT = {"sgd": _sgd_rules, "adam": _adam_rules, "amsgrad": _adam_rules}


def hyper(kernel, values, f32, *, step=None, names=None):
    """The hyperparameters of ``kernel`` (a row of :data:`fastopt.specs.KERNELS`), checked for
    buffers of float32 (``f32``) or float64, in the table's order.

    ``values`` holds them in that order; each must meet its rule in the table (an ``lr`` of
    :data:`UNCHECKED` is left to the caller), then the kernel's joint rules hold (with the
    per-step constants of step ``step``; None: not checked).  ``names`` renames arguments in
    the messages (``{"beta1": "betas[0]"}``).  Returns the checked values, a tuple.
    """
    checked = {}
    for h, x in zip(kernel.hyper, values, strict=True):
        if h.name == "lr" and x is UNCHECKED:
            checked["lr"] = x
            continue
        name = names.get(h.name, h.name) if names else h.name
        checked[h.name] = _RULES[h.rule](name, x, f32)
    joint = _JOINT.get(kernel.name)
    if joint is not None:
        joint(checked, step, f32)
    return tuple(checked.values())


def optional_names(kernel):
    """The hyperparameters on which ``kernel`` (a row of :data:`fastopt.specs.KERNELS`) uses
    its state buffers at all (SGD: ``momentum``), from its ``optional`` condition; ()."""
    if kernel.optional is None:
        return ()
    words = set(re.findall(r"[A-Za-z_]\w*", _consts(kernel)[kernel.optional]))
    return tuple(n for n in kernel.hyper_names if n in words)


def uses_state(kernel, hyper):
    """Whether ``kernel`` reads and writes its state buffers with the hyperparameters
    ``hyper`` (a dict by name): its ``optional`` condition, a C expression that is Python too
    (``"momentum != 0.0"``), evaluated on the checked values; True without one."""
    condition = _row(kernel)[3]
    return True if condition is None else condition(*[hyper[n] for n in kernel.hyper_names])


def _consts(kernel):
    return {c.name: c.expr for c in kernel.consts}


_ROWS = {}


def _row(kernel):
    """(row, hyperparameter names, state buffer names, optional condition as a function of
    the hyperparameters in order, or None), computed once per row."""
    r = _ROWS.get(kernel.name)
    if r is None or r[0] is not kernel:
        condition = None
        if kernel.optional is not None:
            condition = eval(f"lambda {', '.join(kernel.hyper_names)}: "
                             f"bool({_consts(kernel)[kernel.optional]})", {"bool": bool})
        r = _ROWS[kernel.name] = (kernel, kernel.hyper_names, kernel.state_names, condition)
    return r


def names(kernel):
    """(hyperparameter names, state buffer names) of a row."""
    return _row(kernel)[1:3]


def step_args(kernel, param, grad, states, values, step=None):
    """The checks of one call of ``fastopt.kernels.<name>_step`` and of its twin in
    :mod:`fastopt.reference`: float32 or float64 ``param`` and ``grad``, the state buffers
    ``states`` (in the row's order) like ``param``, the step count (kernels whose constants
    depend on it), the hyperparameters ``values`` (in the row's order) for buffers of
    ``param``'s dtype; no two arrays share memory.

    Returns ``(step, hyper)``: the checked step (None when the kernel takes none) and the
    checked hyperparameters, a tuple in the row's order.  A state buffer of a kernel whose
    ``optional`` condition does not hold may be None (it is not used).
    """
    step, checked, _ = checked_step(kernel, param, grad, states, values, step)
    return step, checked


def checked_step(kernel, param, grad, states, values, step=None):
    """:func:`step_args`, and whether the step uses the state buffers (the compiled call is
    given None for each when not)."""
    array("param", param, writable=True)
    array("grad", grad, writable=False, like=param)
    step = integer("step", step, 1, C_LLONG_MAX) if kernel.step else None
    checked = hyper(kernel, values, is_f32(param), step=step)
    _, _, snames, condition = _row(kernel)
    used = condition is None or condition(*checked)
    for b, s in zip(kernel.state, states, strict=True):
        if used:
            if s is None and kernel.optional is not None:
                need = " and ".join(f"{n} > 0" for n in optional_names(kernel))
                raise ValueError(f"{b.name} is None, but {need} needs a {param.dtype} buffer "
                                 "like param (zeros at the start)")
            array(b.name, s, writable=True, like=param)
        elif s is not None:
            array(b.name, s, writable=False, like=param)
    disjoint(param=param, grad=grad, **dict(zip(snames, states)))
    return step, checked, used


# ------------------------------------------------------- batch normalization


def _same_dtype(name, a, x):
    """Every array of one batch-norm call has x's dtype (checked first: the message says which)."""
    if isinstance(a, np.ndarray) and a.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {x.dtype} like x (every array of "
                        f"one call has x's dtype; supported dtypes are {_names(FLOATS)})")


def _channels(name, a, C, *, writable, x):
    """A (C,) vector of x's dtype."""
    _same_dtype(name, a, x)
    array(name, a, writable=writable)
    if a.shape != (C,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({C},): one value per channel "
                         f"(C = {C})")
    return a


def _bn_x(x, training, part=False):
    """(N, C, n) of x; ``part``: x is this process's part of a batch (``reduce`` given), which
    may be empty or hold a single value per channel (the whole batch is checked later,
    :func:`batchnorm_count`)."""
    array("x", x, writable=False)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, *spatial), got shape {x.shape}")
    N, C = x.shape[0], x.shape[1]
    if C == 0:
        raise ValueError(f"x has C == 0 channels (shape {x.shape})")
    n = x.size // C
    if part:
        return N, C, n
    if N == 0:
        raise ValueError(f"x has N == 0 samples (shape {x.shape}); batch norm needs a batch")
    if n == 0:
        raise ValueError(f"x has no values per channel (shape {x.shape})")
    if training and n == 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input of "
                         f"shape {x.shape}")
    return N, C, n


def _reduce(reduce):
    if reduce is not None and not callable(reduce):
        raise TypeError(f"reduce must be None or a callable, got {type(reduce).__name__}")
    return reduce


def batchnorm_count(n):
    """The values per channel of the whole batch (what ``reduce`` returned): more than 1."""
    if n < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got {n} over "
                         f"all the parts of the batch")
    return n


def _outs(out, names, likes, others, x):
    """Normalize ``out`` (None, one array, or a tuple with one entry per output) to a list.

    Every output array has x's dtype and the shape in ``likes``.
    """
    if out is None:
        outs = [None] * len(names)
    elif isinstance(out, np.ndarray):
        outs = [out] + [None] * (len(names) - 1)
    elif isinstance(out, tuple) and len(out) == len(names):
        outs = list(out)
    else:
        raise TypeError(f"out must be None, an array for {names[0]}, or a tuple of "
                        f"{len(names)} arrays or None ({', '.join(names)})")
    for name, o, like in zip(names, outs, likes):
        if o is not None:
            _same_dtype(f"out ({name})", o, x)
            array(f"out ({name})", o, writable=True)
            if o.shape != like:
                raise ValueError(f"out ({name}) has shape {o.shape}, expected {like}")
    named_outs = {f"out ({n})": o for n, o in zip(names, outs) if o is not None}
    disjoint(**named_outs)
    for on, o in named_outs.items():
        for other, a in others.items():
            if a is not None and _may_share(o, a):
                raise ValueError(f"{on} and {other} share memory; each buffer must be its own array")
    return outs


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, out,
                      reduce=None):
    training = flag("training", training)
    _reduce(reduce)
    N, C, n = _bn_x(x, training, part=reduce is not None and training)
    _channels("gamma", gamma, C, writable=False, x=x)
    _channels("beta", beta, C, writable=False, x=x)
    if training:
        if (running_mean is None) != (running_var is None):
            raise ValueError("running_mean and running_var must both be arrays or both be None")
    elif running_mean is None or running_var is None:
        raise ValueError("inference (training=False) needs running_mean and running_var")
    if running_mean is not None:
        _channels("running_mean", running_mean, C, writable=training, x=x)
        _channels("running_var", running_var, C, writable=training, x=x)
    momentum = unit_interval("momentum", momentum, closed_right=True)
    eps = positive("eps", eps)
    outs = _outs(out, ("y", "mean", "invstd"), (x.shape, (C,), (C,)),
                 dict(x=x, gamma=gamma, beta=beta, running_mean=running_mean,
                      running_var=running_var), x)
    disjoint(running_mean=running_mean, running_var=running_var, x=x, gamma=gamma, beta=beta)
    return training, N, C, n, momentum, eps, outs


def batchnorm_backward(dy, x, gamma, mean, invstd, training, out, reduce=None):
    training = flag("training", training)
    _reduce(reduce)
    N, C, n = _bn_x(x, False, part=reduce is not None)
    _same_dtype("dy", dy, x)
    array("dy", dy, writable=False, like=x, like_name="x")
    _channels("gamma", gamma, C, writable=False, x=x)
    _channels("mean", mean, C, writable=False, x=x)
    _channels("invstd", invstd, C, writable=False, x=x)
    outs = _outs(out, ("dx", "dgamma", "dbeta"), (x.shape, (C,), (C,)),
                 dict(dy=dy, x=x, gamma=gamma, mean=mean, invstd=invstd), x)
    return training, N, C, n, outs


def ema(ema, param, decay):
    """Weight averaging's arguments (the kernel and its twin share this check): ``ema`` a
    writable float buffer, ``param`` one of its shape and dtype, not sharing its memory;
    ``decay`` in [0, 1].  Returns the checked decay."""
    array("ema", ema, writable=True)
    array("param", param, writable=False, like=ema, like_name="ema")
    disjoint(ema=ema, param=param)
    return unit_interval("decay", decay, closed_right=True)
