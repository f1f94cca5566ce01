"""Random-search hyperparameter tuning, in the order of importance the seed gives.

The seed's tiers: (1) the learning rate; (2) momentum β, the number of hidden
units, the mini-batch size; (3) the number of layers, the learning-rate
decay; (4) Adam's β1, β2, ε.  Search at random rather than on a grid (every
trial tries a new value of the important parameters), and on the right
scale: the learning rate log-uniformly, β through ``1 - β`` log-uniformly.

Examples
--------
>>> from fastopt import tuning
>>> space = {"lr": tuning.log_uniform(1e-4, 1e-1), "beta": tuning.one_minus_log_uniform(0.9, 0.999)}
>>> trials = tuning.random_search(lambda p: -abs(p["lr"] - 1e-2), space, n_trials=20, rng=0)
>>> len(trials), trials[0].score >= trials[-1].score
(20, True)
"""

import math
import types
from dataclasses import dataclass, field

from ..kernels import _check
from ..kernels._attrs import Checked, fixed
from ..runtime.rng import as_generator

__all__ = ["Sampler", "log_uniform", "one_minus_log_uniform", "uniform", "integers",
           "powers_of_two", "choice", "Trial", "random_search", "default_space", "TIERS"]


_real = _check.real


def _int(name, x):
    return _check.integer(name, x, -(2**63))


class Sampler(Checked):
    """Draws one value with ``sampler(rng)``.

    Immutable: ``name`` and ``params`` (shown by repr; any names) cannot be set.
    """

    name = fixed("name", "The sampler's name, as repr shows it.",
                 "a Sampler is immutable (build another one)")
    params = fixed("params", "The parameters it was built with, as repr shows them.",
                   "a Sampler is immutable (build another one)")

    def __init__(self, name, draw, **params):
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not callable(draw):
            raise TypeError(f"draw must be callable (rng -> value), got {type(draw).__name__}")
        self._name, self._draw, self._params = name, draw, types.MappingProxyType(dict(params))

    def __call__(self, rng):
        return self._draw(rng)

    def __repr__(self):
        return f"{self.name}({', '.join(f'{v!r}' for v in self.params.values())})"


