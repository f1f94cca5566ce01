"""The NumPy reference: every kernel of :mod:`fastopt.kernels`, straight from the formulas.

Same names, same keyword-only signatures, same argument checks, same in-place
semantics as the compiled kernels, so a test, an optimizer
(``impl="reference"``) or a user can swap one for the other.  This module is
the spec: it favours the plain formula over speed (each line walks the whole
array and may allocate a temporary; that is exactly the cost the kernels
remove).  See :mod:`fastopt.kernels` for the maths in the docstrings.
"""

import math

import numpy as np

from ..kernels import _check
from ..specs import BY_NAME as KERNELS

__all__ = ["sgd_step", "rmsprop_step", "adam_step", "adagrad_step", "lion_step", "adamax_step",
           "radam_step", "nadam_step", "amsgrad_step", "global_norm", "clip_grad_norm_"]


def sgd_step(param: np.ndarray, grad: np.ndarray, momentum_buf: np.ndarray | None, *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
             weight_decay: float = 0.0) -> None:
    """SGD with momentum, in place (NumPy reference of :func:`fastopt.kernels.sgd_step`)."""
    _, (lr, momentum, dampening, nesterov, weight_decay) = _check.step_args(
        KERNELS["sgd"], param, grad, (momentum_buf,),
        (lr, momentum, dampening, nesterov, weight_decay))
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        momentum_buf[...] = momentum * momentum_buf + (1 - dampening) * g
        d = g + momentum * momentum_buf if nesterov else momentum_buf
    else:
        d = g
    param -= lr * d


def rmsprop_step(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, *, lr: float,
                 alpha: float = 0.9, eps: float = 1e-8, eps_inside_sqrt: bool = True,
                 weight_decay: float = 0.0) -> None:
    """RMSprop, in place (NumPy reference of :func:`fastopt.kernels.rmsprop_step`)."""
    _, (lr, alpha, eps, eps_inside_sqrt, weight_decay) = _check.step_args(
        KERNELS["rmsprop"], param, grad, (square_avg,),
        (lr, alpha, eps, eps_inside_sqrt, weight_decay))
    g = grad + weight_decay * param if weight_decay != 0 else grad
    square_avg[...] = alpha * square_avg + (1 - alpha) * g**2
    if eps_inside_sqrt:
        param -= lr * g / np.sqrt(square_avg + eps)
    else:
        param -= lr * g / (np.sqrt(square_avg) + eps)


def adam_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
              step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, decoupled_weight_decay: bool = False) -> None:
    """Adam / AdamW, in place (NumPy reference of :func:`fastopt.kernels.adam_step`)."""
    step, (lr, beta1, beta2, eps, weight_decay, decoupled) = _check.step_args(
        KERNELS["adam"], param, grad, (exp_avg, exp_avg_sq),
        (lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay), step)
    if decoupled:
        param *= 1 - lr * weight_decay
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g**2
    # lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t),
    # as Kingma & Ba's efficient form (and PyTorch) order it: the corrections scale sqrt(v) and
    # m / denom, so no intermediate overflows (m_hat, v_hat alone could) and subnormal moments
    # keep their bits.
    c1 = lr / (1 - beta1**step)
    c2 = 1 / math.sqrt(1 - beta2**step)
    denom = np.sqrt(exp_avg_sq) * c2 + eps
    param -= exp_avg / denom * c1


def adagrad_step(param: np.ndarray, grad: np.ndarray, sum: np.ndarray, *, step: int, lr: float,
                 lr_decay: float = 0.0, eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0) -> None:
    """Adagrad, in place (NumPy reference of :func:`fastopt.kernels.adagrad_step`), in
    ``torch.optim.Adagrad``'s order of operations."""
    step, (lr, lr_decay, eps, weight_decay, _) = _check.step_args(
        KERNELS["adagrad"], param, grad, (sum,),
        (lr, lr_decay, eps, weight_decay, initial_accumulator_value), step)
    g = grad + weight_decay * param if weight_decay != 0 else grad
    clr = lr / (1 + (step - 1) * lr_decay)
    sum[...] = sum + g * g
    param -= clr * (g / (np.sqrt(sum) + eps))


def lion_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, *, lr: float,
              beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0) -> None:
    """Lion, in place (NumPy reference of :func:`fastopt.kernels.lion_step`), from Chen et
    al. 2023, Algorithm 2: the update interpolates with beta1, the momentum with beta2."""
    _, (lr, beta1, beta2, weight_decay) = _check.step_args(
        KERNELS["lion"], param, grad, (exp_avg,), (lr, beta1, beta2, weight_decay))
    c = beta1 * exp_avg + (1 - beta1) * grad
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    param -= lr * np.sign(c)
    exp_avg[...] = beta2 * exp_avg + (1 - beta2) * grad


