r"""Input normalization: centre each feature and divide by its standard deviation.

.. math::

    \mu_j = \frac1m \sum_i x_{ij}, \qquad
    \sigma_j^2 = \frac1m \sum_i (x_{ij} - \mu_j)^2, \qquad
    x_{ij} \leftarrow \frac{x_{ij} - \mu_j}{\sigma_j}

The seed writes :math:`x / \sigma^2`, which does not give unit variance (it
gives variance :math:`1/\sigma^2`); fastopt divides by :math:`\sigma`, as
scikit-learn's ``StandardScaler`` does.  (The seed's σ² is also written as
the mean of :math:`x^2` after centring, which is the variance used here.)
"""

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads

__all__ = ["Standardizer", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """The Standardizer was used before ``fit``."""


_PER_FEATURE = ("mean_", "std_", "scale_")


class Standardizer(Checked):
    """Per-feature standardization of a (n_samples, n_features) array, in float32.

    The statistics come from one fused, deterministic pass over X
    (accumulated in double, with a per-feature shift, so data far from zero
    is safe); ``transform`` is one fused pass and may work in place.
    Zero-variance features are centred but left unscaled (divided by 1).

    Parameters
    ----------
    (none)
        ``fit(X)`` takes X as a C-contiguous float32 array of shape (n_samples,
        n_features) (other arrays are converted); ``transform(X, out=None)`` writes
        float32 into ``out`` (may be X itself: in place).

    Attributes
    ----------
    mean_ : ndarray of float64, (n_features,)
    std_ : ndarray of float64, (n_features,)
        The biased standard deviation (ddof = 0).
    scale_ : ndarray of float64, (n_features,)
        What transform divides by: ``std_``, or 1 where ``std_ == 0``.
    n_features_in_ : int
    n_samples_seen_ : int

    Notes
    -----
    The fitted attributes may be set by hand (e.g. statistics saved elsewhere) and are
    checked when set: ``mean_``, ``std_`` and ``scale_`` become float64 copies, finite, one
    value per feature (``std_ >= 0``, ``scale_ > 0``), as many as ``n_features_in_`` and
    as each other (a rejected value changes nothing); any other public name raises
    AttributeError.  Pickles are checked the same way when they load.

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> X = np.array([[1., 10.], [3., 10.], [5., 10.]], dtype=np.float32)
    >>> s = fastopt.Standardizer().fit(X)
    >>> s.mean_, s.scale_
    (array([ 3., 10.]), array([1.63299316, 1.        ]))
    >>> s.transform(X)[:, 0]
    array([-1.2247449,  0.       ,  1.2247449], dtype=float32)
    """

    def _prepare(self, X, what):
        X = np.asarray(X)  # (an ndarray subclass becomes a plain view)
        if X.ndim != 2:
            raise ValueError(f"{what} expects a 2-D array (n_samples, n_features), "
                             f"got shape {X.shape}")
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise TypeError(f"X has dtype {X.dtype}, expected a real numeric dtype")
        # float32, C-contiguous and aligned (the kernels' loads), copied only if it is not
        return np.require(X, np.float32, ["C_CONTIGUOUS", "ALIGNED"])

    def fit(self, X: np.ndarray) -> "Standardizer":
        """Compute the per-feature mean and standard deviation of X. Returns self."""
        X = self._prepare(X, "fit")
        n, f = X.shape
        if n == 0:
            raise ValueError("fit needs at least one sample, got 0")
        if f == 0:
            raise ValueError("fit needs at least one feature, got 0")
        mean = np.empty(f)
        var = np.empty(f)
        ext._batchnorm.channel_stats(X.reshape(n, f, 1), mean, var, get_num_threads())
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(var)))
        if bad.size:
            raise ValueError(f"X has NaN or infinity in feature {int(bad[0])}"
                             + (f" (and {bad.size - 1} more)" if bad.size > 1 else ""))
        # (the kernel's own results: set together, as one consistent fit)
        self._mean_ = mean
        self._std_ = np.sqrt(var)
        self._scale_ = np.where(self._std_ > 0, self._std_, 1.0)
        self._n_features_in_ = f
        self._n_samples_seen_ = n
        return self

    # ------------------------------------------------ fitted attributes, checked when set
    def _fitted(self, name):
        try:
            return self.__dict__["_" + name]
        except KeyError:
            raise NotFittedError(f"this Standardizer is not fitted yet: it has no {name} "
                                 "(call fit(X))") from None

    def _set_per_feature(self, name, value):
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be an array of real numbers, got "
                            f"{type(value).__name__}")
        v = np.asarray(value)
        if v.dtype == object or v.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be an array of real numbers, got dtype {v.dtype}")
        if v.ndim != 1 or v.size == 0:
            raise ValueError(f"{name} must be a 1-D array with one value per feature, got "
                             f"shape {v.shape}")
        with np.errstate(over="ignore"):
            v = np.array(v, dtype=np.float64)
        n = self.__dict__.get("_n_features_in_")
        if n is not None and v.size != n:
            raise ValueError(f"{name} has {v.size} values, but n_features_in_ is {n}")
        for other in _PER_FEATURE:
            o = self.__dict__.get("_" + other)
            if other != name and o is not None and o.size != v.size:
                raise ValueError(f"{name} has {v.size} values, but {other} has {o.size}")
        ok = np.isfinite(v)
        what = "finite"
        if name == "scale_":
            ok &= v > 0
            what = "finite and > 0"
        elif name == "std_":
            ok &= v >= 0
            what = "finite and >= 0"
        if not ok.all():
            j = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{name} must be {what}, got {v[j]} at feature {j}")
        self.__dict__["_" + name] = v

    @property
    def mean_(self):
        return self._fitted("mean_")

    @mean_.setter
    def mean_(self, value):
        self._set_per_feature("mean_", value)

    @property
    def std_(self):
        return self._fitted("std_")

    @std_.setter
    def std_(self, value):
        self._set_per_feature("std_", value)

    @property
    def scale_(self):
        return self._fitted("scale_")

    @scale_.setter
    def scale_(self, value):
        self._set_per_feature("scale_", value)

    @property
    def n_features_in_(self):
        return self._fitted("n_features_in_")

    @n_features_in_.setter
    def n_features_in_(self, value):
        n = _check.integer("n_features_in_", value, 1)
        for name in _PER_FEATURE:
            v = self.__dict__.get("_" + name)
            if v is not None and v.size != n:
                raise ValueError(f"n_features_in_ = {n}, but {name} has {v.size} values")
        self._n_features_in_ = n

    @property
    def n_samples_seen_(self):
        return self._fitted("n_samples_seen_")

    @n_samples_seen_.setter
    def n_samples_seen_(self, value):
        self._n_samples_seen_ = _check.integer("n_samples_seen_", value, 1)

    def __setstate__(self, state):
        # every fitted value goes through its check (also pickles written before the checks,
        # whose state names them without the leading underscore)
        if not isinstance(state, dict):
            raise TypeError(f"not a Standardizer state: {type(state).__name__}")
        names = ("mean_", "std_", "scale_", "n_samples_seen_", "n_features_in_")
        for name in names:
            for key in ("_" + name, name):
                if key in state:
                    setattr(self, name, state[key])
                    break

    def _check_fitted(self, X, what):
        if not all("_" + k in self.__dict__ for k in ("mean_", "scale_", "n_features_in_")):
            raise NotFittedError(f"this Standardizer is not fitted yet: call fit(X) before {what}")
        X = self._prepare(X, what)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the Standardizer was fitted "
                             f"with {self.n_features_in_}")
        return X

    def _apply(self, X, out, mu, scale, shift, what):
        X = self._check_fitted(X, what)
        if out is None:
            out = np.empty_like(X)
        else:
            _check.array("out", out, writable=True, like=X, like_name="X")
            same = (out.__array_interface__["data"][0] == X.__array_interface__["data"][0])
            if np.may_share_memory(out, X) and not same:
                raise ValueError("out overlaps X without being X: pass out=X to work in "
                                 "place, or a separate array")
        n, f = X.shape
        if n:
            ext._batchnorm.affine(X.reshape(n, f, 1), out.reshape(n, f, 1),
                                  mu.astype(np.float32), scale.astype(np.float32),
                                  shift.astype(np.float32), get_num_threads())
        return out

    def transform(self, X: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """``(X - mean_) / scale_`` as float32; ``out=X`` works in place (X float32 C-contiguous)."""
        f = getattr(self, "n_features_in_", 0)
        return self._apply(X, out, getattr(self, "mean_", None), 1.0 / getattr(self, "scale_", 1.0),
                           np.zeros(f), "transform")

    def fit_transform(self, X: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        # Two kernel calls, not batch norm's fused statistics + affine (forward_train, eps=0,
        # same bits elsewhere): that one gives NaN for a zero-variance feature, which fit
        # leaves unscaled, and would write out before fit refuses NaN or infinity in X.
        return self.fit(X).transform(X, out=out)

    def inverse_transform(self, X: np.ndarray, *,
                          out: np.ndarray | None = None) -> np.ndarray:
        """``X * scale_ + mean_``: undo :meth:`transform`."""
        f = getattr(self, "n_features_in_", 0)
        return self._apply(X, out, np.zeros(f), getattr(self, "scale_", None),
                           getattr(self, "mean_", None), "inverse_transform")
