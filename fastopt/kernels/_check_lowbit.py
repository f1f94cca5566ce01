"""Argument checks of the low-precision-state kernels (:mod:`fastopt.kernels.lowbit` and
:mod:`fastopt.reference.lowbit`).  As :mod:`fastopt.kernels._check`: every check runs before
any buffer is touched, errors name the argument."""

import numpy as np

from . import _check
from ._formats import QuantMap, absmax_size, signed_map, unsigned_map

_F32 = (np.dtype(np.float32),)
_U16 = np.dtype(np.uint16)
_U8 = np.dtype(np.uint8)
U64_MAX = 2**64 - 1


def _plain(name, a, what):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {what}, got {type(a).__name__}")
    if type(a) is not np.ndarray and not isinstance(a, np.memmap):
        raise TypeError(f"{name} is a {type(a).__module__}.{type(a).__name__}, expected a plain "
                        f"numpy.ndarray (use numpy.asarray)")


def _layout(name, a, shape, shape_note):
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to {a.dtype.itemsize} bytes (pass a copy)")
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape} {shape_note}")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only, but it is updated in place")


def params(param, grad):
    """float32 param (writable) and grad like it."""
    _check.array("param", param, writable=True, dtypes=_F32)
    _check.array("grad", grad, writable=False, like=param)


def bf16(name, a, param):
    """bfloat16 state like param: uint16 bits (or an ml_dtypes.bfloat16 array); returns the
    uint16 view."""
    _plain(name, a, "uint16 (bfloat16 bits)")
    if a.dtype != _U16 and a.dtype.name != "bfloat16":
        raise TypeError(f"{name} has dtype {a.dtype}, expected uint16 holding bfloat16 bits "
                        "(or ml_dtypes.bfloat16)")
    _layout(name, a, param.shape, "like param")
    return a if a.dtype == _U16 else a.view(_U16)


def int8(name, codes, absmax, param):
    """int8 state of param: uint8 codes like param, float32 absmax of one value per block."""
    _plain(name, codes, "uint8 (codes)")
    if codes.dtype != _U8:
        raise TypeError(f"{name} has dtype {codes.dtype}, expected uint8 (quantization codes)")
    _layout(name, codes, param.shape, "like param")
    aname = f"{name}_absmax"
    _plain(aname, absmax, "float32")
    if absmax.dtype != _F32[0]:
        raise TypeError(f"{aname} has dtype {absmax.dtype}, expected float32")
    nb = absmax_size(param.size)
    _layout(aname, absmax, (nb,), f"(one float32 per block of 256 elements of param's "
            f"{param.size})")


def qmap(name, m, default):
    """A QuantMap (None: ``default()``)."""
    if m is None:
        return default()
    if not isinstance(m, QuantMap):
        raise TypeError(f"{name} must be a fastopt QuantMap or None, got {type(m).__name__}")
    return m


def seed_offset(seed, index_offset, n):
    seed = _check.integer("seed", seed, 0, U64_MAX)
    index_offset = _check.integer("index_offset", index_offset, 0, U64_MAX - n)
    return seed, index_offset


def step(step, lo=1):
    return _check.integer("step", step, lo, _check.C_LLONG_MAX)


def momentum_positive(momentum):
    if momentum == 0:
        raise ValueError("momentum must be > 0 with low-precision state (with momentum = 0 "
                         "SGD has no state: use fastopt.kernels.sgd_step)")


def adam(param, grad, step_, lr, beta1, beta2, eps, weight_decay, decoupled):
    params(param, grad)
    st = step(step_)
    return (st, *_check.adam_hyper(lr, beta1, beta2, eps, weight_decay, decoupled, st, True))


def rmsprop(param, grad, lr, alpha, eps, eps_inside_sqrt, weight_decay):
    params(param, grad)
    return _check.rmsprop_hyper(lr, alpha, eps, eps_inside_sqrt, weight_decay, True)


def sgd(param, grad, lr, momentum, dampening, nesterov, weight_decay):
    params(param, grad)
    hyper = _check.sgd_hyper(lr, momentum, dampening, nesterov, weight_decay, True)
    momentum_positive(hyper[1])
    return hyper


__all__ = ["params", "bf16", "int8", "qmap", "seed_offset", "step", "adam", "rmsprop", "sgd",
           "signed_map", "unsigned_map"]