def adamax_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_inf: np.ndarray, *,
                step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0) -> None:
    """Adamax, in place (NumPy reference of :func:`fastopt.kernels.adamax_step`), in
    ``torch.optim.Adamax``'s order of operations (``|g|`` as ``max(g, 0 - g)``, the maximum
    as ``a > b ? a : b``, as the kernel)."""
    step, (lr, beta1, beta2, eps, weight_decay) = _check.step_args(
        KERNELS["adamax"], param, grad, (exp_avg, exp_inf), (lr, beta1, beta2, eps, weight_decay),
        step)
    dt = param.dtype.type
    g = grad + dt(weight_decay) * param if weight_decay != 0 else grad
    neg = dt(0) - g
    absg = np.where(g > neg, g, neg)
    exp_avg[...] = exp_avg + dt(1 - beta1) * (g - exp_avg)
    a = exp_inf * dt(beta2)
    b = absg + dt(eps)
    exp_inf[...] = np.where(a > b, a, b)
    param -= dt(lr / (1 - beta1 ** step)) * (exp_avg / exp_inf)


def radam_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
               *, step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 0.0,
               decoupled_weight_decay: bool = False) -> None:
    """RAdam, in place (NumPy reference of :func:`fastopt.kernels.radam_step`), in
    ``torch.optim.RAdam``'s order of operations; the per-step constants in double."""
    step, (lr, beta1, beta2, eps, weight_decay, decoupled) = _check.step_args(
        KERNELS["radam"], param, grad, (exp_avg, exp_avg_sq),
        (lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay), step)
    dt = param.dtype.type
    if weight_decay != 0 and decoupled:
        param *= dt(1 - lr * weight_decay)
        g = grad
    else:
        g = grad + dt(weight_decay) * param if weight_decay != 0 else grad
    exp_avg[...] = exp_avg + dt(1 - beta1) * (g - exp_avg)
    exp_avg_sq[...] = exp_avg_sq * dt(beta2) + (dt(1 - beta2) * g) * g
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / (1.0 - beta2**step)
    u = exp_avg / dt(1 - beta1**step) * dt(lr)
    if rho_t > 5.0:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        adaptive = dt(1) / (np.sqrt(exp_avg_sq) + dt(eps)) * dt(math.sqrt(1.0 - beta2**step))
        u = u * adaptive * dt(rect)
    param -= u
def _nadam_mu(beta1: float, momentum_decay: float, step: int) -> float:
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def _nadam_mu_product(beta1: float, momentum_decay: float, step: int) -> np.float32:
    """prod_{i<=step} mu_i as torch.optim.NAdam keeps it: a float32 scalar times each mu_i
    rounded to float32.  mu_i never decreases, so once a factor leaves the product unchanged
    (0, or a denormal) it stays so: the loop ends there (a huge step does not hang)."""
    prod = np.float32(1.0)
    for i in range(1, step + 1):
        nxt = np.float32(prod * np.float32(_nadam_mu(beta1, momentum_decay, i)))
        if nxt == prod:
            break
        prod = nxt
    return prod


def nadam_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
               *, step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
               decoupled_weight_decay: bool = False) -> None:
    """NAdam, in place (NumPy reference of :func:`fastopt.kernels.nadam_step`), in
    ``torch.optim.NAdam``'s order of operations; its product of momentum caches a float32
    scalar, as torch keeps it."""
    step, (lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled) = _check.step_args(
        KERNELS["nadam"], param, grad, (exp_avg, exp_avg_sq),
        (lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay), step)
    prod = _nadam_mu_product(beta1, momentum_decay, step)
    mu = _nadam_mu(beta1, momentum_decay, step)
    mu_next = _nadam_mu(beta1, momentum_decay, step + 1)
    cg = lr * (1.0 - mu) / (1.0 - float(prod))
    cm = lr * mu_next / (1.0 - float(prod) * mu_next)
    if decoupled:
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * (g * g)
    d = np.sqrt(exp_avg_sq / (1.0 - beta2**step)) + eps
    if decoupled:
        param *= 1 - lr * weight_decay
    param -= cg * (g / d)
    param -= cm * (exp_avg / d)


def amsgrad_step(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                 exp_avg_sq: np.ndarray, max_exp_avg_sq: np.ndarray, *, step: int, lr: float,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False) -> None:
    """AMSGrad, in place (NumPy reference of :func:`fastopt.kernels.amsgrad_step`), in the
    order of ``torch.optim.Adam(amsgrad=True)``."""
    step, (lr, beta1, beta2, eps, weight_decay, decoupled) = _check.step_args(
        KERNELS["amsgrad"], param, grad, (exp_avg, exp_avg_sq, max_exp_avg_sq),
        (lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay), step)
    if decoupled:
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * (g * g)
    # fo_max(vmax, v) of fo_rules.h: vmax > v ? vmax : v (v when either is NaN)
    max_exp_avg_sq[...] = np.where(max_exp_avg_sq > exp_avg_sq, max_exp_avg_sq, exp_avg_sq)
    if decoupled:
        param *= 1 - lr * weight_decay
    denom = np.sqrt(max_exp_avg_sq) / ((1 - beta2**step) ** 0.5) + eps
    param -= exp_avg / denom * (lr / (1 - beta1**step))


