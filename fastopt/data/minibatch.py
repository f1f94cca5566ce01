"""Mini-batches, and the seed's guideline for choosing their size.

Examples
--------
>>> import numpy as np
>>> from fastopt.data import minibatches, suggest_batch_size
>>> X, y = np.arange(10).reshape(5, 2), np.arange(5)
>>> [yb.tolist() for _, yb in minibatches(X, y, batch_size=2, rng=0)]
[[2, 4], [3, 0], [1]]
>>> suggest_batch_size(1_797, bytes_per_sample=256)         # a small set: the whole set
1797
>>> suggest_batch_size(60_000, bytes_per_sample=3_072, memory_budget=1_000_000)
256
"""

import numpy as np

from ..kernels import _check
from ..runtime.rng import as_generator

__all__ = ["minibatches", "suggest_batch_size", "SMALL_DATASET"]

#: Up to this many samples the seed's advice is batch gradient descent (the whole set).
SMALL_DATASET = 4096


_int = _check.integer


def minibatches(X, y=None, *, batch_size, shuffle=True, rng=None, drop_last=False):
    """Yield mini-batches ``X[idx]`` (or ``(X[idx], y[idx])``) covering every sample once.

    Parameters
    ----------
    X : array, first axis = samples
    y : array with the same first length, optional
    batch_size : int >= 1
    shuffle : bool, default True
        A new random order each call (each epoch); without it, batches are
        consecutive slices (views, no copy).
    rng : numpy.random.Generator, int seed or None
    drop_last : bool, default False
        Skip the last batch when it is smaller than ``batch_size``.

    Every argument is checked when ``minibatches`` is called, not at the first batch.
    """
    X = np.asarray(X)
    if X.ndim < 1:
        raise ValueError("X must have at least one axis (samples first)")
    n = X.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0] if y.ndim else 0} samples, expected {n} like X")
    batch_size = _int("batch_size", batch_size, 1)
    shuffle = _check.flag("shuffle", shuffle)
    drop_last = _check.flag("drop_last", drop_last)
    order = as_generator(rng).permutation(n) if shuffle else None
    return _batches(X, y, n, batch_size, order, drop_last)


def _batches(X, y, n, batch_size, order, drop_last):
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if drop_last and stop - start < batch_size:
            return
        idx = order[start:stop] if order is not None else slice(start, stop)
        yield X[idx] if y is None else (X[idx], y[idx])


def suggest_batch_size(n_samples, bytes_per_sample, memory_budget=None):
    """The seed's guideline for the mini-batch size.

    * A small set (at most :data:`SMALL_DATASET` = 4096 samples, "a few
      thousand"): the whole set, i.e. batch gradient descent.
    * More: the largest power of two from 64 to 512 whose batch
      (``batch · bytes_per_sample``) fits in ``memory_budget`` bytes (no
      budget: 512).  If not even 64 fits, the largest smaller power of two
      that does; if not even one sample fits, ``ValueError``.
    """
    n_samples = _int("n_samples", n_samples, 1)
    bytes_per_sample = _int("bytes_per_sample", bytes_per_sample, 1)
    if memory_budget is not None:
        memory_budget = _int("memory_budget", memory_budget, 1)
        if bytes_per_sample > memory_budget:
            raise ValueError(f"one sample ({bytes_per_sample} bytes) does not fit in "
                             f"memory_budget ({memory_budget} bytes)")
    fits = lambda b: memory_budget is None or b * bytes_per_sample <= memory_budget  # noqa: E731
    if n_samples <= SMALL_DATASET and fits(n_samples):
        return n_samples
    for b in (512, 256, 128, 64, 32, 16, 8, 4, 2, 1):
        if b <= n_samples and fits(b):
            return b
    return 1
