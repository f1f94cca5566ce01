"""fastopt.integrations against the real scikit-learn and autograd: the same results as theirs."""

import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- scikit-learn

@pytest.fixture(scope="module")
def sk():
    pytest.importorskip("sklearn")
    from sklearn import neural_network

    from fastopt.integrations import sklearn as fo_sklearn
    return neural_network, fo_sklearn


@pytest.fixture(scope="module")
def digits():
    from fastopt.data import load_digits

    X, y = load_digits()
    return X[:360].astype(np.float64) / 16.0, y[:360]


SMALL = dict(hidden_layer_sizes=(32, 16), batch_size=50, max_iter=8, random_state=0)


def _fit_pair(sk, X, y, est="MLPClassifier", fit=lambda e, X, y: e.fit(X, y), **kw):
    neural_network, fo_sklearn = sk
    params = {**SMALL, **kw}
    theirs = getattr(neural_network, est)(**params)
    ours = getattr(fo_sklearn, est)(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ConvergenceWarning: few epochs on purpose
        fit(theirs, X, y)
        fit(ours, X, y)
    return theirs, ours


def _assert_same_fit(theirs, ours, rtol=1e-10, moved_from=None):
    """Same coefficients (relative to each array's largest value), iterations, loss curve."""
    assert ours.n_iter_ == theirs.n_iter_
    for a, b in zip(theirs.coefs_ + theirs.intercepts_, ours.coefs_ + ours.intercepts_):
        assert b.dtype == a.dtype and b.shape == a.shape
        assert np.max(np.abs(b - a)) <= rtol * np.max(np.abs(a)), np.max(np.abs(b - a))
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    lr_theirs = theirs._optimizer.learning_rate
    np.testing.assert_allclose(ours._optimizer.learning_rate, lr_theirs, rtol=1e-12)
    if theirs.validation_scores_ is not None:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=rtol)
        assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=rtol)


def _on_fastopt(est, kind):
    import fastopt

    opt = est._optimizer
    assert type(opt).__name__ == f"Fastopt{kind}Optimizer"
    assert isinstance(opt.fastopt_optimizer, getattr(fastopt, {"Adam": "Adam", "SGD": "SGD"}[kind]))


SGD_CASES = [
    dict(learning_rate=lr, momentum=mom, nesterovs_momentum=nest)
    for lr in ("constant", "invscaling", "adaptive")
    for mom, nest in ((0.0, False), (0.9, True), (0.9, False))
]


@pytest.mark.parametrize("kw", [dict(solver="adam", learning_rate_init=0.01)]
                         + [dict(solver="sgd", learning_rate_init=0.05, power_t=0.25, **c)
                            for c in SGD_CASES],
                         ids=["adam"] + ["sgd-{learning_rate}-m{momentum}-nesterov{nesterovs_momentum}"
                                         .format(**c) for c in SGD_CASES])
def test_classifier_fit_matches_sklearn_float64(sk, digits, kw):
    X, y = digits
    theirs, ours = _fit_pair(sk, X, y, **kw)
    _on_fastopt(ours, "Adam" if kw["solver"] == "adam" else "SGD")
    assert ours.coefs_[0].dtype == np.float64
    _assert_same_fit(theirs, ours)
    # the fit did something: the loss went down by far more than the tolerance
    assert ours.loss_curve_[0] - ours.loss_curve_[-1] > 0.05
    if kw["solver"] == "sgd" and kw["learning_rate"] == "invscaling":
        assert ours._optimizer.learning_rate < 0.05 / 2   # the schedule changed lr (buffers rescaled)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("kw", [dict(solver="adam", learning_rate_init=0.01),
                                dict(solver="sgd", learning_rate_init=0.05),
                                dict(solver="sgd", learning_rate_init=0.05, learning_rate="invscaling",
                                     power_t=0.25, nesterovs_momentum=False)],
                         ids=["adam", "sgd-nesterov", "sgd-invscaling"])
def test_classifier_fit_matches_sklearn_float32(sk, digits, kw):
    # scikit-learn trains in float32 when X is; part of its update is computed in float64,
    # fastopt's all in float32, so the two agree at float32 precision.
    X, y = digits
    theirs, ours = _fit_pair(sk, X.astype(np.float32), y, **kw)
    _on_fastopt(ours, "Adam" if kw["solver"] == "adam" else "SGD")
    assert ours.coefs_[0].dtype == np.float32
    assert all(s.dtype == np.float32 for bufs in ours._optimizer.fastopt_optimizer.state.values()
               for s in bufs)
    _assert_same_fit(theirs, ours, rtol=2e-5)
    assert np.mean(ours.predict(X.astype(np.float32)) == theirs.predict(X.astype(np.float32))) >= 0.99


