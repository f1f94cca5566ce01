"""NumPy twins of :mod:`fastopt.kernels.lowbit`: optimizer steps with bfloat16 or int8 state.

Same names, keyword-only signatures, checks and in-place semantics as the compiled kernels.
Each step is written from the formulas: widen the state to float32
(:func:`bf16_to_float32`, :func:`dequantize_blockwise`), run the float32 reference update of
:mod:`fastopt.reference` (same operations, same order), update the parameter from the
unrounded new state, narrow it (:func:`float32_to_bf16` with ``rounding="stochastic"``,
:func:`quantize_blockwise`, which finds codes with a sorted search over the thresholds, not
the kernels' bucket table).  The formats are specified in :mod:`fastopt.kernels._formats`.
"""

import math

import numpy as np

from ..kernels import _check
from ..kernels import _check_lowbit as _c
from ..kernels._formats import (QBLOCK, QuantMap, absmax_size, bf16_to_float32,
                                dequantize_blockwise, dynamic_map, float32_to_bf16,
                                quantize_blockwise, signed_map, unsigned_map, zeros_bf16,
                                zeros_int8)
from ..kernels.lowbit import state_bytes

__all__ = ["adam_step_bf16", "adam_step_int8", "rmsprop_step_bf16", "rmsprop_step_int8",
           "sgd_step_bf16", "sgd_step_int8",
           "QBLOCK", "QuantMap", "dynamic_map", "signed_map", "unsigned_map", "absmax_size",
           "zeros_bf16", "zeros_int8", "bf16_to_float32", "float32_to_bf16",
           "quantize_blockwise", "dequantize_blockwise", "state_bytes"]


