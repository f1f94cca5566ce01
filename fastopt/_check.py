"""Argument checks shared by ``fastopt.kernels`` and ``fastopt.reference``.

Every check runs before any buffer is touched, so a rejected call changes
nothing.  Errors name the argument and say what was expected.
"""

import math
import numbers
import operator

import numpy as np

_F32 = np.dtype(np.float32)


def array(name, a, *, writable, like=None, like_name="param"):
    """A C-contiguous float32 ndarray (of ``like``'s shape, when given)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(a).__name__}")
    if a.dtype != _F32:
        raise TypeError(f"{name} has dtype {a.dtype}, expected float32")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if like is not None and a.shape != like.shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {like.shape} like {like_name}")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name} is read-only, but it is updated in place")
    return a


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


def at_least(name, x, lo):
    x = real(name, x)
    if x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x}")
    return x


def positive(name, x):
    x = real(name, x)
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {x}")
    return x


def unit_interval(name, x, *, closed_right=False):
    """0 <= x < 1 (or <= 1 with closed_right)."""
    x = real(name, x)
    if x < 0 or x > 1 or (x == 1 and not closed_right):
        raise ValueError(f"{name} must be in [0, {'1]' if closed_right else '1)'}, got {x}")
    return x


def integer(name, x, lo):
    if isinstance(x, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        x = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(x).__name__}") from None
    if x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x}")
    return x


def flag(name, x):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__}")
    return bool(x)


# ------------------------------------------------------- one check per kernel


def sgd(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay):
    array("param", param, writable=True)
    array("grad", grad, writable=False, like=param)
    lr = at_least("lr", lr, 0.0)
    momentum = unit_interval("momentum", momentum)
    dampening = unit_interval("dampening", dampening, closed_right=True)
    nesterov = flag("nesterov", nesterov)
    weight_decay = at_least("weight_decay", weight_decay, 0.0)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")
    if momentum != 0:
        if momentum_buf is None:
            raise ValueError("momentum_buf is None, but momentum > 0 needs a float32 buffer "
                             "like param (zeros at the start)")
        array("momentum_buf", momentum_buf, writable=True, like=param)
    elif momentum_buf is not None:
        array("momentum_buf", momentum_buf, writable=False, like=param)
    disjoint(param=param, grad=grad, momentum_buf=momentum_buf)
    return lr, momentum, dampening, nesterov, weight_decay


def rmsprop(param, grad, square_avg, lr, alpha, eps, eps_inside_sqrt, weight_decay):
    array("param", param, writable=True)
    array("grad", grad, writable=False, like=param)
    array("square_avg", square_avg, writable=True, like=param)
    disjoint(param=param, grad=grad, square_avg=square_avg)
    return (at_least("lr", lr, 0.0), unit_interval("alpha", alpha), positive("eps", eps),
            flag("eps_inside_sqrt", eps_inside_sqrt), at_least("weight_decay", weight_decay, 0.0))


def adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
         decoupled_weight_decay):
    array("param", param, writable=True)
    array("grad", grad, writable=False, like=param)
    array("exp_avg", exp_avg, writable=True, like=param)
    array("exp_avg_sq", exp_avg_sq, writable=True, like=param)
    disjoint(param=param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    return (integer("step", step, 1), at_least("lr", lr, 0.0), unit_interval("beta1", beta1),
            unit_interval("beta2", beta2), positive("eps", eps),
            at_least("weight_decay", weight_decay, 0.0),
            flag("decoupled_weight_decay", decoupled_weight_decay))