@pytest.mark.parametrize("kw", [
    # plateaus: tol so large that no epoch "improves"; adaptive divides lr by 5 until 1e-6, then stops
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=0.5, n_iter_no_change=1,
         max_iter=100),
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=0.5, n_iter_no_change=1,
         max_iter=100, nesterovs_momentum=False),
    dict(solver="sgd", learning_rate="constant", learning_rate_init=0.05, tol=0.5, n_iter_no_change=2,
         max_iter=100),
    dict(solver="adam", learning_rate_init=0.01, tol=0.5, n_iter_no_change=2, max_iter=100),
    # early stopping on a validation split: scores, the best weights restored
    dict(solver="adam", learning_rate_init=0.01, early_stopping=True, max_iter=30),
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1, early_stopping=True,
         n_iter_no_change=2, tol=1e-2, max_iter=40),
], ids=["adaptive-nesterov", "adaptive-momentum", "sgd-stops", "adam-stops", "adam-early",
        "sgd-adaptive-early"])
def test_stopping_paths_match_sklearn(sk, digits, kw):
    X, y = digits
    theirs, ours = _fit_pair(sk, X, y, **kw)
    _assert_same_fit(theirs, ours)
    assert ours.n_iter_ < kw["max_iter"]               # stopped early, at the same epoch
    if kw["solver"] == "sgd" and kw["learning_rate"] == "adaptive" and not kw.get("early_stopping"):
        assert ours._optimizer.learning_rate <= 1e-6   # lr divided by 5 repeatedly, as sklearn's


@pytest.mark.parametrize("kw", [dict(solver="adam", learning_rate_init=0.01),
                                dict(solver="sgd", learning_rate_init=0.01, learning_rate="invscaling",
                                     power_t=0.25)], ids=["adam", "sgd"])
def test_regressor_matches_sklearn(sk, digits, kw):
    X, _ = digits
    rng = np.random.default_rng(0)
    y = np.c_[np.tanh(X @ rng.standard_normal(64)), X[:, :8].sum(1)]
    theirs, ours = _fit_pair(sk, X, y, est="MLPRegressor", **kw)
    _on_fastopt(ours, "Adam" if kw["solver"] == "adam" else "SGD")
    _assert_same_fit(theirs, ours)
    assert ours.loss_curve_[-1] < 0.5 * ours.loss_curve_[0]
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9, atol=1e-12)


def test_sample_weight_matches_sklearn(sk, digits):
    import inspect

    if "sample_weight" not in inspect.signature(sk[0].MLPClassifier.fit).parameters:
        pytest.skip("this scikit-learn's MLP has no sample_weight (added in 1.7)")
    X, y = digits
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    kw = dict(solver="sgd", learning_rate_init=0.05)
    theirs, ours = _fit_pair(sk, X, y, fit=lambda e, X, y: e.fit(X, y, sample_weight=w), **kw)
    _on_fastopt(ours, "SGD")
    _assert_same_fit(theirs, ours)


def test_sparse_input_matches_sklearn(sk, digits):
    sparse = pytest.importorskip("scipy.sparse")
    X, y = digits
    theirs, ours = _fit_pair(sk, sparse.csr_matrix(X), y, solver="adam", learning_rate_init=0.01)
    _on_fastopt(ours, "Adam")
    _assert_same_fit(theirs, ours)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_warm_start_and_rebound_coefs_match_sklearn(sk, digits, solver):
    X, y = digits
    classes = np.unique(y)
    kw = dict(solver=solver, learning_rate_init=0.02, learning_rate="invscaling", power_t=0.25)

    def partial(e, X, y):
        for k in range(4):
            e.partial_fit(X[k * 90:(k + 1) * 90], y[k * 90:(k + 1) * 90], classes=classes)
        # rebinding coefs_ (new arrays, same values): the optimizer follows, keeping its state
        e.coefs_ = [c.copy() for c in e.coefs_]
        e.intercepts_ = [c.copy() for c in e.intercepts_]
        for k in range(4):
            e.partial_fit(X[k * 90:(k + 1) * 90], y[k * 90:(k + 1) * 90])
    theirs, ours = _fit_pair(sk, X, y, fit=partial, **kw)
    assert len(ours.loss_curve_) == 8                          # one entry per partial_fit
    _assert_same_fit(theirs, ours)
    assert ours._optimizer.fastopt_optimizer.step_count == 16   # 8 calls of 2 batches of 50
    assert ours._optimizer._params[0] is ours.coefs_[0]

    def warm(e, X, y):
        e.fit(X, y)
        e.set_params(warm_start=True, max_iter=3)
        e.fit(X, y)
    theirs, ours = _fit_pair(sk, X, y, fit=warm, **kw)
    _assert_same_fit(theirs, ours)


