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


def nesterov_rule(nesterov, momentum, dampening):
    """Nesterov momentum needs momentum > 0 and no dampening (the kernels and SGD check this)."""
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")


def sgd(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay):
    array("param", param, writable=True)
    array("grad", grad, writable=False, like=param)
    lr = at_least("lr", lr, 0.0)
    momentum = unit_interval("momentum", momentum)
    dampening = unit_interval("dampening", dampening, closed_right=True)
    nesterov = flag("nesterov", nesterov)
    weight_decay = at_least("weight_decay", weight_decay, 0.0)
    nesterov_rule(nesterov, momentum, dampening)
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


# ------------------------------------------------------- batch normalization


def _channels(name, a, C, *, writable):
    array(name, a, writable=writable)
    if a.shape != (C,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({C},): one value per channel "
                         f"(C = {C})")
    return a


def _bn_x(x, training):
    array("x", x, writable=False)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, *spatial), got shape {x.shape}")
    N, C = x.shape[0], x.shape[1]
    if N == 0:
        raise ValueError(f"x has N == 0 samples (shape {x.shape}); batch norm needs a batch")
    if C == 0:
        raise ValueError(f"x has C == 0 channels (shape {x.shape})")
    n = x.size // C
    if n == 0:
        raise ValueError(f"x has no values per channel (shape {x.shape})")
    if training and n == 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input of "
                         f"shape {x.shape}")
    return N, C, n


def _outs(out, names, likes, others):
    """Normalize ``out`` (None, one array, or a tuple with one entry per output) to a list."""
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


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, out):
    training = flag("training", training)
    N, C, n = _bn_x(x, training)
    _channels("gamma", gamma, C, writable=False)
    _channels("beta", beta, C, writable=False)
    if training:
        if (running_mean is None) != (running_var is None):
            raise ValueError("running_mean and running_var must both be arrays or both be None")
    elif running_mean is None or running_var is None:
        raise ValueError("inference (training=False) needs running_mean and running_var")
    if running_mean is not None:
        _channels("running_mean", running_mean, C, writable=training)
        _channels("running_var", running_var, C, writable=training)
    momentum = unit_interval("momentum", momentum, closed_right=True)
    eps = positive("eps", eps)
    outs = _outs(out, ("y", "mean", "invstd"), (x.shape, (C,), (C,)),
                 dict(x=x, gamma=gamma, beta=beta, running_mean=running_mean,
                      running_var=running_var))
    disjoint(running_mean=running_mean, running_var=running_var, x=x, gamma=gamma, beta=beta)
    return training, N, C, n, momentum, eps, outs


def batchnorm_backward(dy, x, gamma, mean, invstd, training, out):
    training = flag("training", training)
    N, C, n = _bn_x(x, False)
    array("dy", dy, writable=False, like=x, like_name="x")
    _channels("gamma", gamma, C, writable=False)
    _channels("mean", mean, C, writable=False)
    _channels("invstd", invstd, C, writable=False)
    outs = _outs(out, ("dx", "dgamma", "dbeta"), (x.shape, (C,), (C,)),
                 dict(dy=dy, x=x, gamma=gamma, mean=mean, invstd=invstd))
    return training, N, C, n, outs
