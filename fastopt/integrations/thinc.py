"""A thinc ``Optimizer`` whose updates run on fastopt: one fused call per ``finish_update``.

One line changes::

    optimizer = thinc.api.Adam(0.001)                                   # before
    optimizer = fastopt.integrations.thinc.Adam(0.001)                  # after

:class:`Optimizer` is a subclass of ``thinc.optimizers.Optimizer`` with its constructor, its
call protocol ``optimizer((id, name), weights, gradient, lr_scale=1.0) -> (weights,
gradient)`` (the gradient is zeroed in place after use), ``step_schedules``,
``last_score``, its attributes (``mom1``, ``mom2``, ``averages``, ``nr_update``, the
schedules) and its options, with thinc's defaults:

* schedules as thinc takes them: a number, a list, a generator or a ``thinc`` ``Schedule``,
  evaluated at ``optimizer.step`` with ``key`` and ``last_score``;
* ``grad_clip`` (default 1.0): each parameter's gradient is clipped to that norm on its own,
  thinc's rule (``g *= grad_clip / |g|`` when ``|g| >= grad_clip``, in place);
* ``use_averages`` (default True): ``averages[key]`` is the moving average of the weights
  with thinc's warm-up ``decay = min((1 + t) / (10 + t), 0.9999)``, from zeros (the fused
  kernel :func:`fastopt.kernels.ema_update`: the same bits as thinc's);
* ``L2`` and ``L2_is_weight_decay`` as thinc applies them;
* Adam in thinc's form, ε outside the bias correction:
  ``w -= lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε)``, which is :class:`fastopt.Adam` with ε
  rescaled each step to ``ε / √(1−β2ᵗ)`` (the same update in exact arithmetic; in float32 the
  two roundings differ: the trajectories agree to float32 rounding, ~1e-7 relative per step);
  ``adam_form="torch"`` keeps ε as given (PyTorch's form).  thinc's SGD (``beta1 = beta2 =
  0``) is :class:`fastopt.SGD`.

Batching: thinc's ``Model.finish_update`` calls the optimizer once per parameter, in the same
order at every update.  The first update runs call by call (each a compiled call) and learns
that order; from the second on, the calls are deferred and the last parameter of the round
runs them all (Adam or SGD, the gradients zeroed, the averages) as one fused call per
operation over every parameter, before ``finish_update`` returns.  A call out of the learned
order, a parameter seen twice, a different ``lr_scale`` or schedule value per parameter, or
``step_schedules()`` with calls pending runs the pending calls one by one (the same values)
and learns the order again.  Calling the optimizer by hand over a changing set of parameters,
call :meth:`Optimizer.flush` before using the weights, or pass ``batch=False``.

RAdam (``use_radam=True``) is not in fastopt yet: it raises ValueError.
"""

import math
import warnings

import numpy as np
from thinc.optimizers import ADAM_DEFAULTS, SGD_DEFAULTS
from thinc.optimizers import Optimizer as _ThincOptimizer

from ..kernels import ema_update as _ema_update
from ..kernels import adam_step as _adam_step
from ..optim.algorithms import SGD as _SGD
from ..optim.algorithms import Adam as _Adam
from ..optim.ema import EMA as _EMA

__all__ = ["Optimizer", "Adam", "SGD"]


def _avg_decay(t, max_decay=0.9999):
    """thinc's averaging decay at update ``t``."""
    return min((1.0 + t) / (10.0 + t), max_decay)


def _adam_form(value):
    if value not in ("thinc", "torch"):
        raise ValueError(f"adam_form must be 'thinc' or 'torch', got {value!r}")
    return value


def _batch(value):
    if not isinstance(value, bool):
        raise TypeError(f"batch must be True or False, got {value!r}")
    return value


