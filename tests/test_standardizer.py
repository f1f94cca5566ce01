import numpy as np
import pytest

import fastopt
from fastopt.data.preprocessing import NotFittedError


def _np_standard_scaler(X):
    """scikit-learn's StandardScaler, in float64 NumPy."""
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    std = X64.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    return mean, std, scale, (X64 - mean) / scale


def _data(n=1000, f=7, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, f)) * rng.uniform(0.1, 50, f) + rng.uniform(-100, 100, f))
    if f > 3:
        X[:, 3] = 42.0  # zero variance
    return X.astype(np.float32)


def test_matches_standard_scaler_formula():
    X = _data()
    s = fastopt.Standardizer().fit(X)
    mean, std, scale, Z = _np_standard_scaler(X)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.std_, std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.scale_, scale, rtol=1e-6)
    Zk = s.transform(X)
    assert Zk.dtype == np.float32
    np.testing.assert_allclose(Zk, Z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(Zk[:, [0, 1, 2, 4, 5, 6]].std(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(Zk[:, 3], 0.0)  # centred, left unscaled
    np.testing.assert_allclose(s.inverse_transform(Zk), X, rtol=1e-5, atol=1e-4)


def test_matches_scikit_learn_when_installed():
    sklearn = pytest.importorskip("sklearn.preprocessing")
    X = _data(seed=3)
    ref = sklearn.StandardScaler().fit(X.astype(np.float64))
    s = fastopt.Standardizer().fit(X)
    np.testing.assert_allclose(s.mean_, ref.mean_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.scale_, ref.scale_, rtol=1e-6)
    np.testing.assert_allclose(s.transform(X), ref.transform(X.astype(np.float64)), atol=1e-6)


def test_divides_by_sigma_not_sigma_squared():
    # The seed's x / sigma^2 would give variance 1/sigma^2 = 1/16 here.
    X = (np.random.default_rng(0).standard_normal((5000, 1)) * 4 + 1).astype(np.float32)
    Z = fastopt.Standardizer().fit_transform(X)
    assert Z.var() == pytest.approx(1.0, rel=1e-4)


def test_data_far_from_zero_is_accurate():
    X = (1e4 + 0.01 * np.random.default_rng(1).standard_normal((200_000, 2))).astype(np.float32)
    s = fastopt.Standardizer().fit(X)
    np.testing.assert_allclose(s.std_, X.astype(np.float64).std(axis=0), rtol=1e-4)


def test_transform_in_place_and_determinism_across_threads():
    X = _data(n=300_000, f=4)
    with fastopt.num_threads(1):
        s1 = fastopt.Standardizer().fit(X)
    with fastopt.num_threads(2):
        s2 = fastopt.Standardizer().fit(X)
    np.testing.assert_array_equal(s1.mean_, s2.mean_)
    np.testing.assert_array_equal(s1.std_, s2.std_)
    expected = s1.transform(X)
    out = s1.transform(X, out=X)
    assert out is X
    np.testing.assert_array_equal(X, expected)


def test_errors():
    s = fastopt.Standardizer()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        s.transform(np.zeros((2, 2)))
    with pytest.raises(NotFittedError):
        s.inverse_transform(np.zeros((2, 2)))
    X = _data(n=20, f=3)
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity in feature 2"):
        s.fit(X)
    assert not hasattr(s, "mean_")  # nothing was fitted
    X[5, 2] = 0
    X[1, 0] = np.inf
    with pytest.raises(ValueError, match="feature 0"):
        s.fit(X)
    s.fit(_data(n=20, f=3))
    with pytest.raises(ValueError, match="X has 4 features, but the Standardizer was fitted with 3"):
        s.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        s.fit(np.zeros(5))
    with pytest.raises(ValueError, match="at least one sample"):
        s.fit(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="dtype"):
        s.fit(np.array([["a", "b"]]))


def test_transform_refuses_out_that_overlaps_x_without_being_x():
    # A view shifted by one row: the fused pass would read values it had already written.
    buf = _data(n=101, f=3)
    X, Y = buf[:100], buf[1:]
    s = fastopt.Standardizer().fit(X)
    before = buf.copy()
    for method in (s.transform, s.inverse_transform):
        with pytest.raises(ValueError, match="out overlaps X"):
            method(X, out=Y)
    np.testing.assert_array_equal(buf, before)
    assert s.transform(X, out=X) is X   # exactly X: in place is fine


def _unaligned(shape):
    a = np.zeros(int(np.prod(shape)) * 4 + 1, np.uint8)[1:].view(np.float32).reshape(shape)
    assert not a.flags.aligned
    return a


def test_unaligned_arrays():
    X = _data(n=50, f=3)
    s = fastopt.Standardizer().fit(X)
    expected = s.transform(X)
    Xu = _unaligned(X.shape)
    Xu[...] = X
    np.testing.assert_array_equal(s.transform(Xu), expected)       # X is copied, aligned
    np.testing.assert_array_equal(fastopt.Standardizer().fit(Xu).mean_, s.mean_)
    out = _unaligned(X.shape)
    with pytest.raises(ValueError, match="out is not aligned"):
        s.transform(X, out=out)
    assert not out.any()


# ------------------------------------------------ fitted attributes, checked when set (issue 21)

def _fitted(f=4):
    X = _data(n=60, f=f)
    return X, fastopt.Standardizer().fit(X)


@pytest.mark.parametrize("attr, value, error, match", [
    ("mean_", np.zeros(1), ValueError, "mean_ has 1 values, but n_features_in_ is 4"),
    ("scale_", np.zeros(2), ValueError, "scale_ has 2 values"),
    ("n_features_in_", 1000, ValueError, "n_features_in_ = 1000, but mean_ has 4"),
    ("scale_", np.zeros(4), ValueError, "scale_ must be finite and > 0"),
    ("scale_", [1.0, 1.0, 1.0, np.nan], ValueError, "scale_ must be finite"),
    ("mean_", np.full(4, np.inf), ValueError, "mean_ must be finite"),
    ("std_", -np.ones(4), ValueError, "std_ must be finite and >= 0"),
    ("mean_", None, TypeError, "mean_ must be an array of real numbers"),
    ("mean_", np.zeros((2, 2)), ValueError, "1-D"),
    ("n_features_in_", 4.0, TypeError, "n_features_in_ must be an int"),
    ("n_samples_seen_", -3, ValueError, "n_samples_seen_"),
])
def test_fitted_attributes_checked_when_set(attr, value, error, match):
    # before: a 1-value mean_ (or n_features_in_ = 1000) made transform read past the end of
    # the statistics (garbage or NaN out, no error); a zero scale_ gave infinities
    X, s = _fitted()
    expected = s.transform(X)
    before = {k: np.copy(getattr(s, k)) for k in ("mean_", "std_", "scale_", "n_features_in_",
                                                   "n_samples_seen_")}
    with pytest.raises(error, match=match):
        setattr(s, attr, value)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(s, k), v)
    np.testing.assert_array_equal(s.transform(X), expected)


def test_fitted_attributes_set_by_hand():
    X, s = _fitted()
    t = fastopt.Standardizer()
    t.mean_ = s.mean_.tolist()                      # any real sequence, kept as float64
    t.scale_ = s.scale_.astype(np.float32)
    with pytest.raises(NotFittedError):             # no n_features_in_ yet
        t.transform(X)
    t.n_features_in_ = 4
    assert t.mean_.dtype == np.float64 and t.mean_ is not s.mean_
    # the same as the fitted one, whose scale_ is float64 (the kernel takes float32 anyway)
    np.testing.assert_array_equal(t.transform(X), s.transform(X))


def test_misspelled_attribute_raises_with_hint():
    _, s = _fitted()
    with pytest.raises(AttributeError, match="did you mean 'mean_'"):
        s.mean = np.zeros(4)
    with pytest.raises(AttributeError, match="did you mean 'scale_'"):
        s.scale = np.ones(4)


def test_pickle_round_trip_and_tampered_pickle():
    import pickle

    X, s = _fitted()
    s2 = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(s2.transform(X), s.transform(X))

    class Old:  # a pickle whose state names the attributes as before (public names)
        def __init__(self, state):
            self.state = state

        def __reduce__(self):
            return fastopt.Standardizer, (), self.state

    good = {"mean_": s.mean_, "std_": s.std_, "scale_": s.scale_, "n_features_in_": 4,
            "n_samples_seen_": 60}
    s3 = pickle.loads(pickle.dumps(Old(good)))
    np.testing.assert_array_equal(s3.transform(X), s.transform(X))
    with pytest.raises(ValueError, match="n_features_in_ = 400"):
        pickle.loads(pickle.dumps(Old({**good, "n_features_in_": 400})))