def _strided(a):
    """A copy of ``a`` that is a strided view (every other row of a larger array)."""
    big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
    big[::2] = a
    return big[::2]


REPLACEMENTS = {   # coefs_ and intercepts_ rebound to arrays of another layout or dtype
    "fortran": lambda a: np.asfortranarray(a),
    "float32": lambda a: a.astype(np.float32),
    "fortran-float32": lambda a: np.asfortranarray(a, dtype=np.float32),
    "strided": _strided,
    "float16": lambda a: a.astype(np.float16),
    "float64-with-float32-X": lambda a: a.astype(np.float64),
}


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("how", list(REPLACEMENTS))
def test_partial_fit_after_coefs_replaced_by_another_layout_or_dtype_matches_sklearn(sk, digits,
                                                                                     solver, how):
    # Before: fastopt's drop-ins raised (C-contiguous, state dtype); scikit-learn's keep training.
    X, y = digits
    if how == "float64-with-float32-X":
        X = X.astype(np.float32)
    classes = np.unique(y)
    replaced = {}

    def partial(e, X, y):
        for k in range(2):
            e.partial_fit(X[k * 90:(k + 1) * 90], y[k * 90:(k + 1) * 90], classes=classes)
        e.coefs_ = [REPLACEMENTS[how](c) for c in e.coefs_]
        e.intercepts_ = [REPLACEMENTS[how](c) for c in e.intercepts_]
        replaced[e] = e.coefs_ + e.intercepts_
        for k in range(4):
            e.partial_fit(X[k * 90:(k + 1) * 90], y[k * 90:(k + 1) * 90])
    theirs, ours = _fit_pair(sk, X, y, fit=partial, solver=solver, learning_rate_init=0.02,
                             learning_rate="invscaling", power_t=0.25)
    for e in (theirs, ours):   # updated in place, keeping their layout and dtype
        assert all(a is b for a, b in zip(e.coefs_ + e.intercepts_, replaced[e]))
    for a, b in zip(theirs.coefs_ + theirs.intercepts_, ours.coefs_ + ours.intercepts_):
        assert (b.dtype, b.flags.c_contiguous, b.flags.f_contiguous) == \
               (a.dtype, a.flags.c_contiguous, a.flags.f_contiguous)
    exact = how in ("fortran", "strided")     # float64 throughout: the usual agreement
    tol = {"float16": 2e-3}.get(how, 1e-10 if exact else 2e-5)
    _assert_same_fit(theirs, ours, rtol=tol)
    _on_fastopt(ours, "Adam" if solver == "adam" else "SGD")
    assert ours._optimizer.fastopt_optimizer.step_count == 12    # 6 calls of 2 batches of 50
    # it keeps training, and in-place writes into the replaced arrays count, as in scikit-learn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in (theirs, ours):
            e.coefs_[0][:3] = 0.5
            e.partial_fit(X[:90], y[:90])
    _assert_same_fit(theirs, ours, rtol=tol)


@pytest.mark.parametrize("how,exc", [("read-only", ValueError), ("int", TypeError)])
def test_partial_fit_refuses_what_sklearn_refuses(sk, digits, how, exc):
    X, y = digits
    neural_network, fo_sklearn = sk
    for cls in (neural_network.MLPClassifier, fo_sklearn.MLPClassifier):
        e = cls(**{**SMALL, "solver": "adam"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e.partial_fit(X[:90], y[:90], classes=np.unique(y))
        if how == "read-only":
            for c in e.coefs_:
                c.flags.writeable = False
        else:
            e.coefs_ = [c.astype(np.int64) for c in e.coefs_]
        before = [c.copy() for c in e.coefs_]
        with pytest.raises(exc):
            e.partial_fit(X[:90], y[:90])
        for a, b in zip(e.coefs_, before):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw", [dict(solver="adam", learning_rate_init=0.01),
                                dict(solver="sgd", learning_rate_init=0.05, learning_rate="invscaling",
                                     power_t=0.25)], ids=["adam", "sgd"])
