r"""Fused, in-place kernels (compiled, multithreaded) behind validating wrappers.

Each function here has a twin of the same name and signature in
:mod:`fastopt.reference`, written in plain NumPy straight from the formulas;
the tests hold the kernels to it.  Buffers are C-contiguous ``float32`` or
``float64`` arrays of one shape and one dtype (any shape: they are treated as
flat) and are updated in place; the arithmetic is in that dtype.  State
buffers start at zero, as in the seed.  Over lists of arrays, see
:mod:`fastopt.functional` and the optimizer classes (one compiled call for all).

Every argument is checked before any buffer is touched: a wrong dtype, shape,
layout or alignment, an ndarray subclass, a read-only output, buffers that
share memory, a hyperparameter out of range or beyond what the dtype holds, or
an integer beyond the kernel's C type raise ``TypeError``/``ValueError``
naming the argument, and change nothing.  The kernels release the GIL.

The kernels do the reference's operations in the same order and dtype, so NaN,
infinities, subnormals and values near the dtype's limits give the same results
(the optimizer steps the same bits).
"""

import math

import numpy as np

from . import _check
from ._make import function_name, make
from ..runtime.dispatch import ext
from ..specs import KERNELS
from ..runtime.threads import get_num_threads
from .. import _plan, _threadpool

__all__ = ["global_norm", "clip_grad_norm_"]


def _flat(a):
    return a if a.ndim == 1 else a.reshape(-1)


def _run(kernel, variant, param, grad, states, values, step, extra):
    """A dense step function's runner (see :mod:`fastopt.kernels._make`): the checks, then
    the compiled call (a state buffer the step does not use is passed as None)."""
    step, hyper, used = _check.checked_step(kernel, param, grad, states, values, step)
    if used:
        states = [_flat(s) for s in states]
    else:
        states = [None] * len(states)
    getattr(ext._optim, _ENTRY[kernel.name])(_flat(param), _flat(grad), *states, *hyper,
                                             *(() if step is None else (step,)),
                                             get_num_threads())


_ENTRY = {k.name: f"{k.name}_step" for k in KERNELS}   # the compiled entry points

# sgd_step, rmsprop_step, adam_step, ...: one per row of the kernel table
for _k in KERNELS:
    globals()[function_name(_k, "step")] = make(_k, "step", _run, globals())
    __all__.insert(-2, function_name(_k, "step"))
del _k


def global_norm(grad: np.ndarray) -> float:
    r"""The Euclidean norm :math:`\sqrt{\sum g_i^2}` of a float32 or float64 buffer, as a Python float.

    Accumulated in double over fixed blocks added in order: the same bits for
    any thread count.
    """
    _check.array("grad", grad, writable=False)
    return ext._optim.sum_of_squares(_flat(grad), get_num_threads()) ** 0.5


def clip_grad_norm_(grad: np.ndarray, max_norm: float) -> float:
    r"""Scale ``grad`` in place so its norm is at most ``max_norm``; return the norm before.

    When :math:`\|g\| > \text{max\_norm}`, :math:`g \leftarrow g \cdot
    \text{max\_norm} / (\|g\| + 10^{-6})` (PyTorch's ``clip_grad_norm_``
    rule).  A NaN norm is returned as is and leaves ``grad`` unchanged.
    """
    _check.array("grad", grad, writable=True)
    max_norm = _check.positive("max_norm", max_norm)
    flat = _flat(grad)
    norm = ext._optim.sum_of_squares(flat, get_num_threads()) ** 0.5
    if norm > max_norm:
        ext._optim.scale(flat, max_norm / (norm + 1e-6), get_num_threads())
    return norm


# ------------------------------------------------------------------ batch normalization

__all__ += ["batchnorm_forward", "batchnorm_backward"]

def _as3d(a, N, C):
    # (math.prod: np.prod of a tuple costs 5-15 us, three times per call, in the caller's
    # serial time between two kernel calls)
    return a.reshape(N, C, math.prod(a.shape[2:]))


def _out_copy(o, value):
    """value (x's dtype, shape (C,)), copied into o when given."""
    if o is None:
        return value
    np.copyto(o, value, casting="same_kind")
    return o


def _out(o, value, dtype):
    """value (float64, shape (C,)) in ``dtype`` (x's), written into o when given."""
    if o is None:
        return value.astype(dtype)
    np.copyto(o, value, casting="same_kind")
    return o


