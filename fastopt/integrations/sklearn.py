"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, with their stochastic solvers on fastopt.

Drop-in subclasses: the same parameters, attributes and results as scikit-learn's
estimators; only the optimizer object that ``fit`` and ``partial_fit`` build changes.
With ``solver="adam"`` or ``solver="sgd"`` each mini-batch update is one fused fastopt
call over all the layers, in the dtype scikit-learn trains in (float64, or float32 when
``X`` is float32).  Everything else (the forward and backward passes, shuffling,
``learning_rate`` schedules, ``early_stopping``, ``n_iter_no_change``, ``warm_start``,
``partial_fit``, ``loss_curve_``) is scikit-learn's own code.  ``solver="lbfgs"`` is
scikit-learn's unchanged.

>>> from fastopt.integrations.sklearn import MLPClassifier       # doctest: +SKIP
>>> clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=20).fit(X, y)  # doctest: +SKIP

How the update rules map (``sklearn/neural_network/_stochastic_optimizers.py``):

* Adam.  scikit-learn steps ``p -= lr_t * m / (sqrt(v) + eps)`` with
  ``lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)``.  fastopt's (PyTorch's) Adam steps
  ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps')``, which is the same
  update for ``eps' = eps / sqrt(1 - b2**t)``: the optimizer sets that ``eps'`` before
  each step.  No weight decay in the optimizer: ``alpha``'s L2 term is already in
  scikit-learn's gradient.
* SGD.  scikit-learn keeps a velocity ``v = mu*v - lr*g`` and adds it (Nesterov: adds
  ``mu*v - lr*g`` with the new ``v``).  fastopt's (PyTorch's) buffer ``b = mu*b + g``,
  ``p -= lr*b`` (Nesterov: ``p -= lr*(g + mu*b)``) is the same with ``v = -lr*b`` for a
  fixed ``lr``.  When scikit-learn changes ``learning_rate`` (``invscaling`` at each
  epoch's end, ``adaptive`` on a plateau, or a user), the buffers are rescaled by
  ``lr_old / lr_new`` once, before the next step, so ``v`` carries over unchanged.

The results equal scikit-learn's up to rounding (about 1e-13 relative in float64 after a
few epochs; in float32 scikit-learn computes part of each update in float64, fastopt all
of it in float32, so the two differ at float32 precision).

Hyperparameters fastopt does not take (``momentum=1``; ``beta_2`` that rounds to 1 in
float32) keep scikit-learn's own optimizer for that fit.  The estimators pickle
(``joblib.dump``) with the optimizer's state, and ``partial_fit`` after loading continues
where it stopped.

``coefs_`` and ``intercepts_`` may be replaced between calls, as with scikit-learn's own
estimators, by arrays of any layout and floating dtype: the optimizer is rebuilt over the
new arrays at the next update, its state carried over (in the new arrays' dtype: where
scikit-learn keeps float64 moments for float32 coefficients, fastopt keeps float32 ones,
so the two then agree at float32 precision).  Arrays fastopt cannot update in place
(Fortran-ordered, strided, float16) are updated through a C-contiguous copy (float64 for
float16), written back after each step; read-only or non-float arrays are refused as
scikit-learn refuses them (ValueError, TypeError).
"""

import math

import numpy as np
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from ..kernels import _check
from ..optim.optimizers import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor", "FastoptAdamOptimizer", "FastoptSGDOptimizer"]


def _same_arrays(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _working_array(i, p):
    """``p`` when fastopt updates it in place, else a C-contiguous float copy to step and write back."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"params[{i}] must be a numpy.ndarray, got {type(p).__name__}")
    if not p.flags.writeable:
        raise ValueError(f"params[{i}] is read-only, but it is updated in place")
    if p.dtype.kind != "f":
        # (scikit-learn's ``param += update`` refuses the same: a float update into p's dtype)
        raise TypeError(f"params[{i}] has dtype {p.dtype}; a float update cannot be written into it")
    try:
        return _check.array(f"params[{i}]", p, writable=True)
    except (TypeError, ValueError):
        return np.array(p, dtype=p.dtype if p.dtype in _check.FLOATS else np.float64, order="C")


def _in_dtypes(sd, opt):
    """The state_dict ``sd`` with its buffers in the dtypes of ``opt``'s (scikit-learn carries its
    moments over when ``coefs_`` change dtype; here they follow the parameters' dtype)."""
    state = {}
    for name, bufs in sd["state"].items():
        like = opt.state.get(name, [])
        if len(bufs) == len(like):
            bufs = [b.astype(d.dtype, copy=False) if isinstance(b, np.ndarray) else b
                    for b, d in zip(bufs, like)]
        state[name] = bufs
    return {**sd, "state": state}