def test_joblib_round_trip_predicts_and_continues(sk, digits, kw, tmp_path):
    joblib = pytest.importorskip("joblib")
    X, y = digits
    theirs, ours = _fit_pair(sk, X, y, **kw)
    path = tmp_path / "model.joblib"
    joblib.dump(ours, path)
    loaded = joblib.load(path)
    assert type(loaded) is type(ours)
    np.testing.assert_array_equal(loaded.predict_proba(X), ours.predict_proba(X))
    # the optimizer's state came along, without a second copy of the coefficients
    assert loaded._optimizer.fastopt_optimizer is None        # rebuilt at the next update
    if kw["solver"] == "adam":
        assert loaded._optimizer.t == ours._optimizer.t == ours.n_iter_ * 8   # 8 batches an epoch
        for a, b in zip(loaded._optimizer.ms + loaded._optimizer.vs, ours._optimizer.ms + ours._optimizer.vs):
            np.testing.assert_array_equal(a, b)
    else:
        for a, b in zip(loaded._optimizer.velocities, ours._optimizer.velocities):
            np.testing.assert_array_equal(a, b)
        assert np.max(np.abs(ours._optimizer.velocities[0])) > 0
    # continuing after loading gives the same bits as continuing without saving
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in (ours, loaded, theirs):
            for k in range(3):
                est.partial_fit(X[k * 120:(k + 1) * 120], y[k * 120:(k + 1) * 120])
    for a, b in zip(ours.coefs_ + ours.intercepts_, loaded.coefs_ + loaded.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.loss_curve_, ours.loss_curve_)
    _assert_same_fit(theirs, loaded)
    state = loaded._optimizer.fastopt_optimizer.state
    assert all(s is not None for bufs in state.values() for s in bufs)
    # plain pickle too, of an estimator loaded and stepped again
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.predict(X), loaded.predict(X))


def test_lbfgs_and_unsupported_hyperparameters_are_sklearns(sk, digits):
    from sklearn.neural_network._stochastic_optimizers import SGDOptimizer

    X, y = digits
    theirs, ours = _fit_pair(sk, X, y, solver="lbfgs", max_iter=20)
    assert not hasattr(ours, "_optimizer")
    for a, b in zip(theirs.coefs_, ours.coefs_):
        np.testing.assert_array_equal(a, b)
    # momentum = 1 is allowed by scikit-learn but not by fastopt: scikit-learn's own optimizer runs
    theirs, ours = _fit_pair(sk, X, y, solver="sgd", momentum=1.0, learning_rate_init=1e-3, max_iter=3)
    assert type(ours._optimizer) is SGDOptimizer
    for a, b in zip(theirs.coefs_, ours.coefs_):
        np.testing.assert_array_equal(a, b)


def test_estimator_api(sk, digits):
    from sklearn.base import clone

    neural_network, fo_sklearn = sk
    est = fo_sklearn.MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", momentum=0.5)
    assert isinstance(est, neural_network.MLPClassifier)
    assert est.get_params() == neural_network.MLPClassifier(hidden_layer_sizes=(8,), solver="sgd",
                                                            momentum=0.5).get_params()
    twin = clone(est)
    assert type(twin) is fo_sklearn.MLPClassifier and twin.get_params() == est.get_params()
    assert isinstance(fo_sklearn.MLPRegressor(), neural_network.MLPRegressor)
    with pytest.raises(AttributeError, match="_optimizer"):
        est._optimizer
    assert "fastopt" in fo_sklearn.MLPClassifier.__doc__


# ---------------------------------------------------------------------------- autograd

@pytest.fixture(scope="module")
def ag():
    pytest.importorskip("autograd")
    from autograd import grad
    from autograd.misc import flatten
    from autograd.misc import optimizers

    from fastopt.integrations import autograd as fo_autograd
    return optimizers, fo_autograd, grad, flatten


