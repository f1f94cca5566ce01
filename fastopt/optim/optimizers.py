"""Optimizer classes: hyperparameters and state, one fused kernel call per buffer.

Each optimizer takes either a :class:`fastopt.FlatParams` (``step()`` reads its
``grad`` buffer and updates the whole model in one kernel call) or a list of
float32 arrays (``step(grads)`` takes the matching list of gradients, one
kernel call per array).  ``impl="reference"`` runs the NumPy reference
(:mod:`fastopt.reference`) instead of the compiled kernels, for comparison.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from ..kernels import _check
from .. import kernels as _kernels
from .. import reference as _reference
from ..nn.flat import FlatParams
from .registry import SPECS

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW"]

_IMPLS = {"fused": _kernels, "reference": _reference}

Params = FlatParams | Sequence[np.ndarray]
LR = float | Callable[[int], float]
Impl = Literal["fused", "reference"]


def _scheduled_lr(schedule, epoch):
    """``schedule(epoch)``, checked; any failure of the schedule is a ValueError."""
    try:
        lr = schedule(epoch)
    except Exception as e:  # noqa: BLE001 - a user's schedule may raise anything
        raise ValueError(f"the lr schedule {schedule!r} failed at epoch {epoch}: "
                         f"{type(e).__name__}: {e}") from e
    return _check.at_least(f"lr (schedule at epoch {epoch})", lr, 0.0, float32=True)


def _plain(value):
    """A checked hyperparameter as a plain Python bool, float or tuple of floats."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (tuple, list)):
        return tuple(float(v) for v in value)
    return float(value)


