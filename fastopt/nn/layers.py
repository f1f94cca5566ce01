"""Layers built on the fused kernels."""

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked, fixed, no_rebind
from .. import kernels as _kernels
from .. import reference as _reference
from .flat import FlatParams

__all__ = ["BatchNorm", "BatchNormSync"]

_IMPLS = {"fused": _kernels, "reference": _reference}


def merge_moments(parts, C):
    """The whole batch's ``(count, mean, biased variance)`` from per-part ``(count, mean, M2)``
    (float64, ``C`` channels), merged pairwise in the given order (Chan, Golub and LeVeque),
    so every process that merges the same parts in the same order gets the same bits.  Parts
    of count 0 are skipped; no part gives ``(0, zeros, zeros)``."""
    total, mu, m2 = 0.0, np.zeros(C), np.zeros(C)
    for n_b, mu_b, m2_b in parts:
        if n_b == 0:
            continue
        if total == 0:
            total, mu, m2 = n_b, mu_b.copy(), m2_b.copy()
            continue
        both = total + n_b
        delta = mu_b - mu
        mu = mu + delta * (n_b / both)
        m2 = m2 + m2_b + delta * delta * (total * n_b / both)
        total = both
    return int(total), mu, m2 / total if total else m2


def _held_by(self):
    if self._flat is not None:
        return "it is a view into the FlatParams that the optimizer updates"
    return "the optimizer and the kernels hold this array"


def _stats_held(self):
    return "the layer's running statistics; load_state_dict() restores them"


class BatchNormSync:
    """How :class:`BatchNorm` layers combine their statistics with other processes' (a base class).

    A batch split over processes (data parallel) is normalized with the statistics of the
    whole batch when each layer's ``sync`` is one of these: the training forward pass hands
    this process's per-channel count, mean and biased variance to :meth:`stats`, which returns
    the whole batch's; the backward pass hands its sums to :meth:`sums`.  Every process calls
    them in the same order (they are collective).  :class:`fastopt.distributed.SyncStats`
    implements them over MPI; this layer does not depend on MPI.
    """

    def stats(self, layer, signature, n, mean, var):
        """The whole batch's ``(n, mean, var)`` from this process's (float64 (C,) arrays).

        ``signature`` (a str) describes the call (layer, shape, hyperparameters); every
        process's must be the same.
        """
        raise NotImplementedError

    def sums(self, layer, signature, n, sum_dy, sum_dy_xmu, weight):
        """``(n, S_dy, S_dy_xmu)``: the whole batch's count and backward sums as this process
        weighs them (the sum over processes of ``weight_p * sums_p``, divided by ``weight``,
        this process's weight in the gradient sum); see :meth:`fastopt.BatchNorm.backward`."""
        raise NotImplementedError

    #: True for a synchronization that reduces per micro-batch in a fixed order
    #: (:class:`fastopt.nn.microbatch.MicroBatchNorm`): the layer passes :meth:`stats` its
    #: input (``x=``) and :meth:`sums` ``dy=, x=, mean=``, and the returned sums become
    #: ``dgamma`` and ``dbeta`` (the whole batch's, the same on every process).
    ordered = False

    def refuse(self, layer, phase, signature, error):
        """This process refused its input (``error``) where the others call :meth:`stats`
        (``phase`` "forward") or :meth:`sums` ("backward"): take part, and raise on every
        process."""
        raise NotImplementedError