def _problem(ag):
    import autograd.numpy as anp

    grad = ag[2]
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((6, 3)), rng.standard_normal(4)
    x0 = {"w": [rng.standard_normal((3, 2)), (rng.standard_normal(2), 0.5)],
          "b": rng.standard_normal(4)}

    def loss(x, i):                              # depends on i, as a mini-batch loss does
        w, (v, s) = x["w"]
        return (anp.sum(anp.tanh(A @ w) ** 2) + (1 + i % 3) * anp.sum((v - s) ** 2)
                + anp.sum(anp.sin(x["b"] * B)))
    return grad(loss), x0


def _trajectory(fn, *args, **kw):
    rec = []
    out = fn(*args, callback=lambda x, i, g: rec.append((x, i, g)), **kw)  # keeps references
    return rec, out


def _assert_same_tree(a, b, flatten, rtol):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
    fa, fb = flatten(a)[0], flatten(b)[0]
    assert fa.shape == fb.shape and fa.dtype == fb.dtype
    assert np.max(np.abs(fa - fb), initial=0.0) <= rtol * max(np.max(np.abs(fa), initial=0.0), 1e-300)


AG_CASES = {"adam": dict(num_iters=60, step_size=0.05, b1=0.8, b2=0.99, eps=1e-7),
            "sgd": dict(num_iters=60, step_size=0.2, mass=0.7),
            "rmsprop": dict(num_iters=60, step_size=0.02, gamma=0.8, eps=1e-7)}


@pytest.mark.parametrize("name", list(AG_CASES))
def test_autograd_trajectories_match(ag, name):
    optimizers, fo_autograd, _, flatten = ag
    grad, x0 = _problem(ag)
    theirs, out_theirs = _trajectory(getattr(optimizers, name), grad, x0, **AG_CASES[name])
    ours, out_ours = _trajectory(getattr(fo_autograd, name), grad, x0, **AG_CASES[name])
    assert [r[1] for r in ours] == list(range(60))
    # every x and g the callback saw, compared after the run: snapshots nobody overwrote
    for (xa, ia, ga), (xb, ib, gb) in zip(theirs, ours):
        assert ia == ib
        _assert_same_tree(xa, xb, flatten, 1e-12)
        _assert_same_tree(ga, gb, flatten, 1e-12)
    _assert_same_tree(out_theirs, out_ours, flatten, 1e-12)
    assert isinstance(out_ours["w"][1], tuple)
    moved = np.max(np.abs(flatten(out_ours)[0] - flatten(x0)[0]))
    assert moved > 0.1


@pytest.mark.parametrize("name", list(AG_CASES))
def test_autograd_plain_array_callback_keeps_its_values(ag, name):
    # For one array x0, autograd's unflatten returns a view of the flat vector: what grad and
    # the callback kept must not change with the in-place updates that follow.
    optimizers, fo_autograd, grad_of, flatten = ag
    import autograd.numpy as anp

    target = np.linspace(-1.0, 2.0, 12).reshape(3, 4)
    grad = grad_of(lambda x, i: anp.sum(anp.tanh(x - target) ** 2) * (1 + i % 2))
    kept = []
    grad_kept = lambda x, i: (kept.append(x), grad(x, i))[1]
    x0 = np.zeros((3, 4))
    theirs, _ = _trajectory(getattr(optimizers, name), grad, x0, **AG_CASES[name])
    ours, _ = _trajectory(getattr(fo_autograd, name), grad_kept, x0, **AG_CASES[name])
    for (xa, _, ga), (xb, _, gb), xk in zip(theirs, ours, kept):
        _assert_same_tree(xa, xb, flatten, 1e-12)
        _assert_same_tree(xa, xk, flatten, 1e-12)
        _assert_same_tree(ga, gb, flatten, 1e-12)
    assert np.max(np.abs(ours[-1][0] - ours[0][0])) > 0.05


