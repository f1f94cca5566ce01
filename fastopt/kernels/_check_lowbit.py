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
    """int8 or float8 state of param: uint8 codes like param, float32 absmax of one value
    per block."""
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


def step_args(kernel, fmt, param, grad, states, values, step_, extra):
    """The checks of one call of ``fastopt.kernels.lowbit.<name>_step_<fmt>`` (``fmt``:
    ``"bf16"``, ``"int8"`` or ``"f8"``) and of its twin in :mod:`fastopt.reference.lowbit`.

    ``states``: each state buffer's bits (bf16) or its codes and absmax (int8), in the row's
    order; ``values``: the hyperparameters in the row's order, checked as the float32 kernels
    check them; ``step_``: the step count (bf16 always: it feeds the rounding hash; int8 for
    kernels whose constants depend on it; else None); ``extra``: ``(seed, index_offset)``
    (bf16), each buffer's QuantMap or None (int8), nothing (f8).  The state must be used (the row's
    ``optional`` condition holds: SGD needs momentum > 0).

    Returns ``(step, hyper, arrays, extra)``: the checked step (or None), hyperparameters,
    the state arrays the kernels take (bf16: uint16 views) and the checked ``extra`` (int8:
    each buffer's map, None replaced by the unsigned map for a buffer that is never
    negative, else the signed one; f8: ``()``).
    """
    params(param, grad)
    st = step(step_) if (kernel.step or fmt == "bf16") else None
    hyper = _check.hyper(kernel, values, True, step=st if kernel.step else None)
    if not _check.uses_state(kernel, dict(zip(kernel.hyper_names, hyper))):
        for n in _check.optional_names(kernel):
            raise ValueError(f"{n} must be > 0 with low-precision state (with {n} = 0 "
                             f"{kernel.name.upper()} has no state: use "
                             f"fastopt.kernels.{kernel.name}_step)")
    named = {"param": param, "grad": grad}
    if fmt == "bf16":
        arrays = [bf16(b.name, s, param) for b, s in zip(kernel.state, states, strict=True)]
        extra = seed_offset(*extra, param.size)
        named.update(zip(kernel.state_names, arrays))
    else:
        arrays = list(states)
        maps = []
        for i, b in enumerate(kernel.state):
            codes, absmax = states[2 * i], states[2 * i + 1]
            int8(b.name, codes, absmax, param)
            named[b.name] = codes
            named[b.name + "_absmax"] = absmax
        if fmt == "int8":
            for b, m in zip(kernel.state, extra, strict=True):
                maps.append(qmap(f"{b.name}_map", m,
                                 unsigned_map if b.nonnegative else signed_map))
        extra = tuple(maps)
    _check.disjoint(**named)
    return st, hyper, arrays, extra


__all__ = ["params", "bf16", "int8", "qmap", "seed_offset", "step", "step_args",
           "signed_map", "unsigned_map"]