def _prewake(x):
    """A parallel call on x is coming: wake the pool's sleeping workers now, so that they spin
    while the wrapper checks and allocates (``fastopt._threadpool.prewake``).  Before the
    checks, so cheap and quiet: anything but a large array skips it."""
    if type(x) is np.ndarray and x.size >= _plan.PARALLEL_MIN_ELEMENTS:
        _threadpool.prewake(get_num_threads())


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      running_mean: np.ndarray | None, running_var: np.ndarray | None, *,
                      training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                      out=None, reduce=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Batch-normalization forward pass, fused: returns ``(y, mean, invstd)``.

    ``x`` is C-contiguous float32 or float64 of shape (N, C) or
    (N, C, \*spatial); statistics are per channel over every other axis
    (n = N·∏spatial values).  Every other array of the call (gamma, beta, the
    running statistics, the ``out`` arrays) has x's dtype, and so do the
    outputs.

    .. math::

        \mu = \frac1n \sum x, \quad \sigma^2 = \frac1n \sum (x-\mu)^2, \quad
        y = (x - \mu)\,(\gamma\,\mathrm{invstd}) + \beta, \quad
        \mathrm{invstd} = \frac{1}{\sqrt{\sigma^2 + \epsilon}}

    Training updates, in place, ``running_mean ← (1−m)·running_mean + m·μ``
    and ``running_var ← (1−m)·running_var + m·σ²·n/(n−1)`` (PyTorch's
    convention: unbiased running variance); with ``training=False`` the
    running statistics normalize ``x`` (the seed's "at test time") and
    nothing is updated.  Statistics are accumulated in double with a
    per-channel shift (x far from zero is safe) over fixed blocks: the same
    bits for any thread count.  x is read twice and y written once.  The
    statistics are computed in double; y in x's dtype as
    ``(x - mean) * (gamma * invstd) + beta``, as in the reference.

    Parameters
    ----------
    x : ndarray of float32 or float64, (N, C, ...)
    gamma, beta : ndarray of x's dtype, (C,)
    running_mean, running_var : ndarray of x's dtype, (C,), or None (training only: no update)
    training : bool
    momentum : float in [0, 1]
    eps : float > 0 (PyTorch's 1e-5 by default; the seed suggests 1e-8)
    out : ndarray for y, or a tuple (y, mean, invstd) of arrays or None
    reduce : callable ``reduce(n, mean, var) -> (n, mean, var)``, optional
        x is one part of a batch split over processes (synchronized batch norm,
        :class:`fastopt.distributed.SyncBatchNorm`): called in training with this
        part's count n (values per channel; x may be empty or hold one value per
        channel) and its float64 mean and biased variance, it returns those of the
        whole batch, which normalize x and update the running statistics (the
        whole batch must have n >= 2).

    Returns
    -------
    y : ndarray of x's dtype and shape
    mean, invstd : ndarray of x's dtype, (C,)
        The batch statistics (training) or those from the running buffers
        (inference), for :func:`batchnorm_backward`.
    """
    _prewake(x)
    training, N, C, n, momentum, eps, outs = _check.batchnorm_forward(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, out, reduce)
    nt = get_num_threads()
    x3 = _as3d(x, N, C)
    y = outs[0] if outs[0] is not None else np.empty_like(x)
    if training and reduce is None:
        # both passes and the coefficients between them in one compiled call: the same bits
        # as the NumPy coefficients below, without the caller's gap between the passes
        mean64, var64 = np.empty(C), np.empty(C)
        mean, invstd = np.empty(C, x.dtype), np.empty(C, x.dtype)
        ext._batchnorm.forward_train(x3, _as3d(y, N, C), gamma, beta, mean64, var64, mean,
                                     invstd, eps, nt)
        mean, invstd = _out_copy(outs[1], mean), _out_copy(outs[2], invstd)
    else:
        if training:
            mean64 = np.zeros(C)
            var64 = np.zeros(C)
            if n:
                ext._batchnorm.channel_stats(x3, mean64, var64, nt)
            n, mean64, var64 = reduce(n, mean64, var64)
            _check.batchnorm_count(n)
        else:
            mean64 = running_mean.astype(np.float64)
            var64 = running_var.astype(np.float64)
        mean = _out(outs[1], mean64, x.dtype)
        invstd = _out(outs[2], 1.0 / np.sqrt(var64 + eps), x.dtype)
        if x.size:
            ext._batchnorm.affine(x3, _as3d(y, N, C), mean, gamma * invstd, beta, nt)
    if training and running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean64
        running_var[...] = (1 - momentum) * running_var + momentum * var64 * n / (n - 1)
    return y, mean, invstd


def batchnorm_backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, mean: np.ndarray,
                       invstd: np.ndarray, *, training: bool = True,
                       out=None, reduce=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Batch-normalization backward pass, fused: returns ``(dx, dgamma, dbeta)``.

    .. math::

        d\beta = \sum dy, \quad d\gamma = \sum dy\,\hat x, \quad
        dx = \frac{\gamma\,\mathrm{invstd}}{n}\,(n\,dy - d\beta - \hat x\,d\gamma)

    with :math:`\hat x = (x-\mu)\,\mathrm{invstd}` recomputed from x, ``mean``
    and ``invstd`` (as returned by :func:`batchnorm_forward`).  One fused pass
    computes both sums in double (:math:`d\gamma = \mathrm{invstd}\sum dy\,(x-\mu)`),
    one pass writes, in x's dtype (float32 or float64),

    .. math::

        dx = k_1\,dy - k_2 - k_3\,(x - \mu), \quad k_1 = \gamma\,\mathrm{invstd},\
        k_2 = k_1\,d\beta / n,\ k_3 = k_1\,\mathrm{invstd}\,d\gamma / n

    (per-channel coefficients computed in double, rounded once to x's dtype).
    With ``training=False`` (the statistics were constants) :math:`dx = k_1\,dy`:
    x does not enter, so an infinite or NaN x gives a finite dx.  The
    reference computes the same way (see the documentation, "Conventions").

    Parameters
    ----------
    dy, x : ndarray of float32 or float64, same shape (N, C, ...) and dtype
    gamma, mean, invstd : ndarray of x's dtype, (C,)
    training : bool
    out : ndarray for dx, or a tuple (dx, dgamma, dbeta) of arrays or None
        (e.g. views into a FlatParams' grad buffer), of x's dtype.
    reduce : callable ``reduce(n, sum_dy, sum_dy_xmu) -> (n, sum_dy, sum_dy_xmu)``, optional
        x and dy are one part of a batch split over processes (the forward pass had a
        ``reduce``; ``mean`` and ``invstd`` are the whole batch's): called in training with
        this part's count and float64 sums, it returns the count and sums that give dx's
        coefficients :math:`k_2, k_3` (those of the whole batch, as this part weighs them).
        ``dgamma`` and ``dbeta`` stay this part's sums.

    Returns
    -------
    dx : ndarray of x's dtype and shape
    dgamma, dbeta : ndarray of x's dtype, (C,)
    """
    _prewake(x)
    training, N, C, n, outs = _check.batchnorm_backward(dy, x, gamma, mean, invstd, training, out,
                                                        reduce)
    nt = get_num_threads()
    x3, dy3 = _as3d(x, N, C), _as3d(dy, N, C)
    sum_dy = np.zeros(C)
    sum_dy_xmu = np.zeros(C)
    dx = outs[0] if outs[0] is not None else np.empty_like(x)
    if training and reduce is None:
        # both passes and the coefficients between them in one compiled call: the same bits
        # as the NumPy coefficients below, without the caller's gap between the passes
        ext._batchnorm.backward_train(dy3, x3, _as3d(dx, N, C), gamma, mean, invstd, sum_dy,
                                      sum_dy_xmu, n, nt)
        dgamma64 = sum_dy_xmu * invstd.astype(np.float64)
        return dx, _out(outs[1], dgamma64, x.dtype), _out(outs[2], sum_dy, x.dtype)
    mean64 = mean.astype(np.float64)
    if x.size:
        ext._batchnorm.backward_sums(dy3, x3, mean64, sum_dy, sum_dy_xmu, nt)
    invstd64 = invstd.astype(np.float64)
    dbeta64 = sum_dy
    dgamma64 = sum_dy_xmu * invstd64
    k1 = gamma * invstd64
    if training:
        s1, s2 = dbeta64, sum_dy_xmu
        if reduce is not None:      # the whole batch's sums, as this part weighs them
            n, s1, s2 = reduce(n, sum_dy, sum_dy_xmu)
        k2 = k1 * s1 / n
        k3 = k1 * invstd64 * (s2 * invstd64) / n
        if x.size:
            ext._batchnorm.grad_input(dy3, x3, _as3d(dx, N, C), mean, k1.astype(x.dtype),
                                      k2.astype(x.dtype), k3.astype(x.dtype), nt)
    elif x.size:  # dx = k1 * dy, written by the affine pass (dy - 0) * k1 + 0
        zeros = np.zeros(C, x.dtype)
        ext._batchnorm.affine(dy3, _as3d(dx, N, C), zeros, k1.astype(x.dtype), zeros, nt)
    return dx, _out(outs[1], dgamma64, x.dtype), _out(outs[2], dbeta64, x.dtype)


# ------------------------------------------------------------------ weight averaging

__all__ += ["ema_update"]


def ema_update(ema: np.ndarray, param: np.ndarray, *, decay: float) -> None:
    r"""Exponential moving average of the weights, in place: one fused pass.

    .. math::  \bar w \leftarrow \bar w + (1 - \text{decay})\,(w - \bar w)

    with :math:`1 - \text{decay}` rounded once to the buffers' dtype.  Same bits as
    :func:`fastopt.reference.ema_update`, for any thread count.  Over many arrays in one
    call, see :class:`fastopt.optim.EMA`.

    Parameters
    ----------
    ema : ndarray
        The average (float32 or float64, C-contiguous), updated in place.
    param : ndarray
        The current weights, of ``ema``'s shape and dtype.
    decay : float in [0, 1]
        The weight of the old average (1: unchanged; 0: a copy of ``param``).
    """
    decay = _check.ema(ema, param, decay)
    ext._ema.ema_update(ema, param, decay, get_num_threads())