@pytest.mark.parametrize("name", list(AG_CASES))
def test_autograd_defaults_positional_and_plain_array(ag, name):
    optimizers, fo_autograd, grad_of, flatten = ag
    import autograd.numpy as anp

    rng = np.random.default_rng(4)
    target = rng.standard_normal((4, 3))
    grad = grad_of(lambda x, i: anp.sum((x - target) ** 2) + 0.1 * i * anp.sum(x))
    x0 = rng.standard_normal((4, 3))
    before = x0.copy()
    # defaults
    _assert_same_tree(getattr(optimizers, name)(grad, x0), getattr(fo_autograd, name)(grad, x0),
                      flatten, 1e-12)
    # positional arguments, as autograd's wrapper passes them
    args = {"adam": (None, 30, 0.01, 0.5, 0.9, 1e-6), "sgd": (None, 30, 0.05, 0.5),
            "rmsprop": (None, 30, 0.01, 0.5, 1e-6)}[name]
    _assert_same_tree(getattr(optimizers, name)(grad, x0, *args),
                      getattr(fo_autograd, name)(grad, x0, *args), flatten, 1e-12)
    np.testing.assert_array_equal(x0, before)       # the caller's array is never updated in place
    # float32 and zero iterations: autograd's dtypes
    x32 = x0.astype(np.float32)
    _assert_same_tree(getattr(optimizers, name)(grad, x32, num_iters=5),
                      getattr(fo_autograd, name)(grad, x32, num_iters=5), flatten, 1e-12)
    _assert_same_tree(getattr(optimizers, name)(grad, x32, num_iters=0),
                      getattr(fo_autograd, name)(grad, x32, num_iters=0), flatten, 0.0)


def test_autograd_signatures(ag):
    import inspect

    _, fo_autograd, _, _ = ag
    sigs = {name: [(p.name, p.default) for p in inspect.signature(getattr(fo_autograd, name)).parameters.values()]
            for name in ("adam", "sgd", "rmsprop")}
    E = inspect.Parameter.empty
    assert sigs["adam"] == [("grad", E), ("x0", E), ("callback", None), ("num_iters", 100),
                            ("step_size", 0.001), ("b1", 0.9), ("b2", 0.999), ("eps", 1e-8)]
    assert sigs["sgd"] == [("grad", E), ("x0", E), ("callback", None), ("num_iters", 200),
                           ("step_size", 0.1), ("mass", 0.9)]
    assert sigs["rmsprop"] == [("grad", E), ("x0", E), ("callback", None), ("num_iters", 100),
                               ("step_size", 0.1), ("gamma", 0.9), ("eps", 1e-8)]


@pytest.mark.parametrize("name, kw", [("sgd", dict(mass=1.0)), ("sgd", dict(step_size=-0.1)),
                                      ("adam", dict(b1=1.5)), ("rmsprop", dict(eps=0.0))])
def test_autograd_outside_fastopt_runs_autograds_own(ag, name, kw):
    optimizers, fo_autograd, grad_of, flatten = ag
    import autograd.numpy as anp

    grad = grad_of(lambda x, i: anp.sum(anp.cos(x)))
    x0 = [np.linspace(0.1, 1.0, 5)]
    with np.errstate(all="ignore"):
        a = getattr(optimizers, name)(grad, x0, num_iters=10, **kw)
        b = getattr(fo_autograd, name)(grad, x0, num_iters=10, **kw)
    np.testing.assert_array_equal(flatten(a)[0], flatten(b)[0])


def test_autograd_complex_values_run_autograds_own(ag):
    optimizers, fo_autograd, _, flatten = ag
    x0 = [np.array([1 + 1j, 2 - 1j])]
    grad = lambda x, i: [np.conj(x[0])]
    a = optimizers.sgd(grad, x0, num_iters=5)
    b = fo_autograd.sgd(grad, x0, num_iters=5)
    np.testing.assert_array_equal(flatten(a)[0], flatten(b)[0])


# ---------------------------------------------------------------------------- packaging, docs

def test_fastopt_imports_without_the_integrations_libraries():
    code = ("import sys, fastopt, fastopt.integrations; "
            "bad = [m for m in ('sklearn', 'autograd') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.slow  # (seconds: out of the quick loop)
def test_docs_integration_examples_run(sk, ag, capsys):
    from docs_examples import DOCS, rst_blocks

    blocks = [b for b in rst_blocks(DOCS / "guide" / "integrations.rst") if "fastopt.integrations" in b]
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(block, f"docs/guide/integrations.rst block {i}", "exec"), {})
        out = capsys.readouterr().out.split()
        assert float(out[-1]) >= 0.9, f"block {i} printed {out[-1:]}"   # they print an accuracy


def test_extras_list_the_integration_packages():
    text = (ROOT / "pyproject.toml").read_text()
    for extra in ("integrations", "test"):
        line = re.search(rf"^{extra} = \[(.*)\]$", text, re.M)
        assert line, extra
        assert '"scikit-learn' in line.group(1) and '"autograd' in line.group(1), extra