class BatchNorm(Checked):
    r"""Batch normalization over the channel axis 1 of (N, C) or (N, C, \*spatial) inputs.

    .. math::  y = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    ``gamma`` (ones) and ``beta`` (zeros) are learned; they replace the bias
    of the layer before (the seed: "β replaces b").  Training normalizes with
    the batch statistics and keeps exponentially weighted running statistics
    (PyTorch's convention: ``momentum=0.1`` is the weight of the new batch,
    the running variance is unbiased); ``forward(x, training=False)`` uses the
    running statistics (the seed's "at test time").

    Parameters
    ----------
    num_features : int
        C, the number of channels.  Inputs ``x`` (and gradients ``dy``) are C-contiguous
        float32 arrays of shape ``(N, C)`` or ``(N, C, *spatial)``.
    eps : float, default 1e-5
        Added to the variance (PyTorch's default; the seed suggests 1e-8).
    momentum : float in [0, 1], default 0.1
    params : FlatParams, optional
        Holds ``f"{name}.gamma"`` and ``f"{name}.beta"`` of shape (C,) (see
        :meth:`shapes`).  The layer sets them to 1 and 0 and writes their
        gradients into ``params.grads``, so one optimizer call updates the
        whole model.  The running statistics take ``params.dtype`` (float32
        or float64; inputs must then have that dtype too).  Without it the
        layer owns its arrays, in float32.
    name : str, default "bn"
    impl : "fused" or "reference"
    sync : BatchNormSync or None, default None
        Synchronized batch norm: each process holds a part of the batch, and training
        normalizes with the statistics of the whole batch (every process calls the layer
        in the same order).  See :class:`fastopt.distributed.SyncBatchNorm`.

    Notes
    -----
    ``eps``, ``momentum``, ``impl`` and ``sync`` may be set at any time and are checked as the
    constructor checks them (a rejected value changes nothing).  ``num_features`` and
    ``name`` are fixed.  ``gamma``, ``beta``, ``dgamma``, ``dbeta`` and the running
    statistics cannot be rebound (the optimizer and the FlatParams hold them): write into
    them, ``bn.gamma[...] = values``.  Any other public name raises AttributeError.

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"W": (4, 3), **fastopt.BatchNorm.shapes(3, name="bn1")})
    >>> bn = fastopt.BatchNorm(3, params=fp, name="bn1")
    >>> x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    >>> y = bn.forward(x)
    >>> np.allclose(y.mean(axis=0), 0, atol=1e-6), np.allclose(y.std(axis=0), 1, atol=1e-3)
    (True, True)
    >>> dx = bn.backward(np.ones_like(y))      # fills fp.grads["bn1.gamma"], fp.grads["bn1.beta"]
    >>> fp.grads["bn1.beta"]
    array([8., 8., 8.], dtype=float32)
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 params: FlatParams | None = None, name: str = "bn",
                 impl: str = "fused", sync: BatchNormSync | None = None) -> None:
        C = _check.integer("num_features", num_features, 1)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.eps = eps
        self.momentum = momentum
        self.impl = impl
        self.sync = sync
        self._num_features = C
        self._name = name
        self._flat = params
        if params is not None:
            if not isinstance(params, FlatParams):
                raise TypeError(f"params must be a FlatParams, got {type(params).__name__}")
            for key in (f"{name}.gamma", f"{name}.beta"):
                if key not in params:
                    raise ValueError(f"params has no {key!r}; build it with "
                                     f"BatchNorm.shapes({C}, name={name!r})")
                if params.params[key].shape != (C,):
                    raise ValueError(f"params[{key!r}] has shape {params.params[key].shape}, "
                                     f"expected ({C},)")
            self._link()
            dtype = params.dtype
        else:
            dtype = np.dtype(np.float32)
            self._gamma = np.empty(C, np.float32)
            self._beta = np.empty(C, np.float32)
            self._dgamma = np.zeros(C, np.float32)
            self._dbeta = np.zeros(C, np.float32)
        self._gamma[...] = 1.0
        self._beta[...] = 0.0
        self._running_mean = np.zeros(C, dtype)
        self._running_var = np.ones(C, dtype)
        self._cache = None

    def _link(self):
        """Take gamma, beta and their gradients as views of the FlatParams entries."""
        fp, name = self._flat, self._name
        self._gamma = fp.params[f"{name}.gamma"]
        self._beta = fp.params[f"{name}.beta"]
        self._dgamma = fp.grads[f"{name}.gamma"]
        self._dbeta = fp.grads[f"{name}.beta"]

    # Pickling: with ``params``, gamma, beta and their gradients are views of the FlatParams,
    # which pickle would store as independent arrays (the optimizer would then update a
    # buffer the layer no longer reads).  The state leaves them out, and __setstate__ takes
    # the views of the restored FlatParams again.  The forward cache is not kept.
    def __getstate__(self):
        drop = {"_cache"}
        if self._flat is not None:
            drop |= {"_gamma", "_beta", "_dgamma", "_dbeta"}
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = None
        if self._flat is not None:
            self._link()

    num_features = fixed("num_features", "C, the number of channels.",
                         "it is fixed at construction (build another BatchNorm)")
    name = fixed("name", "The prefix of the layer's FlatParams entries.",
                 "it names the layer's FlatParams entries (build another BatchNorm)")
    gamma = no_rebind("gamma", "The scale, (C,).", "bn", _held_by)
    beta = no_rebind("beta", "The shift, (C,).", "bn", _held_by)
    dgamma = no_rebind("dgamma", "The gradient of gamma, written by backward().", "bn", _held_by)
    dbeta = no_rebind("dbeta", "The gradient of beta, written by backward().", "bn", _held_by)
    running_mean = no_rebind("running_mean", "The running mean, (C,).", "bn", _stats_held)
    running_var = no_rebind("running_var", "The running (unbiased) variance, (C,).", "bn",
                            _stats_held)

    @property
    def eps(self):
        """Added to the variance: a finite number > 0 (checked when set)."""
        return self._eps

    @eps.setter
    def eps(self, value):
        self._eps = _check.positive("eps", value)

    @property
    def momentum(self):
        """The weight of the new batch in the running statistics, in [0, 1] (checked when set)."""
        return self._momentum

    @momentum.setter
    def momentum(self, value):
        self._momentum = _check.unit_interval("momentum", value, closed_right=True)

    @property
    def sync(self):
        """A :class:`BatchNormSync` (synchronized batch norm) or None (checked when set)."""
        return self._sync

    @sync.setter
    def sync(self, value):
        if value is not None and not isinstance(value, BatchNormSync):
            raise TypeError(f"sync must be None or a BatchNormSync (e.g. "
                            f"fastopt.distributed.SyncStats(comm)), got {type(value).__name__}")
        self._sync = value

    @staticmethod
    def shapes(num_features, name="bn"):
        """The FlatParams entries the layer needs: ``{name.gamma: (C,), name.beta: (C,)}``."""
        C = _check.integer("num_features", num_features, 1)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        return {f"{name}.gamma": (C,), f"{name}.beta": (C,)}

    @property
    def impl(self):
        """"fused" (compiled kernels) or "reference" (NumPy)."""
        return self._impl

    @impl.setter
    def impl(self, value):
        if value not in _IMPLS:
            raise ValueError(f"impl must be one of {sorted(_IMPLS)}, got {value!r}")
        self._impl = value

    @property
    def _k(self):
        # the implementation's module, looked up per call (a module attribute would make
        # the layer unpicklable)
        return _IMPLS[self._impl]

    def _signature(self, phase, x):
        """What every process's call of a synchronized pass must agree on."""
        shape = getattr(x, "shape", ())[1:]
        return (f"{self.name}.{phase}(x of shape (N, {', '.join(map(str, shape))}), "
                f"{self.gamma.dtype}, eps={self.eps!r}, momentum={self.momentum!r})")

    def _synced(self, sync, phase, x, call, on_reduce):
        """``call(reduce)`` with ``sync`` as the reduction; a refusal before the reduction (a
        bad argument on this process) is refused on every process."""
        signature = self._signature(phase, x)
        reached = []

        def reduce(*args):
            reached.append(True)
            return on_reduce(sync, signature, *args)

        try:
            return call(reduce)
        except (TypeError, ValueError) as e:
            if not reached:
                sync.refuse(self, phase, signature, e)      # raises on every process
            raise

    def forward(self, x: np.ndarray, training: bool = True,
                out: np.ndarray | None = None) -> np.ndarray:
        """Normalize x; in training also update the running statistics. Returns y.

        With :attr:`sync`, training normalizes with the statistics of the whole batch (all
        processes' x, which may differ in N, even be empty) and updates the running statistics
        as one process would with the whole batch (unbiased variance with the whole count).
        """
        def call(reduce):
            if isinstance(x, np.ndarray) and x.dtype != self.gamma.dtype:
                raise TypeError(f"x has dtype {x.dtype}, but this BatchNorm holds "
                                f"{self.gamma.dtype} parameters (build it on a FlatParams of dtype "
                                f"{x.dtype}, or pass x.astype(numpy.{self.gamma.dtype}))")
            return self._k.batchnorm_forward(
                x, self.gamma, self.beta, self.running_mean, self.running_var,
                training=training, momentum=self.momentum, eps=self.eps, out=out, reduce=reduce)

        counts = []

        def stats(sync, signature, n, mean, var):
            counts.append(n)
            if sync.ordered:
                whole = sync.stats(self, signature, n, mean, var, x=x)
            else:
                whole = sync.stats(self, signature, n, mean, var)
            counts.append(whole[0])
            return whole

        inference = isinstance(training, (bool, np.bool_)) and not training
        sync = None if inference else self._sync
        if sync is not None:
            y, mean, invstd = self._synced(sync, "forward", x, call, stats)
        else:
            y, mean, invstd = call(None)
        # (the backward pass of a synchronized forward uses the same sync and counts)
        self._cache = (x, mean, invstd, bool(training), sync, tuple(counts))
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray, out: np.ndarray | None = None, *,
                 weight: float | None = None) -> np.ndarray:
        """Gradient with respect to the last forward's input; overwrites dgamma and dbeta.

        With :attr:`sync` (after a synchronized training forward), dx is this process's part
        of the whole batch's gradient, and dgamma, dbeta are this process's sums: they are
        right when the processes' parameter gradients are then summed with the weights the
        backward sums were summed with.  ``weight`` is this process's weight in that sum (as
        given to ``DataParallel.step(weight=...)``), > 0; default ``n_part / n_whole``, right
        when each process's loss is the mean over its samples and the gradients are summed
        with those weights (what ``fastopt.train`` does; ``DataParallel.step()``'s 1/P when
        the parts are equal).
        """
        if self._cache is None:
            raise RuntimeError("backward() called before forward()")
        x, mean, invstd, training, sync, counts = self._cache

        def call(reduce):
            if weight is not None:
                _check.positive("weight", weight)
            dx, _, _ = self._k.batchnorm_backward(dy, x, self.gamma, mean, invstd,
                                                  training=training, reduce=reduce,
                                                  out=(out, self.dgamma, self.dbeta))
            return dx

        whole = []

        def sums(sync, signature, n, sum_dy, sum_dy_xmu):
            w = float(weight) if weight is not None else counts[0] / counts[1]
            if not sync.ordered:
                return sync.sums(self, signature, n, sum_dy, sum_dy_xmu, w)
            whole[:] = sync.sums(self, signature, n, sum_dy, sum_dy_xmu, w, dy=dy, x=x,
                                 mean=mean)
            return whole

        if sync is not None:
            dx = self._synced(sync, "backward", x, call, sums)
            if whole:       # an ordered sync: the whole batch's sums are the gradients
                _, s_dy, s_dy_xmu = whole
                self.dbeta[...] = s_dy
                self.dgamma[...] = s_dy_xmu * invstd.astype(np.float64)
            return dx
        if weight is not None:
            raise ValueError("weight is for synchronized batch norm (sync), after a training "
                             "forward")
        return call(None)

    def state_dict(self):
        """Copies of the running statistics and of gamma and beta."""
        return {"running_mean": self.running_mean.copy(), "running_var": self.running_var.copy(),
                "gamma": self.gamma.copy(), "beta": self.beta.copy()}

    _STATE_KEYS = ("running_mean", "running_var", "gamma", "beta")

    def checked_state(self, state, keys=_STATE_KEYS):
        """``state[k]`` for each of ``keys``: (C,) arrays in the layer's dtype, all checked.

        Raises ValueError/TypeError for a missing entry, a wrong shape, a
        non-numeric value, a running mean that is not finite or a running
        variance that is negative or not finite (the inference pass would
        turn them into NaN).  Changes nothing.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing}")
        out = {}
        for k in keys:
            v = np.asarray(state[k])
            if v.shape != (self.num_features,):
                raise ValueError(f"state[{k!r}] has shape {v.shape}, "
                                 f"expected ({self.num_features},)")
            if v.dtype.kind not in "fiu":
                raise TypeError(f"state[{k!r}] has dtype {v.dtype}, expected real numbers")
            with np.errstate(over="ignore"):
                v = v.astype(self.running_mean.dtype)
            if k == "running_mean" and not np.isfinite(v).all():
                raise ValueError(f"state['running_mean'] is not finite at channel "
                                 f"{int(np.flatnonzero(~np.isfinite(v))[0])}")
            if k == "running_var" and not (np.isfinite(v) & (v >= 0)).all():
                c = int(np.flatnonzero(~(np.isfinite(v) & (v >= 0)))[0])
                raise ValueError(f"state['running_var'] must be finite and >= 0, got {v[c]} at "
                                 f"channel {c}")
            out[k] = v
        return out

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` in place; everything is checked before anything changes.

        See :meth:`checked_state` for what is refused.
        """
        for k, v in self.checked_state(state).items():
            getattr(self, k)[...] = v

    def __repr__(self):
        sync = "" if self.sync is None else f", sync={self.sync!r}"
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, name={self.name!r}, impl={self.impl!r}{sync})")
