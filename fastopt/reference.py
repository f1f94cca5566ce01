"""The NumPy reference: every kernel of :mod:`fastopt.kernels`, straight from the formulas.

Same names, same keyword-only signatures, same argument checks, same in-place
semantics as the compiled kernels, so a test, an optimizer
(``impl="reference"``) or a user can swap one for the other.  This module is
the spec: it favours the plain formula over speed (each line walks the whole
array and may allocate a temporary; that is exactly the cost the kernels
remove).  See :mod:`fastopt.kernels` for the maths in the docstrings.
"""

import numpy as np

from . import _check

__all__ = ["sgd_step", "rmsprop_step", "adam_step", "global_norm", "clip_grad_norm_"]


def sgd_step(param, grad, momentum_buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
             weight_decay=0.0):
    """SGD with momentum, in place (NumPy reference of :func:`fastopt.kernels.sgd_step`)."""
    lr, momentum, dampening, nesterov, weight_decay = _check.sgd(
        param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay)
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        momentum_buf[...] = momentum * momentum_buf + (1 - dampening) * g
        d = g + momentum * momentum_buf if nesterov else momentum_buf
    else:
        d = g
    param -= lr * d


def rmsprop_step(param, grad, square_avg, *, lr, alpha=0.9, eps=1e-8, eps_inside_sqrt=True,
                 weight_decay=0.0):
    """RMSprop, in place (NumPy reference of :func:`fastopt.kernels.rmsprop_step`)."""
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _check.rmsprop(
        param, grad, square_avg, lr, alpha, eps, eps_inside_sqrt, weight_decay)
    g = grad + weight_decay * param if weight_decay != 0 else grad
    square_avg[...] = alpha * square_avg + (1 - alpha) * g**2
    if eps_inside_sqrt:
        param -= lr * g / np.sqrt(square_avg + eps)
    else:
        param -= lr * g / (np.sqrt(square_avg) + eps)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled_weight_decay=False):
    """Adam / AdamW, in place (NumPy reference of :func:`fastopt.kernels.adam_step`)."""
    step, lr, beta1, beta2, eps, weight_decay, decoupled = _check.adam(
        param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
        decoupled_weight_decay)
    if decoupled:
        param *= 1 - lr * weight_decay
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g**2
    m_hat = exp_avg / (1 - beta1**step)
    v_hat = exp_avg_sq / (1 - beta2**step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


def global_norm(grad):
    """Euclidean norm of ``grad``, accumulated in float64."""
    _check.array("grad", grad, writable=False)
    g = grad.astype(np.float64)
    return float(np.sqrt(np.sum(g * g)))


def clip_grad_norm_(grad, max_norm):
    """Scale ``grad`` in place to norm <= max_norm; return the norm before clipping."""
    _check.array("grad", grad, writable=True)
    max_norm = _check.positive("max_norm", max_norm)
    norm = global_norm(grad)
    if norm > max_norm:
        grad *= np.float32(max_norm / (norm + 1e-6))
    return norm