class Optimizer(_ThincOptimizer):
    """thinc's ``Optimizer`` (Adam, SGD) stepping on fastopt; see the module's notes.

    Parameters
    ----------
    learn_rate, L2, beta1, beta2, eps, grad_clip, use_averages, use_radam, L2_is_weight_decay
        As ``thinc.optimizers.Optimizer`` (floats or schedules).
    adam_form : {"thinc", "torch"}, default "thinc"
        Where ε sits: thinc's ``m / (√v + ε)`` after the bias-corrected learning rate, or
        PyTorch's ``m̂ / (√v̂ + ε)``.
    batch : bool, default True
        Defer the per-parameter calls of a round and run them as one fused call each
        (see the module's notes); False: one compiled call per parameter.
    """

    __slots__ = ["_avg", "_adam_form", "_batch", "_order", "_seen", "_pending", "_fused",
                 "_fused_ema"]

    def __init__(self, learn_rate, *, L2=ADAM_DEFAULTS["L2"], beta1=ADAM_DEFAULTS["beta1"],
                 beta2=ADAM_DEFAULTS["beta2"], eps=ADAM_DEFAULTS["eps"],
                 grad_clip=ADAM_DEFAULTS["grad_clip"], use_averages=True, use_radam=False,
                 L2_is_weight_decay=True, adam_form="thinc", batch=True):
        if use_radam:
            raise ValueError("use_radam=True: fastopt has no RAdam yet (use thinc's RAdam)")
        adam_form, batch = _adam_form(adam_form), _batch(batch)
        self._avg = None
        super().__init__(learn_rate, L2=L2, beta1=beta1, beta2=beta2, eps=eps,
                         grad_clip=grad_clip, use_averages=use_averages, use_radam=False,
                         L2_is_weight_decay=L2_is_weight_decay)
        self._adam_form = adam_form
        self._batch = batch
        self._order = None        # the keys of a round, once learned
        self._seen = []           # the keys of the round being learned
        self._pending = []        # deferred calls: (key, weights, gradient, lr_scale)
        self._fused = None        # (keys, weights, fastopt optimizer) of the last fused round
        self._fused_ema = None    # (keys, EMA)

    @property
    def adam_form(self):
        """Where ε sits, "thinc" or "torch"; may be set between updates (checked as the
        constructor checks it; the deferred calls run first, in the form they were made in)."""
        return self._adam_form

    @adam_form.setter
    def adam_form(self, value):
        value = _adam_form(value)
        self.flush()
        self._adam_form = value

    @property
    def batch(self):
        """Whether a round's calls are deferred and fused; may be set between updates (True or
        False, checked; the deferred calls run first)."""
        return self._batch

    @batch.setter
    def batch(self, value):
        value = _batch(value)
        self.flush()
        self._batch = value

    # the averages are read after the pending calls have run
    @property
    def averages(self):
        self.flush()
        return self._avg

    @averages.setter
    def averages(self, value):
        self._avg = value

    # ------------------------------------------------------------ the call protocol
    def __call__(self, key, weights, gradient, *, lr_scale=1.0):
        """Update ``weights`` from ``gradient`` (zeroed) as thinc's optimizer does; returns
        ``(weights, gradient)`` (the same arrays, updated in place)."""
        if len(gradient) < 1:
            return weights, gradient
        if not isinstance(weights, np.ndarray) or not isinstance(gradient, np.ndarray):
            raise TypeError("fastopt's thinc optimizer steps NumPy arrays (NumpyOps); got "
                            f"{type(weights).__name__} and {type(gradient).__name__}")
        if weights.dtype != np.float32 or gradient.dtype != np.float32:
            raise TypeError(f"weights and gradient must be float32 (thinc's), got "
                            f"{weights.dtype} and {gradient.dtype}")
        if not self.batch:
            self._eager(key, weights, gradient, lr_scale)
            return weights, gradient
        if self._order is None:
            if key in self._seen:              # a new round: the order is learned
                self._order = self._seen
                self._seen = []
            else:
                self._seen.append(key)
                self._eager(key, weights, gradient, lr_scale)
                return weights, gradient
        k = len(self._pending)
        if k >= len(self._order) or self._order[k] != key:
            if any(key == p[0] for p in self._pending):
                # the last round ended before its last parameter, and nothing ran the
                # deferred calls before this one: the weights were read late
                warnings.warn(
                    "fastopt.integrations.thinc: an update ended before the last parameter "
                    "of the learned order, and its deferred calls ran only now; batching is "
                    "off for this optimizer from here on (call optimizer.step_schedules() or "
                    "optimizer.flush() after model.finish_update() to keep it, or pass "
                    "batch=False)", RuntimeWarning, stacklevel=2)
                self._batch = False
                self._unbatch()
                self._eager(key, weights, gradient, lr_scale)
                return weights, gradient
            self._unbatch()
            self._seen = [key]
            self._eager(key, weights, gradient, lr_scale)
            return weights, gradient
        self._prepare(key, weights, gradient)
        self._pending.append((key, weights, gradient, lr_scale))
        if len(self._pending) == len(self._order):
            self._run_pending()
        return weights, gradient

    def flush(self):
        """Run the deferred calls now (one by one, as thinc would have), if any."""
        if self._pending:
            self._unbatch()

    def step_schedules(self):
        self.flush()
        super().step_schedules()

    # ------------------------------------------------------------ the maths, per parameter
    def _args(self, key):
        return {"key": key, "last_score": self.last_score}

    def _prepare(self, key, weights, gradient):
        """What thinc does before the update: count, L2 into the gradient, clip (in place)."""
        self.nr_update[key] += 1
        args = self._args(key)
        L2 = self.L2(self.step, **args)
        if L2 != 0 and not self.L2_is_weight_decay:
            gradient += L2 * weights
        clip = self.grad_clip(self.step, **args)
        if clip:
            norm = np.linalg.norm(gradient)
            if norm >= clip:
                gradient *= clip / norm

    def _hyper(self, key, lr_scale):
        """(lr, b1, b2, eps) of this key's update (thinc's schedules at this step).

        In thinc's form the betas are rounded to float32 first, as thinc's kernel takes them:
        it computes ``1 - beta`` in float32 from the rounded beta (for beta2 = 0.999,
        0.00099998713 rather than 0.001), and fastopt then does the same.
        """
        args = self._args(key)
        b1, b2 = self.b1(self.step, **args), self.b2(self.step, **args)
        if self.adam_form == "thinc":
            b1, b2 = float(np.float32(b1)), float(np.float32(b2))
        return (self.learn_rate(self.step, **args) * lr_scale, b1, b2,
                self.eps(self.step, **args))

    def _is_adam(self, b1, b2):
        if b1 > 0.0 and b2 > 0.0:
            return True
        if b2 > 0.0:
            raise ValueError("beta2 > 0 with beta1 == 0 is not an optimizer thinc has")
        return False

    def _eps(self, eps, b2, t):
        return eps / math.sqrt(1.0 - b2 ** t) if self.adam_form == "thinc" else eps

    def _moments(self, key, size):
        if key not in self.mom1:
            self.mom1[key] = np.zeros(size, np.float32)
        if key not in self.mom2:
            self.mom2[key] = np.zeros(size, np.float32)
        return self.mom1[key], self.mom2[key]

    def _finish(self, key, weights, gradient, lr_scale):
        """What thinc does after the update: zero the gradient, weight decay, averages."""
        gradient.fill(0)
        args = self._args(key)
        L2 = self.L2(self.step, **args)
        if L2 != 0 and self.L2_is_weight_decay:
            weights -= lr_scale * self.learn_rate(self.step, **args) * L2 * weights

    def _average(self, key, weights):
        if self._avg is None:
            return
        if key not in self._avg:
            self._avg[key] = np.zeros(weights.shape, np.float32)
        _ema_update(self._avg[key], weights, decay=_avg_decay(self.nr_update[key]))

    def _eager(self, key, weights, gradient, lr_scale):
        """One parameter, now (one compiled call for the update)."""
        self._fused = None      # (a step outside the fused optimizer: rebuild it next time)
        self._prepare(key, weights, gradient)
        self._update_one(key, weights, gradient, lr_scale)

    def _update_one(self, key, weights, gradient, lr_scale):
        lr, b1, b2, eps = self._hyper(key, lr_scale)
        t = self.nr_update[key]
        w, g = weights.reshape(-1), gradient.reshape(-1)
        if self._is_adam(b1, b2):
            m, v = self._moments(key, w.size)
            _adam_step(w, g, m, v, lr=lr, beta1=b1, beta2=b2, eps=self._eps(eps, b2, t),
                       step=t)
        else:
            w -= np.float32(lr) * g
        self._finish(key, weights, gradient, lr_scale)
        self._average(key, weights)

    def _unbatch(self):
        """Run the pending calls one by one (already prepared) and learn the order again."""
        pending, self._pending = self._pending, []
        self._fused = None
        self._order = None
        for key, weights, gradient, lr_scale in pending:
            self._update_one(key, weights, gradient, lr_scale)

    # ------------------------------------------------------------ the fused round
    def _run_pending(self):
        pending = self._pending
        keys = [p[0] for p in pending]
        hyper = {self._hyper(k, s) for k, _, _, s in pending}
        steps = {self.nr_update[k] for k in keys}
        if len(hyper) != 1 or len(steps) != 1:
            self._unbatch()                      # per-key values: one by one
            self._order = keys
            return
        self._pending = []
        (lr, b1, b2, eps), = hyper
        t, = steps
        weights = [p[1] for p in pending]
        grads = [p[2].reshape(-1) for p in pending]
        adam = self._is_adam(b1, b2)
        fused = self._fused
        if (fused is None or fused[0] != keys or fused[2] is not adam
                or any(a is not b for a, b in zip(fused[1], weights))
                or fused[3].step_count != t - 1):
            fused = self._build(keys, weights, adam, t - 1)
        opt = fused[3]
        if adam:
            opt.lr, opt.betas, opt.eps = lr, (b1, b2), self._eps(eps, b2, t)
        else:
            opt.lr = lr
        opt.step(grads)
        self._fused = fused
        for k, w, g, scale in pending:
            self._finish(k, w, g, scale)
        if self._avg is not None:
            ema = self._fused_ema
            if (ema is None or ema[0] != keys or any(a is not b for a, b in zip(ema[1], weights))
                    or any(self._avg.get(k) is not a for k, a in zip(keys, ema[2]))):
                for k, w in zip(keys, weights):
                    if k not in self._avg:
                        self._avg[k] = np.zeros(w.shape, np.float32)
                avgs = [self._avg[k] for k in keys]
                ema = (keys, weights, avgs, _EMA([w.reshape(-1) for w in weights],
                                                 averages=[a.reshape(-1) for a in avgs]))
                self._fused_ema = ema
            ema[3].update(decay=_avg_decay(t))

    def _build(self, keys, weights, adam, step):
        """The fused optimizer over ``weights``, its state the keys' moments (shared)."""
        flat = [w.reshape(-1) for w in weights]
        if adam:
            opt = _Adam(flat, lr=0.0)
            sd = opt.state_dict()
            sd["step"] = step
            sd["state"] = {"exp_avg": [self._moments(k, w.size)[0] for k, w in zip(keys, flat)],
                           "exp_avg_sq": [self._moments(k, w.size)[1] for k, w in zip(keys, flat)]}
            opt.load_state_dict(sd)
            for i, k in enumerate(keys):       # thinc's mom1/mom2 are fastopt's buffers now
                self.mom1[k] = opt.state["exp_avg"][i]
                self.mom2[k] = opt.state["exp_avg_sq"][i]
        else:
            opt = _SGD(flat, lr=0.0)
            sd = opt.state_dict()
            sd["step"] = step
            opt.load_state_dict(sd)
        return (keys, weights, adam, opt)