def global_norm(grad: np.ndarray) -> float:
    """Euclidean norm of ``grad``, accumulated in float64."""
    _check.array("grad", grad, writable=False)
    g = grad.astype(np.float64)
    return float(np.sqrt(np.sum(g * g)))


def clip_grad_norm_(grad: np.ndarray, max_norm: float) -> float:
    """Scale ``grad`` in place to norm <= max_norm; return the norm before clipping."""
    _check.array("grad", grad, writable=True)
    max_norm = _check.positive("max_norm", max_norm)
    norm = global_norm(grad)
    if norm > max_norm:
        grad *= grad.dtype.type(max_norm / (norm + 1e-6))  # the factor rounded to grad's dtype
    return norm


# ------------------------------------------------------------------ batch normalization

__all__ += ["batchnorm_forward", "batchnorm_backward"]


def _bn_axes(x):
    """Axes to reduce over and the shape that broadcasts a (C,) vector against x."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return axes, shape


def _store(o, value, dtype):
    """value (float64, shape (C,)) in ``dtype`` (x's), written into o when given."""
    if o is None:
        return value.astype(dtype)
    o[...] = value
    return o


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      running_mean: np.ndarray | None, running_var: np.ndarray | None, *,
                      training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                      out=None, reduce=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch-norm forward (NumPy reference of :func:`fastopt.kernels.batchnorm_forward`).

    float32 or float64: statistics in double, y in x's dtype.
    """
    training, N, C, n, momentum, eps, outs = _check.batchnorm_forward(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, out, reduce)
    axes, shape = _bn_axes(x)
    if training:
        mu, var = np.zeros(C), np.zeros(C)
        if n:
            mu = x.mean(axis=axes, dtype=np.float64)
            var = x.var(axis=axes, dtype=np.float64)      # biased: divides by n
        if reduce is not None:                            # the whole batch's, of all parts
            n, mu, var = reduce(n, mu, var)
            _check.batchnorm_count(n)
    else:
        mu = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    mean = _store(outs[1], mu, x.dtype)
    invstd = _store(outs[2], 1.0 / np.sqrt(var + eps), x.dtype)
    # y = gamma (x - mu) invstd + beta, in x's dtype, scaled by the per-channel gamma * invstd
    # (as the kernel: (x - mu) * invstd alone could overflow where y does not)
    y = (x - mean.reshape(shape)) * (gamma * invstd).reshape(shape) + beta.reshape(shape)
    if outs[0] is not None:
        outs[0][...] = y
        y = outs[0]
    if training and running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean + momentum * mu
        running_var[...] = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    return y, mean, invstd


def batchnorm_backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, mean: np.ndarray,
                       invstd: np.ndarray, *, training: bool = True,
                       out=None, reduce=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch-norm backward (NumPy reference of :func:`fastopt.kernels.batchnorm_backward`).

    float32 or float64: sums and coefficients in double, dx in x's dtype.
    """
    training, N, C, n, outs = _check.batchnorm_backward(dy, x, gamma, mean, invstd, training, out,
                                                        reduce)
    axes, shape = _bn_axes(x)

    def per_channel(v):  # a (C,) vector in x's dtype, broadcasting against x
        return v.astype(x.dtype).reshape(shape)

    invstd64 = invstd.astype(np.float64)
    # The sums in double: dbeta = sum dy, dgamma = sum dy * x_hat = invstd * sum dy (x - mu).
    dbeta = dy.sum(axis=axes, dtype=np.float64)
    sum_dy_xmu = (dy * (x.astype(np.float64) - mean.astype(np.float64).reshape(shape))).sum(
        axis=axes)
    dgamma = sum_dy_xmu * invstd64
    # dx = gamma invstd / n (n dy - dbeta - x_hat dgamma) = k1 dy - k2 - k3 (x - mu), with the
    # coefficients in double, then x's dtype throughout (in float32, n dy or x_hat dgamma alone
    # could overflow where dx does not).
    k1 = gamma * invstd64
    if training:
        s1, s2 = dbeta, sum_dy_xmu
        if reduce is not None:      # the whole batch's sums, as this part weighs them
            n, s1, s2 = reduce(n, dbeta, sum_dy_xmu)
        k2 = k1 * s1 / n
        k3 = k1 * invstd64 * (s2 * invstd64) / n
        dx = per_channel(k1) * dy - per_channel(k2) - per_channel(k3) * (x - mean.reshape(shape))
    else:
        dx = dy * per_channel(k1)  # the statistics were constants: x does not enter
    if outs[0] is not None:
        outs[0][...] = dx
        dx = outs[0]
    return dx, _store(outs[1], dgamma, x.dtype), _store(outs[2], dbeta, x.dtype)


# ------------------------------------------------------------------ weight averaging

__all__ += ["ema_update"]


def ema_update(ema: np.ndarray, param: np.ndarray, *, decay: float) -> None:
    """``ema += (1 - decay) * (param - ema)`` in the buffers' dtype (the twin of
    :func:`fastopt.kernels.ema_update`)."""
    decay = _check.ema(ema, param, decay)
    c = ema.dtype.type(1.0 - decay)
    ema += c * (param - ema)
