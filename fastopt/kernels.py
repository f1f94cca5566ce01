r"""Fused, in-place kernels (compiled, OpenMP) behind validating wrappers.

Each function here has a twin of the same name and signature in
:mod:`fastopt.reference`, written in plain NumPy straight from the formulas;
the tests hold the kernels to it.  Buffers are C-contiguous ``float32``
arrays of one shape (any shape: they are treated as flat) and are updated in
place.  State buffers start at zero, as in the seed.

Every argument is checked before any buffer is touched: a wrong dtype, shape,
layout, a read-only output, buffers that share memory or an out-of-range
hyperparameter raise ``TypeError``/``ValueError`` naming the argument, and
change nothing.  The kernels release the GIL.
"""

from . import _check
from ._dispatch import ext
from ._threads import get_num_threads

__all__ = ["sgd_step", "rmsprop_step", "adam_step", "global_norm", "clip_grad_norm_"]


def _flat(a):
    return a if a.ndim == 1 else a.reshape(-1)


def sgd_step(param, grad, momentum_buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
             weight_decay=0.0):
    r"""One SGD step (optionally with momentum, Nesterov, weight decay), in place.

    .. math::

        g &= \nabla + \lambda\,\theta \\
        b &\leftarrow \mu\,b + (1-\tau)\,g \qquad\text{(if } \mu > 0) \\
        d &= g + \mu\,b \text{ (nesterov) },\quad b \text{ (momentum) },\quad g \text{ (else)} \\
        \theta &\leftarrow \theta - \eta\,d

    With ``dampening=0`` this is ``torch.optim.SGD`` step for step (its first
    step sets ``b = g``, which is what ``0·b + g`` gives from zeros). With
    ``dampening=momentum`` it is the seed's exponentially weighted momentum
    :math:`v = \beta v + (1-\beta)\,dW,\ w \leftarrow w - \alpha v` (PyTorch
    instead copies ``g`` into the buffer on its first step when dampening is
    non-zero; fastopt, like the seed, starts from zeros).

    Parameters
    ----------
    param : ndarray of float32, updated in place
    grad : ndarray of float32, read only
    momentum_buf : ndarray of float32 or None, updated in place
        Zeros at the start. May be None when ``momentum == 0``.
    lr : float >= 0
    momentum : float in [0, 1)
    dampening : float in [0, 1]
    nesterov : bool (needs momentum > 0 and dampening == 0)
    weight_decay : float >= 0 (L2 penalty added to the gradient)

    Examples
    --------
    >>> import numpy as np, fastopt.kernels as K
    >>> p = np.ones(3, np.float32); g = np.full(3, 0.5, np.float32)
    >>> buf = np.zeros(3, np.float32)
    >>> K.sgd_step(p, g, buf, lr=0.1, momentum=0.9)
    >>> p
    array([0.95, 0.95, 0.95], dtype=float32)
    """
    lr, momentum, dampening, nesterov, weight_decay = _check.sgd(
        param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay)
    ext._optim.sgd_step(_flat(param), _flat(grad),
                        _flat(momentum_buf) if momentum != 0 else None,
                        lr, momentum, dampening, nesterov, weight_decay, get_num_threads())


def rmsprop_step(param, grad, square_avg, *, lr, alpha=0.9, eps=1e-8, eps_inside_sqrt=True,
                 weight_decay=0.0):
    r"""One RMSprop step, in place.

    .. math::

        g &= \nabla + \lambda\,\theta \\
        s &\leftarrow \alpha\,s + (1-\alpha)\,g^2 \\
        \theta &\leftarrow \theta - \eta\,\frac{g}{\sqrt{s + \epsilon}}
              \quad\text{(seed, eps_inside_sqrt=True)} \quad\text{or}\quad
              \theta - \eta\,\frac{g}{\sqrt{s} + \epsilon} \quad\text{(PyTorch)}

    The seed puts ε inside the square root; ``torch.optim.RMSprop`` adds it
    outside (``eps_inside_sqrt=False``).  PyTorch's default ``alpha`` is
    0.99; fastopt follows the seed's β ≈ 0.9.

    Parameters
    ----------
    param : ndarray of float32, updated in place
    grad : ndarray of float32, read only
    square_avg : ndarray of float32, updated in place (zeros at the start)
    lr : float >= 0
    alpha : float in [0, 1)
    eps : float > 0
    eps_inside_sqrt : bool
    weight_decay : float >= 0
    """
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _check.rmsprop(
        param, grad, square_avg, lr, alpha, eps, eps_inside_sqrt, weight_decay)
    ext._optim.rmsprop_step(_flat(param), _flat(grad), _flat(square_avg), lr, alpha, eps,
                            eps_inside_sqrt, weight_decay, get_num_threads())


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled_weight_decay=False):
    r"""One Adam (or AdamW) step, in place; ``step`` counts from 1.

    .. math::

        \theta &\leftarrow (1 - \eta\lambda)\,\theta,\ g = \nabla
                 \quad\text{(decoupled, AdamW)} \quad\text{else}\quad
                 g = \nabla + \lambda\,\theta \quad\text{(L2, torch.optim.Adam)} \\
        m &\leftarrow \beta_1 m + (1-\beta_1)\,g \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\,g^2 \\
        \theta &\leftarrow \theta - \eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

    This is the seed's Adam, and ``torch.optim.Adam``/``AdamW`` step for step.

    Parameters
    ----------
    param : ndarray of float32, updated in place
    grad : ndarray of float32, read only
    exp_avg, exp_avg_sq : ndarray of float32, updated in place (zeros at the start)
    step : int >= 1
    lr : float >= 0
    beta1, beta2 : float in [0, 1)
    eps : float > 0
    weight_decay : float >= 0
    decoupled_weight_decay : bool
    """
    step, lr, beta1, beta2, eps, weight_decay, decoupled = _check.adam(
        param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
        decoupled_weight_decay)
    ext._optim.adam_step(_flat(param), _flat(grad), _flat(exp_avg), _flat(exp_avg_sq),
                         lr, beta1, beta2, eps, weight_decay, decoupled, step, get_num_threads())


def global_norm(grad):
    r"""The Euclidean norm :math:`\sqrt{\sum g_i^2}` of a float32 buffer, as a Python float.

    Accumulated in double over fixed blocks added in order: the same bits for
    any thread count.
    """
    _check.array("grad", grad, writable=False)
    return ext._optim.sum_of_squares(_flat(grad), get_num_threads()) ** 0.5


def clip_grad_norm_(grad, max_norm):
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
