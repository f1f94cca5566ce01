"""The optimizers: SGD, Momentum, RMSprop, Adam and AdamW.

Each class names its kernel in :data:`fastopt.optim.SPECS`, checks its hyperparameters and
maps them to the kernel's keywords; everything else (parameters, groups, state formats,
the compiled plan, the step, state dicts) is :class:`~fastopt.optim.optimizer.Optimizer`'s.
"""

from ..kernels import _check
from .optimizer import _OPTIONS_DOC, LR, Groups, Impl, Optimizer, Params
from .registry import SPECS

__all__ = ["SGD", "Momentum", "RMSprop", "Adam", "AdamW"]


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    See :func:`fastopt.kernels.sgd_step` for the update rule. With
    ``dampening=0`` (the default) it matches ``torch.optim.SGD`` step for step;
    :class:`Momentum` is the seed's exponentially weighted variant.

    Parameters
    ----------
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays (``step(grads)`` then takes the matching
        list or dict of gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    momentum : float in [0, 1), default 0.0
    dampening : float in [0, 1], default 0.0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient.
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"w": (2,)})
    >>> opt = fastopt.SGD(fp, lr=0.1, momentum=0.9)
    >>> fp.grads["w"][...] = [1.0, -1.0]
    >>> opt.step()
    >>> fp.params["w"]
    array([-0.1,  0.1], dtype=float32)

    A dict of float64 arrays, as many NumPy models keep them:

    >>> params = {"W": np.ones((2, 2)), "b": np.zeros(2)}
    >>> opt = fastopt.SGD(params, lr=0.5)
    >>> opt.step({"W": np.ones((2, 2)), "b": np.ones(2)})
    >>> params["b"]
    array([-0.5, -0.5])
    """

    _kernel = "sgd"
    _hyper_names = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, params: Params, lr: LR, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay, impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)

    @property
    def _state_names(self):
        # momentum buffers when the optimizer or any group has momentum
        if self.momentum != 0 or any(g.get("momentum", 0) != 0 for g in self.param_groups):
            return SPECS["sgd"].state
        return ()

    def _validate_hyper(self, h, loading=False):
        _, m, _, _, _ = _check.sgd_hyper(_check.UNCHECKED, h["momentum"], h["dampening"],
                                         h["nesterov"], h["weight_decay"], self._f32)
        states = self.__dict__.get("_states")
        if loading and m != 0 and states is not None and "momentum_buf" not in states:
            raise ValueError("momentum cannot become non-zero: this optimizer was built without "
                             "momentum, so it has no momentum buffers")
        if loading and m == 0 and states and any(self._tensor_lowbit):
            raise ValueError(f"momentum must stay > 0 with state_dtype={self.state_dtype!r} "
                             "(the low-precision momentum kernels need momentum > 0)")

    def _kernel_kwargs(self, t, h):
        return dict(lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                    nesterov=h["nesterov"], weight_decay=h["weight_decay"])


class Momentum(SGD):
    r"""The seed's gradient descent with momentum (an exponentially weighted average).

    .. math::  v \leftarrow \beta v + (1-\beta)\,dW, \qquad w \leftarrow w - \alpha v

    Same as ``SGD(params, lr, momentum=beta, dampening=beta)``. Compared with
    PyTorch-style momentum (``dampening=0``), the step is ``(1-β)`` times
    smaller for the same ``lr``: multiply ``lr`` by ``1/(1-β)`` to compare.

    Parameters
    ----------
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays (``step(grads)`` then takes the matching
        list or dict of gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    beta : float in (0, 1), default 0.9
%(options)s
    """

    def __init__(self, params: Params, lr: LR, beta: float = 0.9, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        beta = _check.unit_interval("beta", beta)
        if beta == 0:
            raise ValueError("beta must be in (0, 1) for momentum; use SGD for plain descent")
        super().__init__(params, lr, momentum=beta, dampening=beta, impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)

    def _config(self):
        config = super()._config()
        config["beta"] = config.pop("momentum")
        for k in ("dampening", "nesterov", "weight_decay"):
            del config[k]
        return config

    def like(self, params: Params, **overrides) -> "Momentum":
        new = super().like(params, **overrides)
        # the hyperparameters set since construction (beta sets momentum and dampening)
        keep = {k: getattr(self, k) for k in self._hyper_names
                if not ("beta" in overrides and k in ("momentum", "dampening"))}
        if any(getattr(new, k) != v for k, v in keep.items()):
            new._validate_hyper({**new.hyper(), **keep}, loading=True)
            for k, v in keep.items():
                object.__setattr__(new, k, v)
            new._checked_groups = None
            new._group_hyper()
        return new

    like.__doc__ = Optimizer.like.__doc__


class RMSprop(Optimizer):
    r"""RMSprop, with ε inside the square root as in the seed (``eps_inside_sqrt=True``).

    See :func:`fastopt.kernels.rmsprop_step`. ``eps_inside_sqrt=False`` and
    ``alpha=0.99`` give ``torch.optim.RMSprop``'s rule and default.

    Parameters
    ----------
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays (``step(grads)`` then takes the matching
        list or dict of gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    alpha : float in [0, 1), default 0.9
        The seed's β: the weight of the old mean square.
    eps : float > 0, default 1e-8
    eps_inside_sqrt : bool, default True
        The seed's ``g / sqrt(s + eps)``; False: PyTorch's ``g / (sqrt(s) + eps)``.
    weight_decay : float >= 0, default 0.0
%(options)s
    """

    _kernel = "rmsprop"
    _hyper_names = ("alpha", "eps", "eps_inside_sqrt", "weight_decay")

    def __init__(self, params: Params, lr: LR, alpha: float = 0.9, eps: float = 1e-8,
                 eps_inside_sqrt: bool = True, weight_decay: float = 0.0, *,
                 impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, alpha=alpha, eps=eps, eps_inside_sqrt=eps_inside_sqrt,
                         weight_decay=weight_decay, impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)

    def _validate_hyper(self, h, loading=False):
        _check.rmsprop_hyper(_check.UNCHECKED, h["alpha"], h["eps"], h["eps_inside_sqrt"],
                             h["weight_decay"], self._f32)

    def _kernel_kwargs(self, t, h):
        return dict(lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                    eps_inside_sqrt=h["eps_inside_sqrt"], weight_decay=h["weight_decay"])


class Adam(Optimizer):
    r"""Adam (the seed's, with bias correction), L2 weight decay as ``torch.optim.Adam``.

    See :func:`fastopt.kernels.adam_step`.

    Parameters
    ----------
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays (``step(grads)`` then takes the matching
        list or dict of gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient (as ``torch.optim.Adam``).
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"w": (3,)})
    >>> opt = fastopt.Adam(fp, lr=0.01)
    >>> fp.grads["w"][...] = [0.5, -2.0, 0.0]
    >>> opt.step()                     # the first step moves by lr·sign(g)
    >>> np.round(fp.params["w"], 6)
    array([-0.01,  0.01,  0.  ], dtype=float32)
    """

    _kernel = "adam"
    _hyper_names = ("betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)

    def _validate_hyper(self, h, loading=False):
        betas = h["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check.adam_hyper(_check.UNCHECKED, betas[0], betas[1], h["eps"], h["weight_decay"],
                          self._decoupled, None, self._f32, names=("betas[0]", "betas[1]"))

    def _kernel_kwargs(self, t, h):
        lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
        key = (lr, b1, b2, eps, wd)
        checked = self.__dict__.setdefault("_checked_steps", {})
        if checked.get(key, t + 1) > t:
            # lr / (1 - beta1**t) only shrinks as t grows: one check holds for later steps
            # until the hyperparameters change (or the step count goes back, on loading)
            _check.adam_hyper(lr, b1, b2, eps, wd, self._decoupled, t, self._f32)
            if len(checked) > 64:
                checked.clear()
            checked[key] = t
        return dict(lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                    decoupled_weight_decay=self._decoupled, step=t)


class AdamW(Adam):
    r"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Each step first shrinks the parameters, :math:`\theta \leftarrow (1 -
    \eta\lambda)\theta`, then takes the Adam step on the raw gradient.

    Parameters
    ----------
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays (``step(grads)`` then takes the matching
        list or dict of gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 1e-2
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
%(options)s
    """

    _kernel = "adamw"
    _decoupled = True

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


for _cls in (SGD, Momentum, RMSprop, Adam, AdamW):
    if _cls.__doc__:   # (None under python -OO)
        _cls.__doc__ = _cls.__doc__.replace("%(options)s", _OPTIONS_DOC)