def log_uniform(lo, hi):
    """10**u with u uniform in [log10 lo, log10 hi] (for the learning rate)."""
    lo, hi = _real("lo", lo), _real("hi", hi)
    if not 0 < lo <= hi:
        raise ValueError(f"log_uniform needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    a, b = math.log10(lo), math.log10(hi)
    return Sampler("log_uniform", lambda rng: float(min(max(10 ** rng.uniform(a, b), lo), hi)),
                   lo=lo, hi=hi)


def one_minus_log_uniform(lo, hi):
    """β with 1 - β log-uniform in [1 - hi, 1 - lo], e.g. β in 0.9 … 0.999."""
    lo, hi = _real("lo", lo), _real("hi", hi)
    if not 0 <= lo <= hi < 1:
        raise ValueError(f"one_minus_log_uniform needs 0 <= lo <= hi < 1, got lo={lo}, hi={hi}")
    inner = log_uniform(1 - hi, 1 - lo)
    return Sampler("one_minus_log_uniform", lambda rng: float(min(max(1 - inner(rng), lo), hi)),
                   lo=lo, hi=hi)


def uniform(lo, hi):
    """Uniform in [lo, hi]."""
    lo, hi = _real("lo", lo), _real("hi", hi)
    if lo > hi:
        raise ValueError(f"uniform needs lo <= hi, got lo={lo}, hi={hi}")
    return Sampler("uniform", lambda rng: float(rng.uniform(lo, hi)), lo=lo, hi=hi)


def integers(lo, hi):
    """An integer uniform in [lo, hi], both included (e.g. hidden units)."""
    lo, hi = _int("lo", lo), _int("hi", hi)
    if lo > hi:
        raise ValueError(f"integers needs lo <= hi, got lo={lo}, hi={hi}")
    return Sampler("integers", lambda rng: int(rng.integers(lo, hi, endpoint=True)), lo=lo, hi=hi)


def powers_of_two(lo, hi):
    """A power of two 2**k with lo <= 2**k <= hi, k uniform (e.g. batch sizes 32 … 512)."""
    lo, hi = _int("lo", lo), _int("hi", hi)
    if lo < 1 or lo > hi:
        raise ValueError(f"powers_of_two needs 1 <= lo <= hi, got lo={lo}, hi={hi}")
    ks = [k for k in range(hi.bit_length() + 1) if lo <= 2**k <= hi]
    if not ks:
        raise ValueError(f"no power of two lies in [{lo}, {hi}]")
    return Sampler("powers_of_two", lambda rng: 2 ** int(ks[rng.integers(len(ks))]), lo=lo, hi=hi)


def choice(options):
    """One of ``options``, uniformly."""
    options = list(options)
    if not options:
        raise ValueError("choice needs at least one option")
    return Sampler("choice", lambda rng: options[int(rng.integers(len(options)))], options=options)


#: The seed's tiers of importance.
TIERS = {
    1: ("lr",),
    2: ("beta", "hidden", "batch_size"),
    3: ("layers", "decay_rate"),
    4: ("beta1", "beta2", "eps"),
}


def default_space(max_tier=2):
    """A search space following the seed's tiers, up to ``max_tier`` (1 … 4), most important first."""
    max_tier = _int("max_tier", max_tier)
    if not 1 <= max_tier <= 4:
        raise ValueError(f"max_tier must be in 1 … 4, got {max_tier}")
    all_ = {
        "lr": log_uniform(1e-4, 1e-1),
        "beta": one_minus_log_uniform(0.8, 0.999),
        "hidden": integers(32, 512),
        "batch_size": powers_of_two(32, 512),
        "layers": integers(1, 4),
        "decay_rate": log_uniform(1e-3, 1.0),
        "beta1": one_minus_log_uniform(0.8, 0.99),
        "beta2": one_minus_log_uniform(0.99, 0.9999),
        "eps": log_uniform(1e-10, 1e-6),
    }
    keep = [k for t in range(1, max_tier + 1) for k in TIERS[t]]
    return {k: all_[k] for k in keep}


@dataclass(order=False, frozen=True)
class Trial:
    """One evaluated point: ``index`` (order of evaluation), ``params``, ``score``.

    A record of what was evaluated: its fields cannot be set (nor any other name;
    ``dataclasses.FrozenInstanceError``, an AttributeError)."""

    index: int
    params: dict = field(default_factory=dict)
    score: float = float("nan")


def random_search(objective, space, *, n_trials, rng, maximize=True):
    """Evaluate ``objective(params)`` at ``n_trials`` random points of ``space``.

    Parameters
    ----------
    objective : callable(dict) -> float
        The score of one set of hyperparameters (e.g. validation accuracy).
    space : dict of name -> sampler (see :func:`log_uniform` …) or a fixed value
    n_trials : int >= 1
    rng : numpy.random.Generator or int seed
    maximize : bool, default True
        Higher scores are better (False: lower, e.g. a loss).

    Returns
    -------
    list of Trial
        Every trial, best first; NaN scores last.
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable (params -> score), got "
                        f"{type(objective).__name__}")
    if not isinstance(space, dict) or not space:
        raise TypeError("space must be a non-empty dict of name -> sampler")
    maximize = _check.flag("maximize", maximize)
    n_trials = _int("n_trials", n_trials)
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    gen = as_generator(rng)
    trials = []
    for i in range(n_trials):
        params = {k: (v(gen) if callable(v) else v) for k, v in space.items()}
        score = float(objective(params))
        trials.append(Trial(i, params, score))
    sign = -1.0 if maximize else 1.0
    return sorted(trials, key=lambda t: (math.isnan(t.score),
                                         0.0 if math.isnan(t.score) else sign * t.score, t.index))
