"""One way to turn a user's ``rng`` argument into a numpy Generator."""

import numbers

import numpy as np


def as_generator(rng, name="rng"):
    """None -> a fresh Generator; an int seed -> default_rng(seed); a Generator -> itself."""
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(rng, bool):
            raise TypeError(f"{name} must be a numpy.random.Generator, an int seed or None, got bool")
        if isinstance(rng, numbers.Integral) and rng < 0:
            raise ValueError(f"{name} seed must be >= 0, got {rng}")
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"{name} must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(rng).__name__}")
