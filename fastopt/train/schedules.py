r"""Learning-rate schedules: pure functions of the epoch number (optax style).

Each function returns a schedule ``f`` with ``f(epoch) -> lr``.  The seed's
three decay rules, for ``epoch_number >= 1``:

.. math::

    \alpha = \frac{\alpha_0}{1 + \text{decay\_rate}\cdot\text{epoch}}, \qquad
    \alpha = 0.95^{\text{epoch}}\,\alpha_0, \qquad
    \alpha = \frac{k}{\sqrt{\text{epoch}}}\,\alpha_0

Epochs are numbered from 1, as in the seed; ``f(0)`` is defined too: it is
``lr0`` for :func:`inverse_time`, :func:`exponential`, :func:`constant` and
:func:`step`, ``k·lr0`` (the epoch-1 value, since ``k/sqrt(0)`` is infinite)
for :func:`inverse_sqrt`, and the first warm-up value for :func:`cosine`.

An optimizer accepts a schedule wherever it takes ``lr``; the training loop
calls ``opt.set_epoch(epoch)`` at the start of each epoch.  The schedules
pickle and deep-copy by their parameters (see :class:`Schedule`).

Examples
--------
>>> from fastopt import schedules
>>> f = schedules.inverse_time(0.1, decay_rate=1.0)
>>> [round(f(e), 4) for e in (1, 2, 3)]
[0.05, 0.0333, 0.025]
"""

import math
import types

from ..kernels import _check
from ..kernels._attrs import Checked, fixed

__all__ = ["Schedule", "constant", "inverse_time", "exponential", "inverse_sqrt", "step", "cosine"]


