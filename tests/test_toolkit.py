"""The seed's toolkit: initialization, schedules, mini-batches, tuning."""

import math

import numpy as np
import pytest

import fastopt
from fastopt import data, init, schedules, tuning


# ------------------------------------------------------------------ init

@pytest.mark.parametrize("fn,gain", [(init.xavier, 1.0), (init.he, 2.0)])
def test_init_scale_dtype_and_fan_in(fn, gain):
    w = fn((400, 300), rng=0)
    assert w.dtype == np.float32 and w.shape == (400, 300)
    assert w.std() == pytest.approx(math.sqrt(gain / 400), rel=0.02)
    assert abs(w.mean()) < 0.01 * math.sqrt(gain / 400) * 10
    w2 = fn((400, 300), fan_in=25, rng=0)
    assert w2.std() == pytest.approx(math.sqrt(gain / 25), rel=0.02)
    # HWIO conv layout: fan_in = 3*3*16
    w3 = fn((3, 3, 16, 32), rng=1)
    assert w3.std() == pytest.approx(math.sqrt(gain / 144), rel=0.05)


def test_init_is_reproducible_and_fills_out_in_place():
    fp = fastopt.FlatParams({"W": (64, 32), "b": (32,)})
    view = fp.params["W"]
    r = init.he((64, 32), rng=7, out=view)
    assert r is view and np.shares_memory(view, fp.data)
    np.testing.assert_array_equal(view, init.he((64, 32), rng=7))
    np.testing.assert_array_equal(init.xavier((5, 5), rng=np.random.default_rng(3)),
                                  init.xavier((5, 5), rng=3))
    assert not fp.params["b"].any()


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(shape=(5,)), ValueError, "fan_in cannot be inferred"),
    (dict(shape=(5, 5), fan_in=0), ValueError, "fan_in must be >= 1"),
    (dict(shape=(5, -1)), ValueError, "non-negative"),
    (dict(shape=[5, 5]), TypeError, "tuple"),
    (dict(shape=(5, 5), out=np.zeros((5, 5), np.int32)), TypeError, "float32 or float64"),
    (dict(shape=(5, 5), dtype=np.float16), TypeError, "dtype must be float32 or float64"),
    (dict(shape=(5, 5), out=np.zeros((5, 5)), dtype=np.float32), TypeError, "out has dtype"),
    (dict(shape=(5, 5), out=np.zeros((5, 4), np.float32)), ValueError, "out has shape"),
    (dict(shape=(5, 5), rng="seed"), TypeError, "rng must be"),
])
def test_init_bad_input(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        init.he(**kw)


# ------------------------------------------------------------------ schedules

def test_seed_formulas_exactly():
    lr0 = 0.2
    f1 = schedules.inverse_time(lr0, decay_rate=0.5)
    f2 = schedules.exponential(lr0)
    f3 = schedules.inverse_sqrt(lr0, k=0.8)
    for e in range(1, 30):
        assert f1(e) == lr0 / (1 + 0.5 * e)
        assert f2(e) == 0.95**e * lr0
        assert f3(e) == 0.8 / math.sqrt(e) * lr0
    # epoch 0, as documented
    assert f1(0) == lr0 and f2(0) == lr0 and f3(0) == f3(1) == 0.8 * lr0


def test_other_schedules():
    assert schedules.constant(0.3)(17) == 0.3
    s = schedules.step(1.0, step_size=3, gamma=0.5)
    assert [s(e) for e in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    c = schedules.cosine(1.0, total_epochs=10, warmup_epochs=2, lr_min=0.1)
    assert c(1) == 0.5 and c(2) == 1.0 and c(3) == 1.0
    vals = [c(e) for e in range(3, 11)]
    assert all(a > b for a, b in zip(vals, vals[1:]))  # decreasing after warm-up
    assert 0.1 < c(10) < 0.2 and c(11) == 0.1


@pytest.mark.parametrize("make,exc,msg", [
    (lambda: schedules.inverse_time(-1, 0.1), ValueError, "lr0 must be >= 0"),
    (lambda: schedules.inverse_time(0.1, -0.1), ValueError, "decay_rate must be >= 0"),
    (lambda: schedules.exponential(0.1, base=0), ValueError, "base must be > 0"),
    (lambda: schedules.exponential(0.1, base=1.5), ValueError, "base must be <= 1"),
    (lambda: schedules.inverse_sqrt(0.1, k=0), ValueError, "k must be > 0"),
    (lambda: schedules.step(0.1, step_size=0), ValueError, "step_size must be >= 1"),
    (lambda: schedules.cosine(0.1, total_epochs=5, warmup_epochs=5), ValueError, "warmup_epochs"),
    (lambda: schedules.cosine(0.1, total_epochs=5, lr_min=0.2), ValueError, "lr_min must be <="),
    (lambda: schedules.constant(float("nan")), ValueError, "finite"),
    (lambda: schedules.constant("1"), TypeError, "real number"),
    (lambda: schedules.constant(0.1)(-1), ValueError, "epoch must be >= 0"),
    (lambda: schedules.constant(0.1)(1.5), TypeError, "epoch must be an int"),
])
def test_schedule_bad_arguments(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_optimizer_follows_a_schedule_and_resumes_it():
    fp = fastopt.FlatParams({"w": (3,)})
    sched = schedules.exponential(0.1, base=0.5)
    opt = fastopt.SGD(fp, lr=sched)
    assert opt.lr == 0.05 and opt.schedule is sched  # epoch 1
    opt.set_epoch(3)
    assert opt.lr == 0.1 * 0.5**3
    fp.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(fp.data, -0.0125, rtol=1e-6)
    sd = opt.state_dict()
    assert sd["epoch"] == 3
    other = fastopt.SGD(fastopt.FlatParams({"w": (3,)}), lr=sched)
    other.load_state_dict(sd)
    assert other.epoch == 3 and other.lr == opt.lr and other.schedule is sched
    opt.lr = 0.3  # a number replaces the schedule
    assert opt.schedule is None
    opt.set_epoch(5)
    assert opt.lr == 0.3


# ------------------------------------------------------------------ mini-batches

@pytest.mark.parametrize("n,bs,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False),
                                            (5, 10, False), (1, 1, False)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_minibatches_cover_every_sample_once(n, bs, drop_last, shuffle):
    X = np.arange(n * 2).reshape(n, 2)
    y = np.arange(n)
    batches = list(data.minibatches(X, y, batch_size=bs, shuffle=shuffle, rng=0,
                                    drop_last=drop_last))
    seen = np.concatenate([yb for _, yb in batches]) if batches else np.array([], int)
    if drop_last:
        assert len(seen) == (n // bs) * bs and all(len(yb) == bs for _, yb in batches)
    else:
        assert sorted(seen.tolist()) == list(range(n))
    for Xb, yb in batches:
        np.testing.assert_array_equal(Xb[:, 0], yb * 2)  # X and y stay paired
    if not shuffle:
        assert seen.tolist() == sorted(seen.tolist())


def test_minibatches_shuffle_differs_between_epochs_and_is_seeded():
    X = np.arange(100)
    rng = np.random.default_rng(1)
    e1 = np.concatenate(list(data.minibatches(X, batch_size=10, rng=rng)))
    e2 = np.concatenate(list(data.minibatches(X, batch_size=10, rng=rng)))
    assert not np.array_equal(e1, e2)
    a = np.concatenate(list(data.minibatches(X, batch_size=7, rng=5)))
    b = np.concatenate(list(data.minibatches(X, batch_size=7, rng=5)))
    np.testing.assert_array_equal(a, b)


def test_minibatches_bad_input():
    with pytest.raises(ValueError, match="y has 3 samples, expected 4"):
        list(data.minibatches(np.zeros(4), np.zeros(3), batch_size=2))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(data.minibatches(np.zeros(4), batch_size=0))
    with pytest.raises(TypeError, match="batch_size must be an int"):
        list(data.minibatches(np.zeros(4), batch_size=2.5))


def test_suggest_batch_size_follows_the_seed():
    assert data.suggest_batch_size(1797, 256) == 1797           # small: batch gradient descent
    assert data.suggest_batch_size(4096, 256) == 4096
    assert data.suggest_batch_size(60_000, 3072) == 512          # large: a power of two
    assert data.suggest_batch_size(60_000, 3072, memory_budget=1_000_000) == 256
    assert data.suggest_batch_size(60_000, 3072, memory_budget=200_000) == 64
    assert data.suggest_batch_size(60_000, 3072, memory_budget=100_000) == 32  # below 64: fits
    assert data.suggest_batch_size(2000, 10**6, memory_budget=10**8) == 64  # small set, no fit
    for n, b in [(10**5, 100), (10**6, 1000)]:
        s = data.suggest_batch_size(n, b)
        assert s & (s - 1) == 0 and 64 <= s <= 512
    with pytest.raises(ValueError, match="does not fit"):
        data.suggest_batch_size(10**5, 1000, memory_budget=10)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        data.suggest_batch_size(0, 10)


# ------------------------------------------------------------------ tuning

def test_samplers_stay_in_range_and_use_the_right_scale():
    rng = np.random.default_rng(0)
    lr = [tuning.log_uniform(1e-4, 1e-1)(rng) for _ in range(4000)]
    assert min(lr) >= 1e-4 and max(lr) <= 1e-1
    # log-uniform: each decade gets about a third
    decades = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1])[0] / len(lr)
    np.testing.assert_allclose(decades, 1 / 3, atol=0.04)
    beta = [tuning.one_minus_log_uniform(0.9, 0.999)(rng) for _ in range(4000)]
    assert min(beta) >= 0.9 and max(beta) <= 0.999
    frac_above_099 = np.mean(np.array(beta) > 0.99)
    assert frac_above_099 == pytest.approx(0.5, abs=0.04)  # 1-β in [1e-3, 1e-2] vs [1e-2, 1e-1]
    bs = {tuning.powers_of_two(32, 512)(rng) for _ in range(500)}
    assert bs == {32, 64, 128, 256, 512}
    hidden = [tuning.integers(10, 12)(rng) for _ in range(300)]
    assert set(hidden) == {10, 11, 12}
    assert {tuning.choice(["a", "b"])(rng) for _ in range(50)} == {"a", "b"}


@pytest.mark.parametrize("make,msg", [
    (lambda: tuning.log_uniform(0, 1), "0 < lo <= hi"),
    (lambda: tuning.log_uniform(1, 0.1), "0 < lo <= hi"),
    (lambda: tuning.one_minus_log_uniform(0.9, 1.0), "hi < 1"),
    (lambda: tuning.powers_of_two(0, 8), "1 <= lo <= hi"),
    (lambda: tuning.powers_of_two(65, 100), "no power of two"),
    (lambda: tuning.integers(5, 1), "lo <= hi"),
    (lambda: tuning.uniform(2, 1), "lo <= hi"),
    (lambda: tuning.choice([]), "at least one"),
    (lambda: tuning.default_space(5), "max_tier"),
])
def test_sampler_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_random_search_returns_every_trial_sorted():
    space = {"lr": tuning.log_uniform(1e-4, 1.0), "fixed": 3}
    target = 1e-2
    trials = tuning.random_search(lambda p: -abs(math.log10(p["lr"] / target)), space,
                                  n_trials=40, rng=0)
    assert len(trials) == 40 and sorted(t.index for t in trials) == list(range(40))
    scores = [t.score for t in trials]
    assert scores == sorted(scores, reverse=True)
    assert all(t.params["fixed"] == 3 for t in trials)
    assert abs(math.log10(trials[0].params["lr"] / target)) < 0.2
    low = tuning.random_search(lambda p: p["lr"], space, n_trials=10, rng=0, maximize=False)
    assert low[0].params["lr"] == min(t.params["lr"] for t in low)
    again = tuning.random_search(lambda p: p["lr"], space, n_trials=10, rng=0, maximize=False)
    assert [t.params for t in again] == [t.params for t in low]
    with_nan = tuning.random_search(lambda p: float("nan") if p["lr"] > 0.1 else p["lr"], space,
                                    n_trials=20, rng=1)
    assert math.isnan(with_nan[-1].score) and not math.isnan(with_nan[0].score)


def test_default_space_follows_the_tiers():
    s1 = tuning.default_space(1)
    assert list(s1) == ["lr"]
    s2 = tuning.default_space()
    assert list(s2) == ["lr", "beta", "hidden", "batch_size"]
    s4 = tuning.default_space(4)
    assert list(s4)[-3:] == ["beta1", "beta2", "eps"]


def test_toolkit_modules_reachable_after_import():
    import fastopt as f

    for name in ("init", "data", "schedules", "tuning"):
        assert hasattr(f, name)
    assert callable(f.Standardizer) and callable(f.save_checkpoint)


# ------------------------------------------------ checked when called / set (issue 21)

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2, shuffle="False"), TypeError, "shuffle must be True or False"),
    (dict(batch_size=2, drop_last=None), TypeError, "drop_last must be True or False"),
])
def test_minibatches_checks_its_arguments_when_called(kwargs, error, match):
    # before: a generator, so nothing was checked until the first batch; shuffle="False"
    # (a truthy string) shuffled
    with pytest.raises(error, match=match):
        data.minibatches(np.arange(10), **kwargs)


