"""The dataset shipped with fastopt (the UCI handwritten digits) and its train/test split."""

import time

import numpy as np

from ..kernels import _check
from .preprocessing import Standardizer

__all__ = ["load_digits", "prepare_data"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI handwritten digits shipped with fastopt: X (1797, 64) float32 in 0..16, y (1797,) int64.

    A copy of the test set of the UCI "Optical Recognition of Handwritten
    Digits" data (Alpaydin & Kaynak, 1998; CC BY 4.0), as distributed with
    scikit-learn; see ``fastopt/_data/DIGITS_LICENSE.txt``.
    """
    from importlib import resources

    with resources.files("fastopt").joinpath("_data/digits.npz").open("rb") as f:
        with np.load(f) as z:
            return z["X"].astype(np.float32), z["y"].astype(np.int64)


def prepare_data(seed: int, test_fraction: float = 0.2):
    """Digits split into train/test (by a seeded shuffle), standardized on train.

    ``test_fraction`` is in [0, 1) and leaves at least one training sample.
    Returns ``(X_train, y_train, X_test, y_test, seconds spent standardizing)``.
    """
    seed = _check.integer("seed", seed, 0)
    test_fraction = _check.unit_interval("test_fraction", test_fraction)
    X, y = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    if n_test >= len(y):
        raise ValueError(f"test_fraction = {test_fraction} leaves no training sample")
    test, train = order[:n_test], order[n_test:]
    scaler = Standardizer()
    t = time.perf_counter()
    Xtr = scaler.fit_transform(X[train])
    Xte = scaler.transform(X[test])
    kernel_time = time.perf_counter() - t
    return Xtr, y[train], Xte, y[test], kernel_time