def _adam(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """fastopt.reference.adam_step on widened state: returns the new (m, v), updates param."""
    if decoupled:
        param *= 1 - lr * weight_decay
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    c1 = lr / (1 - beta1**step)
    c2 = 1 / math.sqrt(1 - beta2**step)
    param -= m / (np.sqrt(v) * c2 + eps) * c1
    return m, v


def _rmsprop(param, grad, s, lr, alpha, eps, eps_inside_sqrt, weight_decay):
    g = grad + weight_decay * param if weight_decay != 0 else grad
    s = alpha * s + (1 - alpha) * g**2
    if eps_inside_sqrt:
        param -= lr * g / np.sqrt(s + eps)
    else:
        param -= lr * g / (np.sqrt(s) + eps)
    return s


def _sgd(param, grad, b, lr, momentum, dampening, nesterov, weight_decay):
    g = grad + weight_decay * param if weight_decay != 0 else grad
    b = momentum * b + (1 - dampening) * g
    param -= lr * (g + momentum * b if nesterov else b)
    return b


def _store_bf16(out, x, seed, step, buffer, offset):
    out[...] = float32_to_bf16(x, rounding="stochastic", seed=seed, step=step, buffer=buffer,
                               offset=offset)


def adam_step_bf16(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999,
                   eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, seed=0,
                   index_offset=0):
    """Adam / AdamW with bfloat16 moments (NumPy twin of the kernel of the same name)."""
    step, lr, beta1, beta2, eps, weight_decay, decoupled = _c.adam(
        param, grad, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay)
    mb = _c.bf16("exp_avg", exp_avg, param)
    vb = _c.bf16("exp_avg_sq", exp_avg_sq, param)
    seed, index_offset = _c.seed_offset(seed, index_offset, param.size)
    _check.disjoint(param=param, grad=grad, exp_avg=mb, exp_avg_sq=vb)
    m, v = _adam(param, grad, bf16_to_float32(mb), bf16_to_float32(vb), step, lr, beta1, beta2,
                 eps, weight_decay, decoupled)
    _store_bf16(mb, m, seed, step, 0, index_offset)
    _store_bf16(vb, v, seed, step, 1, index_offset)


def adam_step_int8(param, grad, exp_avg, exp_avg_absmax, exp_avg_sq, exp_avg_sq_absmax, *,
                   step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                   decoupled_weight_decay=False, exp_avg_map=None, exp_avg_sq_map=None):
    """Adam / AdamW with int8 moments (NumPy twin of the kernel of the same name)."""
    step, lr, beta1, beta2, eps, weight_decay, decoupled = _c.adam(
        param, grad, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay)
    _c.int8("exp_avg", exp_avg, exp_avg_absmax, param)
    _c.int8("exp_avg_sq", exp_avg_sq, exp_avg_sq_absmax, param)
    qm = _c.qmap("exp_avg_map", exp_avg_map, signed_map)
    qv = _c.qmap("exp_avg_sq_map", exp_avg_sq_map, unsigned_map)
    _check.disjoint(param=param, grad=grad, exp_avg=exp_avg, exp_avg_absmax=exp_avg_absmax,
                    exp_avg_sq=exp_avg_sq, exp_avg_sq_absmax=exp_avg_sq_absmax)
    m, v = _adam(param, grad, dequantize_blockwise(exp_avg, exp_avg_absmax, qm),
                 dequantize_blockwise(exp_avg_sq, exp_avg_sq_absmax, qv), step, lr, beta1,
                 beta2, eps, weight_decay, decoupled)
    quantize_blockwise(m, qm, exp_avg, exp_avg_absmax)
    quantize_blockwise(v, qv, exp_avg_sq, exp_avg_sq_absmax)


def rmsprop_step_bf16(param, grad, square_avg, *, step, lr, alpha=0.9, eps=1e-8,
                      eps_inside_sqrt=True, weight_decay=0.0, seed=0, index_offset=0):
    """RMSprop with a bfloat16 square average (NumPy twin)."""
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _c.rmsprop(
        param, grad, lr, alpha, eps, eps_inside_sqrt, weight_decay)
    sb = _c.bf16("square_avg", square_avg, param)
    step = _c.step(step)
    seed, index_offset = _c.seed_offset(seed, index_offset, param.size)
    _check.disjoint(param=param, grad=grad, square_avg=sb)
    s = _rmsprop(param, grad, bf16_to_float32(sb), lr, alpha, eps, eps_inside_sqrt, weight_decay)
    _store_bf16(sb, s, seed, step, 1, index_offset)


def rmsprop_step_int8(param, grad, square_avg, square_avg_absmax, *, lr, alpha=0.9, eps=1e-8,
                      eps_inside_sqrt=True, weight_decay=0.0, square_avg_map=None):
    """RMSprop with an int8 square average (NumPy twin)."""
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _c.rmsprop(
        param, grad, lr, alpha, eps, eps_inside_sqrt, weight_decay)
    _c.int8("square_avg", square_avg, square_avg_absmax, param)
    q = _c.qmap("square_avg_map", square_avg_map, unsigned_map)
    _check.disjoint(param=param, grad=grad, square_avg=square_avg,
                    square_avg_absmax=square_avg_absmax)
    s = _rmsprop(param, grad, dequantize_blockwise(square_avg, square_avg_absmax, q), lr, alpha,
                 eps, eps_inside_sqrt, weight_decay)
    quantize_blockwise(s, q, square_avg, square_avg_absmax)


def sgd_step_bf16(param, grad, momentum_buf, *, step, lr, momentum, dampening=0.0,
                  nesterov=False, weight_decay=0.0, seed=0, index_offset=0):
    """SGD with a bfloat16 momentum buffer (NumPy twin)."""
    lr, momentum, dampening, nesterov, weight_decay = _c.sgd(
        param, grad, lr, momentum, dampening, nesterov, weight_decay)
    bb = _c.bf16("momentum_buf", momentum_buf, param)
    step = _c.step(step)
    seed, index_offset = _c.seed_offset(seed, index_offset, param.size)
    _check.disjoint(param=param, grad=grad, momentum_buf=bb)
    b = _sgd(param, grad, bf16_to_float32(bb), lr, momentum, dampening, nesterov, weight_decay)
    _store_bf16(bb, b, seed, step, 0, index_offset)


def sgd_step_int8(param, grad, momentum_buf, momentum_buf_absmax, *, lr, momentum,
                  dampening=0.0, nesterov=False, weight_decay=0.0, momentum_buf_map=None):
    """SGD with an int8 momentum buffer (NumPy twin)."""
    lr, momentum, dampening, nesterov, weight_decay = _c.sgd(
        param, grad, lr, momentum, dampening, nesterov, weight_decay)
    _c.int8("momentum_buf", momentum_buf, momentum_buf_absmax, param)
    q = _c.qmap("momentum_buf_map", momentum_buf_map, signed_map)
    _check.disjoint(param=param, grad=grad, momentum_buf=momentum_buf,
                    momentum_buf_absmax=momentum_buf_absmax)
    b = _sgd(param, grad, dequantize_blockwise(momentum_buf, momentum_buf_absmax, q), lr,
             momentum, dampening, nesterov, weight_decay)
    quantize_blockwise(b, q, momentum_buf, momentum_buf_absmax)