def test_minibatches_unchanged():
    X = np.arange(10)
    assert [b.tolist() for b in data.minibatches(X, batch_size=4, rng=0)] == \
        [[4, 6, 2, 7], [3, 5, 9, 0], [8, 1]]
    assert [b.tolist() for b in data.minibatches(X, batch_size=4, shuffle=np.bool_(False),
                                                  drop_last=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("fraction, match", [(-0.1, r"test_fraction must be in \[0, 1\)"),
                                             (1.0, r"test_fraction must be in \[0, 1\)"),
                                             (0.9999999, "leaves no training sample"),
                                             ("0.2", "test_fraction must be a real number")])
def test_prepare_data_checks_test_fraction(fraction, match):
    # before: -0.1 silently swapped the split (1617 test samples, 180 training ones)
    from fastopt.data.datasets import prepare_data

    with pytest.raises((ValueError, TypeError), match=match):
        prepare_data(0, fraction)


def test_prepare_data_default_split_unchanged():
    from fastopt.data.datasets import prepare_data

    Xtr, ytr, Xte, yte, _ = prepare_data(0)
    assert (Xtr.shape, Xte.shape) == ((1438, 64), (359, 64))
    assert prepare_data(0, 0.0)[2].shape == (0, 64)


def test_schedule_is_immutable():
    # before: s.params["lr0"] = 5 changed repr, == and what a pickled copy returns, but not
    # what s itself returns: an optimizer resumed from a checkpoint trained at another rate
    import pickle

    s = schedules.cosine(0.1, total_epochs=10)
    values = [s(e) for e in range(12)]
    with pytest.raises(TypeError):
        s.params["lr0"] = 5.0
    for attr, value in (("params", {"lr0": 5.0}), ("name", "constant")):
        with pytest.raises(AttributeError, match=f"Schedule.{attr} cannot be set"):
            setattr(s, attr, value)
    with pytest.raises(AttributeError, match="no attribute 'lr0'"):
        s.lr0 = 5.0
    s2 = pickle.loads(pickle.dumps(s))
    assert s2 == s and [s2(e) for e in range(12)] == values
    assert repr(s) == "cosine(lr0=0.1, total_epochs=10, warmup_epochs=0, lr_min=0.0)"


def test_schedule_and_sampler_constructors_check_name_and_function():
    with pytest.raises(TypeError, match="fn must be callable"):
        schedules.Schedule("mine", 0.1)
    with pytest.raises(TypeError, match="name must be a str"):
        schedules.Schedule(None, lambda e: 0.1)
    with pytest.raises(TypeError, match="draw must be callable"):
        tuning.Sampler("mine", 3)
    assert schedules.Schedule("mine", lambda e: 0.5 / e, k=1)(2) == 0.25


def test_sampler_is_immutable():
    smp = tuning.log_uniform(1e-3, 1.0)
    with pytest.raises(TypeError):
        smp.params["lo"] = 0.5
    with pytest.raises(AttributeError, match="Sampler.name cannot be set"):
        smp.name = "uniform"
    assert repr(smp) == "log_uniform(0.001, 1.0)"


def test_random_search_checks_maximize_and_objective():
    # before: maximize="no" (truthy) maximized
    with pytest.raises(TypeError, match="maximize must be True or False"):
        tuning.random_search(lambda p: 1.0, {"a": 1}, n_trials=2, rng=0, maximize="no")
    with pytest.raises(TypeError, match="objective must be callable"):
        tuning.random_search(None, {"a": 1}, n_trials=2, rng=0)
    trials = tuning.random_search(lambda p: p["x"], {"x": tuning.uniform(0, 1)}, n_trials=5,
                                  rng=0, maximize=np.bool_(False))
    assert [t.score for t in trials] == sorted(t.score for t in trials)