def _real(name, x, lo=None, hi=None, lo_open=False, hi_open=False):
    x = _check.real(name, x)
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {x}")
    if hi is not None and (x > hi or (hi_open and x == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {x}")
    return x


_int = _check.integer


class Schedule(Checked):
    """A learning rate as a function of the epoch number; call it: ``schedule(epoch)``.

    The factories of this module (:func:`constant`, :func:`inverse_time`, ...)
    return Schedules that pickle and copy by their parameters: a pickled,
    reloaded or :func:`copy.deepcopy`-ed schedule is rebuilt by its factory
    from ``params`` and returns the same values at every epoch (so an
    optimizer holding one can be pickled).  Two such schedules are equal when
    they come from the same factory with the same parameters.  A Schedule
    built directly, ``Schedule(name, fn, **params)``, pickles only if ``fn``
    does (a module-level function, not a lambda) and equals only itself.

    A Schedule is immutable: ``name`` and ``params`` cannot be set and ``params`` is a
    read-only mapping (a factory's function is built from them, so changing them would
    change what a pickled or copied schedule returns but not this one); any other public
    name raises AttributeError.  Build another schedule instead.

    Examples
    --------
    >>> import pickle
    >>> from fastopt import schedules
    >>> s = schedules.cosine(0.1, total_epochs=10, warmup_epochs=2)
    >>> s2 = pickle.loads(pickle.dumps(s))
    >>> s2 == s, [s2(e) == s(e) for e in (1, 5, 10)]
    (True, [True, True, True])
    """

    name = fixed("name", "The schedule's name, as repr shows it.",
                 "a Schedule is immutable (build another one)")

    def __init__(self, name, fn, **params):
        # (``params`` are the schedule's own labels, shown by repr, compared by ==, and
        # passed back to the factory that rebuilds it: any names are accepted)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not callable(fn):
            raise TypeError(f"fn must be callable (epoch -> lr), got {type(fn).__name__}")
        self._name = name
        self._params = dict(params)
        self._fn = fn
        self._factory = None  # set by this module's factories: what rebuilds it from params

    @property
    def params(self):
        """The parameters the schedule was built with (a read-only mapping)."""
        return types.MappingProxyType(self._params)

    @params.setter
    def params(self, value):
        raise AttributeError("Schedule.params cannot be set: a Schedule is immutable (build "
                             "another one)")

    def __call__(self, epoch):
        return float(self._fn(_int("epoch", epoch, 0, _check.C_LLONG_MAX)))

    def __reduce_ex__(self, protocol):
        if self._factory is not None:
            return _rebuild, (self._factory, dict(self._params))
        return super().__reduce_ex__(protocol)

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, Schedule) or self._factory is None:
            return NotImplemented
        return self._factory is other._factory and self._params == other._params

    def __hash__(self):
        if self._factory is None:
            return object.__hash__(self)
        return hash((self._factory.__name__, tuple(sorted(self._params.items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


def _rebuild(factory, params):
    """The Schedule ``factory(**params)`` (how a factory's schedule is unpickled or copied)."""
    return factory(**params)


def _made_by(factory, name, fn, **params):
    """A Schedule of ``factory``: it pickles as ``factory(**params)``, which must rebuild ``fn``."""
    s = Schedule(name, fn, **params)
    s._factory = factory
    return s


def constant(lr):
    """``lr`` at every epoch."""
    lr = _real("lr", lr, 0)
    return _made_by(constant, "constant", lambda e: lr, lr=lr)


def inverse_time(lr0, decay_rate):
    """The seed's ``lr0 / (1 + decay_rate·epoch)``."""
    lr0 = _real("lr0", lr0, 0)
    decay_rate = _real("decay_rate", decay_rate, 0)
    return _made_by(inverse_time, "inverse_time", lambda e: lr0 / (1 + decay_rate * e),
                    lr0=lr0, decay_rate=decay_rate)


def exponential(lr0, base=0.95):
    """The seed's ``base**epoch · lr0`` (base 0.95 in the seed)."""
    lr0 = _real("lr0", lr0, 0)
    base = _real("base", base, 0, 1, lo_open=True)
    return _made_by(exponential, "exponential", lambda e: base**e * lr0, lr0=lr0, base=base)


def inverse_sqrt(lr0, k):
    """The seed's ``k / sqrt(epoch) · lr0``; epoch 0 gives the epoch-1 value ``k·lr0``."""
    lr0 = _real("lr0", lr0, 0)
    k = _real("k", k, 0, lo_open=True)
    return _made_by(inverse_sqrt, "inverse_sqrt", lambda e: k / math.sqrt(max(e, 1)) * lr0,
                    lr0=lr0, k=k)


def step(lr0, step_size, gamma=0.1):
    """``lr0 · gamma**((epoch - 1) // step_size)``: constant for ``step_size`` epochs, then × gamma.

    Epochs 1..step_size use lr0 (and so does epoch 0).
    """
    lr0 = _real("lr0", lr0, 0)
    step_size = _int("step_size", step_size, 1)
    gamma = _real("gamma", gamma, 0, 1, lo_open=True)
    return _made_by(step, "step", lambda e: lr0 * gamma ** (max(e - 1, 0) // step_size),
                    lr0=lr0, step_size=step_size, gamma=gamma)


def cosine(lr0, total_epochs, warmup_epochs=0, lr_min=0.0):
    r"""Linear warm-up to ``lr0`` over ``warmup_epochs``, then a cosine decay towards ``lr_min``.

    .. math::

        \alpha(e) = \alpha_0\,\frac{e}{W} \quad (1 \le e \le W), \qquad
        \alpha(e) = \alpha_{\min} + \frac{\alpha_0 - \alpha_{\min}}{2}
                    \left(1 + \cos\frac{\pi\,(e - W - 1)}{T - W}\right) \quad (e > W)

    so the first epoch after warm-up uses ``lr0`` and the last (``e = T``) is
    still above ``lr_min``; epochs beyond ``T`` use ``lr_min``.  Epoch 0
    gives the epoch-1 value.
    """
    lr0 = _real("lr0", lr0, 0)
    total = _int("total_epochs", total_epochs, 1)
    warm = _int("warmup_epochs", warmup_epochs, 0)
    if warm >= total:
        raise ValueError(f"warmup_epochs must be < total_epochs ({total}), got {warm}")
    lr_min = _real("lr_min", lr_min, 0, lr0)

    def f(e):
        e = max(e, 1)
        if e <= warm:
            return lr0 * e / warm
        if e > total:
            return lr_min
        return lr_min + 0.5 * (lr0 - lr_min) * (1 + math.cos(math.pi * (e - warm - 1) / (total - warm)))

    return _made_by(cosine, "cosine", f, lr0=lr0, total_epochs=total, warmup_epochs=warm,
                    lr_min=lr_min)


def by_name(name, lr0, epochs):
    """The schedule the command line's ``--schedule NAME`` means (sensible defaults)."""
    makers = {
        "constant": lambda: constant(lr0),
        "inverse_time": lambda: inverse_time(lr0, decay_rate=0.1),
        "exponential": lambda: exponential(lr0, base=0.95),
        "inverse_sqrt": lambda: inverse_sqrt(lr0, k=1.0),
        "step": lambda: step(lr0, step_size=max(1, epochs // 3), gamma=0.1),
        "cosine": lambda: cosine(lr0, total_epochs=epochs, warmup_epochs=min(2, epochs - 1)),
    }
    if name not in makers:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(makers)}")
    return makers[name]()


NAMES = ("constant", "inverse_time", "exponential", "inverse_sqrt", "step", "cosine")
