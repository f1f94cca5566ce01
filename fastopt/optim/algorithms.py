"""The optimizers: SGD, Momentum, RMSprop, Adam, AdamW, Adagrad, Lion, Adamax, RAdam, NAdam
and AMSGrad.

Each class is a docstring, an explicit constructor and its entry of the registry
(``_spec``: its name, kernel, PyTorch twin, benchmark row; defining the class registers
it in :data:`fastopt.optim.SPECS`).  Its hyperparameters' names, checks and order, its
kernel's arguments and its state buffers follow from the kernel's row of
:data:`fastopt.specs.KERNELS`; everything else (parameters, groups, state formats, the
compiled plan, the step, state dicts) is :class:`~fastopt.optim.optimizer.Optimizer`'s.
The docstrings' shared parts are filled in (%(params)s, %(lr)s, %(options)s).
"""

import inspect

import numpy as np

from ..kernels import _check
from .optimizer import LR, Groups, Impl, Optimizer, Params
from .registry import SPECS, spec


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    See :func:`fastopt.kernels.sgd_step` for the update rule. With
    ``dampening=0`` (the default) it matches ``torch.optim.SGD`` step for step;
    :class:`Momentum` is the seed's exponentially weighted variant.

    Parameters
    ----------
%(params)s
%(lr)s
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

    _spec = spec("sgd", "sgd", example=dict(lr=1e-3, momentum=0.9),
                 torch=("SGD", dict(lr=1e-3, momentum=0.9, fused=True)), beta="momentum",
                 label="sgd-momentum")

    def __init__(self, params: Params, lr: LR, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay, impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class Momentum(SGD):
    r"""The seed's gradient descent with momentum (an exponentially weighted average).

    .. math::  v \leftarrow \beta v + (1-\beta)\,dW, \qquad w \leftarrow w - \alpha v

    Same as ``SGD(params, lr, momentum=beta, dampening=beta)``. Compared with
    PyTorch-style momentum (``dampening=0``), the step is ``(1-β)`` times
    smaller for the same ``lr``: multiply ``lr`` by ``1/(1-β)`` to compare.

    Parameters
    ----------
%(params)s
%(lr)s
    beta : float in (0, 1), default 0.9
%(options)s
    """

    _spec = spec("momentum", "sgd", example=dict(lr=1e-3, momentum=0.9, dampening=0.9),
                 beta="beta")

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
%(params)s
%(lr)s
    alpha : float in [0, 1), default 0.9
        The seed's β: the weight of the old mean square.
    eps : float > 0, default 1e-8
    eps_inside_sqrt : bool, default True
        The seed's ``g / sqrt(s + eps)``; False: PyTorch's ``g / (sqrt(s) + eps)``.
    weight_decay : float >= 0, default 0.0
%(options)s
    """

    _spec = spec("rmsprop", "rmsprop",
                 example=dict(lr=1e-3, alpha=0.99, eps_inside_sqrt=False),
                 torch=("RMSprop", dict(lr=1e-3, alpha=0.99)), beta="alpha")

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


class Adam(Optimizer):
    r"""Adam (the seed's, with bias correction), L2 weight decay as ``torch.optim.Adam``.

    See :func:`fastopt.kernels.adam_step`.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient (as ``torch.optim.Adam``).
    amsgrad : bool, default False
        True: the constructor returns an :class:`fastopt.AMSGrad` with these arguments (``Adam`` and
        ``AdamW`` with ``amsgrad=True`` as torch's; its own class, its own state buffers).
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

    _spec = spec("adam", "adam", example=dict(lr=1e-3),
                 torch=("Adam", dict(lr=1e-3, fused=True)), beta="betas")
    _pairs = {"betas": ("beta1", "beta2")}
    _fixed = {"decoupled_weight_decay": False}

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, amsgrad: bool = False,
                 impl: Impl = "fused", max_grad_norm: float | None = None,
                 skip_nonfinite: bool = False, groups: Groups | None = None,
                 state_dtype: str = "float32", min_lowbit_size: int = 4096,
                 seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)

    def __new__(cls, *args, amsgrad: bool = False, **kwargs):
        # amsgrad=True: an AMSGrad on the same arguments (AdamW's: decoupled weight decay)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"{cls.__name__}(): amsgrad must be a bool, got "
                            f"{type(amsgrad).__name__}")
        if not amsgrad:
            return super().__new__(cls)
        if len(args) < 5 and "weight_decay" not in kwargs:
            kwargs["weight_decay"] = inspect.signature(cls.__init__).parameters[
                "weight_decay"].default
        return AMSGrad(*args, decoupled_weight_decay=cls._fixed["decoupled_weight_decay"],
                       **kwargs)


# inspect.signature(Adam) shows the constructor's arguments, not __new__'s (*args, **kwargs)
Adam.__new__.__signature__ = inspect.signature(Adam.__init__)


class AdamW(Adam):
    r"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Each step first shrinks the parameters, :math:`\theta \leftarrow (1 -
    \eta\lambda)\theta`, then takes the Adam step on the raw gradient.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 1e-2
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
    amsgrad : bool, default False
        True: the constructor returns an :class:`fastopt.AMSGrad` with decoupled weight decay.
%(options)s
    """

    _spec = spec("adamw", "adam",
                 example=dict(lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True),
                 torch=("AdamW", dict(lr=1e-3, weight_decay=1e-2, fused=True)), beta="betas")
    _fixed = {"decoupled_weight_decay": True}

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, amsgrad: bool = False,
                 impl: Impl = "fused", max_grad_norm: float | None = None,
                 skip_nonfinite: bool = False, groups: Groups | None = None,
                 state_dtype: str = "float32", min_lowbit_size: int = 4096,
                 seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class Adagrad(Optimizer):
    r"""Adagrad, as ``torch.optim.Adagrad`` (same defaults, same operations in its order).

    See :func:`fastopt.kernels.adagrad_step`: the squared gradients accumulate in ``sum``,
    which starts at ``initial_accumulator_value``, and each step divides by its square root.

    Parameters
    ----------
%(params)s
%(lr)s
    lr_decay : float >= 0, default 0.0
        The step ``t`` uses ``lr / (1 + (t - 1) lr_decay)``.
    eps : float > 0, default 1e-10
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient.
    initial_accumulator_value : float >= 0, default 0.0
        The value ``sum`` starts at.
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> params = [np.ones(2, np.float32)]
    >>> opt = fastopt.Adagrad(params, lr=0.1)
    >>> opt.step([np.array([2.0, -0.5], np.float32)])   # the first step moves by lr·sign(g)
    >>> params[0]
    array([0.9, 1.1], dtype=float32)
    """

    _spec = spec("adagrad", "adagrad", example=dict(lr=1e-2),
                 torch=("Adagrad", dict(lr=1e-2)), beta=None)

    def __init__(self, params: Params, lr: LR = 1e-2, lr_decay: float = 0.0, eps: float = 1e-10,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, *,
                 impl: Impl = "fused", max_grad_norm: float | None = None,
                 skip_nonfinite: bool = False, groups: Groups | None = None,
                 state_dtype: str = "float32", min_lowbit_size: int = 4096,
                 seed: int = 0) -> None:
        super().__init__(params, lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, impl=impl,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class Lion(Optimizer):
    r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    See :func:`fastopt.kernels.lion_step`: each parameter moves by ``lr`` along the sign of
    an interpolation of its momentum and gradient; one momentum buffer; weight decay is
    decoupled.  The paper suggests a learning rate 3-10x smaller than AdamW's and a weight
    decay 3-10x larger.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.99)
        The update's interpolation (beta1) and the momentum's decay (beta2).
    weight_decay : float >= 0, default 0.0
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> params = [np.zeros(3, np.float32)]
    >>> opt = fastopt.Lion(params, lr=0.5)
    >>> opt.step([np.array([2.0, -0.5, 0.0], np.float32)])   # -lr·sign(g) at the first step
    >>> params[0]
    array([-0.5,  0.5,  0. ], dtype=float32)
    """

    _spec = spec("lion", "lion", example=dict(lr=1e-4), beta="betas")
    _pairs = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: LR = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, weight_decay=weight_decay, impl=impl,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba 2015, section 7.1), as ``torch.optim.Adamax`` (same defaults, same
    operations in its order).

    See :func:`fastopt.kernels.adamax_step`: Adam with the infinity norm, an exponentially
    weighted maximum ``exp_inf`` of ``|g| + eps`` in place of the second moment.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient.
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> params = [np.ones(2, np.float32)]
    >>> opt = fastopt.Adamax(params, lr=0.1)
    >>> opt.step([np.array([2.0, -0.5], np.float32)])   # the first step moves by about lr·sign(g)
    >>> params[0]
    array([0.9, 1.1], dtype=float32)
    """

    _spec = spec("adamax", "adamax", example=dict(lr=2e-3),
                 torch=("Adamax", dict(lr=2e-3)), beta="betas")
    _pairs = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: LR = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         impl=impl, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class RAdam(Optimizer):
    r"""RAdam (Liu et al. 2020), as ``torch.optim.RAdam`` (same defaults, same operations in
    its order).

    See :func:`fastopt.kernels.radam_step`: Adam whose adaptive step is rectified by the
    variance of its second moment's estimate; while that is too uncertain (the first steps:
    ``rho_t <= 5``) the step is momentum SGD with bias correction.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
    decoupled_weight_decay : bool, default False
        True: the parameters shrink by ``lr * weight_decay`` each step (as AdamW); False: L2
        penalty added to the gradient.
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> params = [np.ones(2, np.float32)]
    >>> opt = fastopt.RAdam(params, lr=0.1)
    >>> opt.step([np.array([2.0, -0.5], np.float32)])   # not rectified: p - lr m / (1 - beta1)
    >>> params[0]
    array([0.8 , 1.05], dtype=float32)
    """

    _spec = spec("radam", "radam", example=dict(lr=1e-3),
                 torch=("RAdam", dict(lr=1e-3)), beta="betas")
    _pairs = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, impl=impl,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class NAdam(Optimizer):
    r"""NAdam (Dozat 2016), as ``torch.optim.NAdam`` (same defaults, same operations in its order).

    See :func:`fastopt.kernels.nadam_step`: Adam's two moments, with a Nesterov-style step
    whose momentum weights ``mu_t`` warm up with ``momentum_decay``.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient (decoupled, as AdamW's, with
        ``decoupled_weight_decay=True``).
    momentum_decay : float >= 0, default 4e-3
        The momentum cache ``mu_t = beta1 (1 - 0.5 * 0.96**(t * momentum_decay))``.
    decoupled_weight_decay : bool, default False
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> params = [np.zeros(2)]
    >>> opt = fastopt.NAdam(params, lr=0.1)
    >>> opt.step([np.array([2.0, -0.5])])   # a little over lr·sign(g) at the first step
    >>> np.round(params[0], 6)              # (torch.optim.NAdam's too)
    array([-0.105645,  0.105645])
    """

    _spec = spec("nadam", "nadam", example=dict(lr=2e-3),
                 torch=("NAdam", dict(lr=2e-3)), beta="betas")
    _pairs = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: LR = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, impl=impl,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


class AMSGrad(Optimizer):
    r"""AMSGrad (Reddi et al. 2018), as ``torch.optim.Adam`` / ``AdamW`` with ``amsgrad=True``.

    See :func:`fastopt.kernels.amsgrad_step`: Adam, dividing by the running maximum of its
    second moment (a third state buffer, ``max_exp_avg_sq``).  ``fastopt.Adam(...,
    amsgrad=True)`` and ``fastopt.AdamW(..., amsgrad=True)`` return one.  Its state is float32
    or float64 (the low-precision passes take one or two buffers): ``state_dtype="bfloat16"``
    ``"int8"`` and ``"float8"`` are refused.

    Parameters
    ----------
%(params)s
%(lr)s
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient, or decoupled (AdamW's) with
        ``decoupled_weight_decay=True``.
    decoupled_weight_decay : bool, default False
%(options)s

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> params = [np.zeros(2)]
    >>> opt = fastopt.Adam(params, lr=0.1, amsgrad=True)
    >>> type(opt).__name__
    'AMSGrad'
    >>> opt.step([np.array([2.0, -0.5])])   # lr·sign(g) at the first step
    >>> np.round(params[0], 6)
    array([-0.1,  0.1])
    """

    _spec = spec("amsgrad", "amsgrad", example=dict(lr=1e-3),
                 torch=("Adam", dict(lr=1e-3, amsgrad=True)), beta="betas")
    _pairs = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Groups | None = None, state_dtype: str = "float32",
                 min_lowbit_size: int = 4096, seed: int = 0) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, impl=impl,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         groups=groups, state_dtype=state_dtype,
                         min_lowbit_size=min_lowbit_size, seed=seed)


#: The optimizer classes of the registry, in the order they were defined (the package's
#: exports: fastopt.SGD, fastopt.optim.SGD, ...).
__all__ = [entry.optimizer for entry in SPECS.values()]
