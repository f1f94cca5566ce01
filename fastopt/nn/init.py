r"""Weight initialization: the seed's Xavier and He rules, in float32 or float64.

.. math::

    W_{\text{xavier}} = \mathcal N(0, 1)\cdot\sqrt{1/n_{\text{in}}} \quad\text{(tanh)}, \qquad
    W_{\text{he}} = \mathcal N(0, 1)\cdot\sqrt{2/n_{\text{in}}} \quad\text{(ReLU)}

``fan_in`` (:math:`n_{\text{in}} = n^{[l-1]}`, the number of inputs feeding
each unit) defaults to the product of every axis but the last: fastopt's own
layers compute ``x @ W`` with ``W`` of shape ``(n_in, n_out)``, so for a 2-D
weight it is ``shape[0]``.  (PyTorch stores ``(n_out, n_in)`` and uses
``shape[1]``: pass ``fan_in=`` explicitly for that layout.)  Note the seed's
Xavier is the "LeCun normal" variant, ``sqrt(1/n_in)``, not Glorot's
``sqrt(2/(n_in + n_out))``.

The numbers are drawn in the dtype of ``out`` (or ``dtype``): float64
weights get float64 normal draws, not float32 ones widened.  NumPy's
float32 and float64 generators are different streams, so one seed gives
different weights in the two dtypes.

Examples
--------
>>> import numpy as np, fastopt
>>> fp = fastopt.FlatParams({"W1": (64, 256), "W2": (256, 10)})
>>> _ = fastopt.init.he(fp.params["W1"].shape, rng=0, out=fp.params["W1"])   # fills the view
>>> round(float(fp.params["W1"].std()), 2)          # sqrt(2/64) = 0.177
0.18
>>> fastopt.init.xavier((4, 3), rng=0, dtype=np.float64).dtype
dtype('float64')
"""

import math
import operator

import numpy as np

from ..kernels._check import FLOATS
from ..runtime.rng import as_generator

__all__ = ["xavier", "he"]


def _shape(shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, tuple):
        raise TypeError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    try:
        shape = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of non-negative ints, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    return shape


def _init(shape, gain, fan_in, rng, out, dtype):
    shape = _shape(shape)
    if fan_in is None:
        if len(shape) < 2:
            raise ValueError(f"fan_in cannot be inferred from shape {shape}; pass fan_in=")
        fan_in = math.prod(shape[:-1])
    else:
        if isinstance(fan_in, bool):
            raise TypeError("fan_in must be a positive int")
        fan_in = operator.index(fan_in)
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    supported = " or ".join(map(str, FLOATS))
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except (TypeError, ValueError):
            raise TypeError(f"dtype must be {supported}, got {dtype!r}") from None
        if dtype not in FLOATS:
            raise TypeError(f"dtype must be {supported}, got {dtype}")
    if out is not None:
        if not isinstance(out, np.ndarray) or out.dtype not in FLOATS:
            got = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
            raise TypeError(f"out must be a numpy.ndarray of {supported}, got {got}")
        if dtype is not None and out.dtype != dtype:
            raise TypeError(f"out has dtype {out.dtype} but dtype={dtype} was asked for")
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
        if not out.flags.writeable or not out.flags.c_contiguous:
            raise ValueError("out must be writable and C-contiguous")
    gen = as_generator(rng)
    if out is None:
        out = gen.standard_normal(shape, dtype=dtype or np.float32)
    else:
        gen.standard_normal(dtype=out.dtype, out=out)
    out *= out.dtype.type(math.sqrt(gain / fan_in))
    return out


def xavier(shape, *, fan_in=None, rng=None, out=None, dtype=None):
    """N(0, 1)·sqrt(1/fan_in), float32 or float64 (the seed's rule for tanh layers).

    Parameters
    ----------
    shape : tuple of int
    fan_in : int, optional
        Inputs per unit; default ``prod(shape[:-1])`` (``shape[0]`` for a (n_in, n_out) weight).
    rng : numpy.random.Generator, int seed or None
    out : float32 or float64 array of ``shape``, optional
        Filled in place (e.g. a FlatParams view) and returned; the numbers
        are drawn in its dtype.
    dtype : numpy.float32 or numpy.float64, optional
        The dtype of the new array when ``out`` is not given (default
        float32); with ``out`` it must match ``out.dtype`` if given.
    """
    return _init(shape, 1.0, fan_in, rng, out, dtype)


def he(shape, *, fan_in=None, rng=None, out=None, dtype=None):
    """N(0, 1)·sqrt(2/fan_in), float32 or float64 (the seed's rule for ReLU layers).

    See :func:`xavier`.
    """
    return _init(shape, 2.0, fan_in, rng, out, dtype)