class _FastoptMixin:
    """Runs scikit-learn's ``update_params(params, grads)`` on a fastopt optimizer.

    The fastopt optimizer (``self._opt``) is built over the arrays of ``params``; when
    ``update_params`` receives other arrays (``coefs_`` rebound, or after unpickling),
    it is rebuilt over them and its state (step count and buffers) carried over.  An
    array fastopt cannot update in place is stepped as a C-contiguous copy (``self._work``)
    and written back.  Subclasses define ``_make(params)`` and ``_step(opt, grads)``.
    """

    _opt = None
    _params = None      # the arrays scikit-learn passes
    _work = None        # the arrays the optimizer steps: each one of _params, or a copy of it
    _saved = None       # a state_dict waiting for the next build (after unpickling)

    def _bind(self, params):
        params = list(params)
        work = [_working_array(i, p) for i, p in enumerate(params)]
        opt = self._make(work)
        old = self._opt.state_dict() if self._opt is not None else self._saved
        if old is not None:
            opt.load_state_dict(_in_dtypes(old, opt))
        self._opt, self._params, self._work, self._saved = opt, params, work, None

    def update_params(self, params, grads):
        """Update ``params`` in place from ``grads`` (lists of arrays, in the same order)."""
        if self._params is None or not _same_arrays(params, self._params):
            self._bind(params)
        copies = [(p, w) for p, w in zip(self._params, self._work) if w is not p]
        for p, w in copies:
            np.copyto(w, p)           # (the values now: the user may have written into p)
        try:
            self._step(self._opt, grads)
        except (TypeError, ValueError):
            # A gradient fastopt does not take as it is (non-contiguous, another dtype): convert
            # it, as scikit-learn's NumPy update would, and retry.  A rejected step changed nothing.
            fixed = [np.ascontiguousarray(g, dtype=w.dtype) for w, g in zip(self._work, grads)]
            self._step(self._opt, fixed)
        for p, w in copies:
            np.copyto(p, w)

    @property
    def fastopt_optimizer(self):
        """The :class:`fastopt.Optimizer` doing the updates (None before the first one after loading)."""
        return self._opt

    def _state_dict(self):
        return self._opt.state_dict() if self._opt is not None else self._saved

    def __getstate__(self):
        # The state, not the parameters (the estimator holds those, and passes them again).
        state = self.__dict__.copy()
        state["_saved"] = self._state_dict()
        for k in ("_opt", "_params", "_work"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


class FastoptAdamOptimizer(_FastoptMixin, AdamOptimizer):
    """scikit-learn's ``AdamOptimizer`` (same arguments and attributes), stepping with :class:`fastopt.Adam`.

    ``ms`` and ``vs`` are the live state buffers; ``t`` is the step count;
    ``learning_rate`` is scikit-learn's bias-corrected step size of the last update.
    """

    def __init__(self, params, learning_rate_init=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        # AdamOptimizer.__init__ would allocate its own moment buffers.
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._bind(params)

    def _make(self, params):
        return Adam(params, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                    eps=self.epsilon)

    def _step(self, opt, grads):
        b1, b2 = self.beta_1, self.beta_2
        t = opt.step_count + 1
        opt.lr = self.learning_rate_init
        opt.betas = (b1, b2)
        opt.eps = self.epsilon / math.sqrt(1.0 - b2**t)
        opt.step(grads)
        self.learning_rate = self.learning_rate_init * np.sqrt(1 - b2**t) / (1 - b1**t)

    @property
    def t(self):
        return self._opt.step_count if self._opt is not None else self._saved["step"]

    @property
    def ms(self):
        return self._opt.state["exp_avg"] if self._opt is not None else list(self._saved["state"]["exp_avg"])

    @property
    def vs(self):
        return (self._opt.state["exp_avg_sq"] if self._opt is not None
                else list(self._saved["state"]["exp_avg_sq"]))


class FastoptSGDOptimizer(_FastoptMixin, SGDOptimizer):
    """scikit-learn's ``SGDOptimizer`` (same arguments, ``iteration_ends`` and ``trigger_stopping``),
    stepping with :class:`fastopt.SGD`.

    ``learning_rate`` may change between steps (scikit-learn's schedules change it): the
    momentum buffers are rescaled before the next step so that scikit-learn's velocity
    ``v = -learning_rate * buffer`` carries over.  ``velocities`` computes that ``v`` (with
    ``momentum=0``, zeros: nothing is kept between steps).
    """

    _buf_lr = None      # the learning rate the momentum buffers are scaled for

    def __init__(self, params, learning_rate_init=0.1, lr_schedule="constant", momentum=0.9,
                 nesterov=True, power_t=0.5):
        # SGDOptimizer.__init__ would allocate its own velocities.
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.power_t = power_t
        self._bind(params)

    def _make(self, params):
        mu = self.momentum
        # sklearn's Nesterov with momentum 0 is plain SGD (fastopt's needs momentum > 0).
        return SGD(params, lr=self.learning_rate, momentum=mu, nesterov=bool(self.nesterov and mu > 0))

    def _step(self, opt, grads):
        lr = self.learning_rate
        if self.momentum != 0:
            if self._buf_lr is not None and lr != self._buf_lr:
                if not lr > 0:
                    raise ValueError(f"learning_rate must be > 0 with momentum, got {lr}")
                ratio = self._buf_lr / lr
                for buf in opt.state["momentum_buf"]:
                    buf *= ratio
            self._buf_lr = lr
        opt.lr = lr
        opt.step(grads)

    @property
    def velocities(self):
        if self.momentum == 0 or self._buf_lr is None:
            return [np.zeros_like(p) for p in self._params or []]
        bufs = (self._opt.state["momentum_buf"] if self._opt is not None
                else self._saved["state"]["momentum_buf"])
        return [-self._buf_lr * b for b in bufs]


def _on_fastopt(optimizer, params):
    """scikit-learn's freshly built ``optimizer`` replaced by its fastopt twin, when fastopt takes it."""
    try:
        if type(optimizer) is AdamOptimizer:
            return FastoptAdamOptimizer(params, optimizer.learning_rate_init, optimizer.beta_1,
                                        optimizer.beta_2, optimizer.epsilon)
        if type(optimizer) is SGDOptimizer:
            return FastoptSGDOptimizer(params, optimizer.learning_rate_init, optimizer.lr_schedule,
                                       optimizer.momentum, optimizer.nesterov, optimizer.power_t)
    except (TypeError, ValueError):
        pass            # hyperparameters or arrays fastopt does not take: scikit-learn's own
    return optimizer


class _FastoptSolver:
    """Swaps the optimizer scikit-learn's ``_fit_stochastic`` builds for its fastopt twin.

    scikit-learn builds the optimizer with ``self._optimizer = AdamOptimizer(params, ...)``
    (or ``SGDOptimizer``), where ``params = self.coefs_ + self.intercepts_``; this property
    catches the assignment.  The value lives in the instance ``__dict__`` under
    ``_optimizer``, as in scikit-learn, so pickles look the same.
    """

    @property
    def _optimizer(self):
        try:
            return self.__dict__["_optimizer"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute '_optimizer'") from None

    @_optimizer.setter
    def _optimizer(self, value):
        if type(value) in (AdamOptimizer, SGDOptimizer):
            value = _on_fastopt(value, self.coefs_ + self.intercepts_)
        self.__dict__["_optimizer"] = value

    @_optimizer.deleter
    def _optimizer(self):
        try:
            del self.__dict__["_optimizer"]
        except KeyError:
            raise AttributeError("_optimizer") from None


class MLPClassifier(_FastoptSolver, _SkMLPClassifier):
    __doc__ = (
        "scikit-learn's MLPClassifier, with the ``adam`` and ``sgd`` solvers' updates on fastopt.\n\n"
        "    Same parameters, attributes and results (up to rounding) as\n"
        "    :class:`sklearn.neural_network.MLPClassifier`; see :mod:`fastopt.integrations.sklearn`.\n"
        "    ``_optimizer`` is a :class:`FastoptAdamOptimizer` or :class:`FastoptSGDOptimizer`.\n\n"
        "    scikit-learn's documentation follows.\n\n    " + (_SkMLPClassifier.__doc__ or ""))


class MLPRegressor(_FastoptSolver, _SkMLPRegressor):
    __doc__ = (
        "scikit-learn's MLPRegressor, with the ``adam`` and ``sgd`` solvers' updates on fastopt.\n\n"
        "    Same parameters, attributes and results (up to rounding) as\n"
        "    :class:`sklearn.neural_network.MLPRegressor`; see :mod:`fastopt.integrations.sklearn`.\n"
        "    ``_optimizer`` is a :class:`FastoptAdamOptimizer` or :class:`FastoptSGDOptimizer`.\n\n"
        "    scikit-learn's documentation follows.\n\n    " + (_SkMLPRegressor.__doc__ or ""))