def Adam(learn_rate=ADAM_DEFAULTS["learn_rate"], *, L2=ADAM_DEFAULTS["L2"],
         beta1=ADAM_DEFAULTS["beta1"], beta2=ADAM_DEFAULTS["beta2"], eps=ADAM_DEFAULTS["eps"],
         grad_clip=ADAM_DEFAULTS["grad_clip"],
         L2_is_weight_decay=ADAM_DEFAULTS["L2_is_weight_decay"], use_averages=True,
         adam_form="thinc", batch=True):
    """``thinc.api.Adam`` on fastopt (same arguments and defaults)."""
    return Optimizer(learn_rate, L2=L2, beta1=beta1, beta2=beta2, eps=eps, grad_clip=grad_clip,
                     L2_is_weight_decay=L2_is_weight_decay, use_averages=use_averages,
                     adam_form=adam_form, batch=batch)


def SGD(learn_rate, *, L2=SGD_DEFAULTS["L2"], grad_clip=SGD_DEFAULTS["grad_clip"],
        L2_is_weight_decay=SGD_DEFAULTS["L2_is_weight_decay"], use_averages=True, batch=True):
    """``thinc.api.SGD`` on fastopt (same arguments and defaults)."""
    return Optimizer(learn_rate, L2=L2, grad_clip=grad_clip, L2_is_weight_decay=L2_is_weight_decay,
                     beta1=0.0, beta2=0.0, use_averages=use_averages, batch=batch)