class Optimizer:
    """Base class. Subclasses set ``_state_names`` and ``_hyper_names`` and implement ``_update``.

    Parameters
    ----------
    params : FlatParams or list of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or a
        list of C-contiguous float32 arrays, each writable and its own memory (``step(grads)``
        then takes the matching list of C-contiguous float32 gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).

    Attributes
    ----------
    state : dict of str to list of ndarray
        The state buffers (float32, like each parameter, zeros at the start), named as in
        :data:`fastopt.optim.SPECS`.
    """

    _state_names = ()
    _hyper_names = ()

    def __init__(self, params: Params, lr: LR, *, impl: Impl = "fused") -> None:
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {sorted(_IMPLS)}, got {impl!r}")
        self.impl = impl
        self._k = _IMPLS[impl]
        if isinstance(params, FlatParams):
            self.flat = params
            self._params = [params.data]
            self._grads = [params.grad]
        else:
            if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
                raise TypeError("params must be a FlatParams or a list of float32 arrays, "
                                f"got {type(params).__name__}")
            self.flat = None
            self._params = list(params)
            self._grads = None
            for i, p in enumerate(self._params):
                _check.array(f"params[{i}]", p, writable=True)
            _check.Extents(**{f"params[{i}]": p for i, p in enumerate(self._params)})
        self._epoch = 1
        self.lr = lr
        self._step = 0
        self.state = {name: [np.zeros_like(p) for p in self._params]
                      for name in self._state_names}
        # Every buffer a gradient must not share memory with (list mode).
        self._extents = None if self.flat is not None else _check.Extents(
            **{f"params[{i}]": p for i, p in enumerate(self._params)},
            **{f"{n}[{i}]": b for n, bufs in self.state.items() for i, b in enumerate(bufs)})

    # ------------------------------------------------------------ hyperparameters
    @property
    def lr(self):
        """The learning rate in use (settable: a number, or a schedule ``f(epoch) -> lr``)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if callable(value):
            self._lr = _scheduled_lr(value, self._epoch)
            self._schedule = value
        else:
            self._lr = _check.at_least("lr", value, 0.0, float32=True)
            self._schedule = None

    @property
    def schedule(self):
        """The learning-rate schedule (see :mod:`fastopt.schedules`), or None for a fixed lr."""
        return self._schedule

    @property
    def epoch(self):
        """The epoch number the schedule was last evaluated at (starts at 1)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (from 1): with a schedule, ``lr`` becomes ``schedule(epoch)``.

        A schedule that raises, or returns a bad learning rate, raises
        ValueError and changes nothing.
        """
        epoch = _check.integer("epoch", epoch, 0, _check.C_LLONG_MAX)
        if self._schedule is not None:
            self._lr = _scheduled_lr(self._schedule, epoch)
        self._epoch = epoch

    @property
    def step_count(self) -> int:
        """Number of steps taken."""
        return self._step

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters, as a dict of plain Python values."""
        return {"lr": self.lr, **{k: getattr(self, k) for k in self._hyper_names}}

    # ------------------------------------------------------------ stepping
    def _resolve_grads(self, grads):
        if self.flat is not None:
            if grads is not None:
                raise TypeError("this optimizer reads the FlatParams' grad buffer: call step() "
                                "with no argument")
            return self._grads
        if grads is None:
            raise TypeError("step(grads) needs the list of gradients matching params")
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of float32 arrays, got {type(grads).__name__}")
        if len(grads) != len(self._params):
            raise ValueError(f"grads has {len(grads)} arrays, expected {len(self._params)} "
                             "like params")
        # Check every parameter and gradient before updating any: a rejected call changes
        # nothing.  (A parameter may have been made read-only since construction.)
        for i, (p, g) in enumerate(zip(self._params, grads)):
            _check.array(f"params[{i}]", p, writable=True)
            _check.array(f"grads[{i}]", g, writable=False, like=p, like_name=f"params[{i}]")
            shared = self._extents.overlapping(g)
            if shared is not None:
                raise ValueError(f"grads[{i}] and {shared} share memory; "
                                 "each buffer must be its own array")
        return grads

    def step(self, grads: Sequence[np.ndarray] | None = None) -> None:
        """Update every parameter in place from its gradient.

        Everything is checked before the first parameter is updated: a rejected
        call changes no parameter, no state and not ``step_count``.
        """
        grads = self._resolve_grads(grads)
        t = self._step + 1
        for i, (p, g) in enumerate(zip(self._params, grads)):
            self._update(i, p, g, t)
        self._step = t

    def _update(self, i, p, g, t):
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Zero the FlatParams' grad buffer (with a list of arrays the gradients are yours)."""
        if self.flat is None:
            raise TypeError("zero_grad() needs an optimizer built on a FlatParams; with a list "
                            "of arrays, the gradient arrays belong to the caller")
        self.flat.grad.fill(0.0)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies) of the step count, hyperparameters and state buffers."""
        return {"type": type(self).__name__, "step": self._step, "epoch": self._epoch,
                "hyper": self.hyper(),
                "state": {n: [a.copy() for a in bufs] for n, bufs in self.state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` in place; continuing gives the same bits as never stopping.

        All or nothing: the step count, epoch, hyperparameters, state buffers
        and, with a schedule, the learning rate at the restored epoch are all
        checked before anything changes; a bad state_dict raises ValueError or
        TypeError and leaves the optimizer as it was.
        """
        if not isinstance(state_dict, dict) or not {"type", "step", "hyper", "state"} <= set(state_dict):
            raise ValueError("state_dict must be a dict from Optimizer.state_dict()")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['type']}, not {type(self).__name__}")
        # The next step is step + 1, which must fit the kernels' step counter.
        step = _check.integer("step", state_dict["step"], 0, _check.C_LLONG_MAX - 1)
        epoch = _check.integer("epoch", state_dict.get("epoch", 1), 0, _check.C_LLONG_MAX)
        saved = state_dict["state"]
        if not isinstance(saved, dict) or set(saved) != set(self.state):
            got = sorted(saved) if isinstance(saved, dict) else repr(saved)
            raise ValueError(f"state_dict has state {got}, expected a dict of {sorted(self.state)}")
        for name, bufs in self.state.items():
            if not isinstance(saved[name], (list, tuple)) or len(saved[name]) != len(bufs):
                raise ValueError(f"state {name!r} must be a list of {len(bufs)} arrays")
            for i, (dst, src) in enumerate(zip(bufs, saved[name])):
                src = np.asarray(src)
                if src.shape != dst.shape or src.dtype != dst.dtype:
                    raise ValueError(f"state {name}[{i}] has shape {src.shape} and dtype {src.dtype}, "
                                     f"expected {dst.shape} and {dst.dtype}")
        hyper = state_dict["hyper"]
        if not isinstance(hyper, dict):
            raise ValueError(f"state_dict['hyper'] must be a dict, got {type(hyper).__name__}")
        hyper, lr = self._checked_hyper(dict(hyper), epoch)
        # Everything is checked: from here on nothing can fail.
        for k, v in hyper.items():
            setattr(self, k, v)
        self._lr = lr
        for name, bufs in self.state.items():
            for dst, src in zip(bufs, saved[name]):
                np.copyto(dst, src)
        self._step = step
        self._epoch = epoch

    def _checked_hyper(self, hyper, epoch):
        """(hyperparameters to set, lr at ``epoch``) from a state_dict's ``hyper``, all checked."""
        unknown = set(hyper) - {"lr", *self._hyper_names}
        if unknown:
            raise ValueError(f"state_dict has unknown hyperparameters {sorted(unknown)}")
        lr = _check.at_least("lr", hyper.pop("lr", self._lr), 0.0, float32=True)
        # Re-run the constructor's checks on the merged values before changing anything.
        self._validate_hyper({**self.hyper(), **hyper})
        if self._schedule is not None:
            lr = _scheduled_lr(self._schedule, epoch)  # with a schedule, lr follows the epoch
        return {k: _plain(v) for k, v in hyper.items()}, lr

    def _validate_hyper(self, hyper):
        pass

    def __repr__(self):
        hyper = self.hyper()
        if self._schedule is not None:
            hyper["lr"] = self._schedule
        args = ", ".join(f"{k}={v!r}" for k, v in hyper.items())
        target = "FlatParams" if self.flat is not None else f"{len(self._params)} arrays"
        return f"{type(self).__name__}({target}, {args}, impl={self.impl!r})"


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    See :func:`fastopt.kernels.sgd_step` for the update rule. With
    ``dampening=0`` (the default) it matches ``torch.optim.SGD`` step for step;
    :class:`Momentum` is the seed's exponentially weighted variant.

    Parameters
    ----------
    params : FlatParams or list of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or a
        list of C-contiguous float32 arrays, each writable and its own memory (``step(grads)``
        then takes the matching list of C-contiguous float32 gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    momentum : float in [0, 1), default 0.0
    dampening : float in [0, 1], default 0.0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient.
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"w": (2,)})
    >>> opt = fastopt.SGD(fp, lr=0.1, momentum=0.9)
    >>> fp.grads["w"][...] = [1.0, -1.0]
    >>> opt.step()
    >>> fp.params["w"]
    array([-0.1,  0.1], dtype=float32)
    """

    _hyper_names = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, params: Params, lr: LR, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *,
                 impl: Impl = "fused") -> None:
        self._validate_hyper(dict(momentum=momentum, dampening=dampening, nesterov=nesterov,
                                  weight_decay=weight_decay))
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)
        self._state_names = SPECS["sgd"].state if self.momentum != 0 else ()
        super().__init__(params, lr, impl=impl)

    def _validate_hyper(self, h):
        m = _check.unit_interval("momentum", h["momentum"], float32=True)
        d = _check.unit_interval("dampening", h["dampening"], closed_right=True, float32=True)
        n = _check.flag("nesterov", h["nesterov"])
        _check.at_least("weight_decay", h["weight_decay"], 0.0, float32=True)
        _check.nesterov_rule(n, m, d)
        if hasattr(self, "state") and (m != 0) != ("momentum_buf" in self.state):
            raise ValueError("momentum cannot change between zero and non-zero after construction")

    def _update(self, i, p, g, t):
        buf = self.state["momentum_buf"][i] if self.momentum != 0 else None
        self._k.sgd_step(p, g, buf, lr=self._lr, momentum=self.momentum,
                         dampening=self.dampening, nesterov=self.nesterov,
                         weight_decay=self.weight_decay)


class Momentum(SGD):
    r"""The seed's gradient descent with momentum (an exponentially weighted average).

    .. math::  v \leftarrow \beta v + (1-\beta)\,dW, \qquad w \leftarrow w - \alpha v

    Same as ``SGD(params, lr, momentum=beta, dampening=beta)``. Compared with
    PyTorch-style momentum (``dampening=0``), the step is ``(1-β)`` times
    smaller for the same ``lr``: multiply ``lr`` by ``1/(1-β)`` to compare.

    Parameters
    ----------
    params : FlatParams or list of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or a
        list of C-contiguous float32 arrays, each writable and its own memory (``step(grads)``
        then takes the matching list of C-contiguous float32 gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    beta : float in (0, 1), default 0.9
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).
    """

    def __init__(self, params: Params, lr: LR, beta: float = 0.9, *, impl: Impl = "fused") -> None:
        beta = _check.unit_interval("beta", beta)
        if beta == 0:
            raise ValueError("beta must be in (0, 1) for momentum; use SGD for plain descent")
        super().__init__(params, lr, momentum=beta, dampening=beta, impl=impl)


class RMSprop(Optimizer):
    r"""RMSprop, with ε inside the square root as in the seed (``eps_inside_sqrt=True``).

    See :func:`fastopt.kernels.rmsprop_step`. ``eps_inside_sqrt=False`` and
    ``alpha=0.99`` give ``torch.optim.RMSprop``'s rule and default.

    Parameters
    ----------
    params : FlatParams or list of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or a
        list of C-contiguous float32 arrays, each writable and its own memory (``step(grads)``
        then takes the matching list of C-contiguous float32 gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    alpha : float in [0, 1), default 0.9
        The seed's β: the weight of the old mean square.
    eps : float > 0, default 1e-8
    eps_inside_sqrt : bool, default True
        The seed's ``g / sqrt(s + eps)``; False: PyTorch's ``g / (sqrt(s) + eps)``.
    weight_decay : float >= 0, default 0.0
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).
    """

    _state_names = SPECS["rmsprop"].state
    _hyper_names = ("alpha", "eps", "eps_inside_sqrt", "weight_decay")

    def __init__(self, params: Params, lr: LR, alpha: float = 0.9, eps: float = 1e-8,
                 eps_inside_sqrt: bool = True, weight_decay: float = 0.0, *,
                 impl: Impl = "fused") -> None:
        self._validate_hyper(dict(alpha=alpha, eps=eps, eps_inside_sqrt=eps_inside_sqrt,
                                  weight_decay=weight_decay))
        self.alpha, self.eps = float(alpha), float(eps)
        self.eps_inside_sqrt, self.weight_decay = bool(eps_inside_sqrt), float(weight_decay)
        super().__init__(params, lr, impl=impl)

    def _validate_hyper(self, h):
        _check.unit_interval("alpha", h["alpha"], float32=True)
        _check.positive("eps", h["eps"], float32=True)
        _check.flag("eps_inside_sqrt", h["eps_inside_sqrt"])
        _check.at_least("weight_decay", h["weight_decay"], 0.0, float32=True)

    def _update(self, i, p, g, t):
        self._k.rmsprop_step(p, g, self.state["square_avg"][i], lr=self._lr, alpha=self.alpha,
                             eps=self.eps, eps_inside_sqrt=self.eps_inside_sqrt,
                             weight_decay=self.weight_decay)


class Adam(Optimizer):
    r"""Adam (the seed's, with bias correction), L2 weight decay as ``torch.optim.Adam``.

    See :func:`fastopt.kernels.adam_step`.

    Parameters
    ----------
    params : FlatParams or list of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or a
        list of C-contiguous float32 arrays, each writable and its own memory (``step(grads)``
        then takes the matching list of C-contiguous float32 gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        L2 penalty added to the gradient (as ``torch.optim.Adam``).
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).

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

    _state_names = SPECS["adam"].state
    _hyper_names = ("betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, impl: Impl = "fused") -> None:
        self._validate_hyper(dict(betas=betas, eps=eps, weight_decay=weight_decay))
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        super().__init__(params, lr, impl=impl)

    def _validate_hyper(self, h):
        betas = h["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check.unit_interval("betas[0]", betas[0], float32=True)
        _check.unit_interval("betas[1]", betas[1], float32=True)
        _check.positive("eps", h["eps"], float32=True)
        _check.at_least("weight_decay", h["weight_decay"], 0.0, float32=True)

    def _update(self, i, p, g, t):
        self._k.adam_step(p, g, self.state["exp_avg"][i], self.state["exp_avg_sq"][i], step=t,
                          lr=self._lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                          weight_decay=self.weight_decay,
                          decoupled_weight_decay=self._decoupled)


class AdamW(Adam):
    r"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Each step first shrinks the parameters, :math:`\theta \leftarrow (1 -
    \eta\lambda)\theta`, then takes the Adam step on the raw gradient.

    Parameters
    ----------
    params : FlatParams or list of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or a
        list of C-contiguous float32 arrays, each writable and its own memory (``step(grads)``
        then takes the matching list of C-contiguous float32 gradients).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
    betas : (float, float), each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 1e-2
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).
    """

    _decoupled = True

    def __init__(self, params: Params, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, impl: Impl = "fused") -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay, impl=impl)
