"""fastopt.train.Trainer, the library's training loop, called in this process (no CLI)."""

import re

import numpy as np
import pytest

from fastopt.optim import SPECS
from fastopt.train import CheckpointError, SingleProcess, Trainer
from fastopt.train.loop import HISTORY_KEYS

import table_grid

SMALL = dict(optimizer="adam", lr=0.01, schedule="exponential", epochs=3, batch_size=128, seed=0,
             hidden=16)


def _numbers(history):
    """The records without their wall times (which differ from run to run)."""
    return [{k: v for k, v in r.items() if "time" not in k} for r in history]


def _snapshot(t):
    """Every bit of a trainer's state."""
    sd = t.opt.state_dict()
    state = {(name, i, k): np.array(a) for name, bufs in sd["state"].items()
             for i, b in enumerate(bufs)
             for k, a in (b.items() if isinstance(b, dict) else [("", b)])
             if isinstance(a, np.ndarray)}
    bn = {k: v.copy() for k, v in t.model.state_dict().items()}
    return (t.model.params.data.copy(), state, bn, t.rng.bit_generator.state, t.epochs_done,
            _numbers(t.history), sd["step"], sd["epoch"])


def _assert_same(a, b):
    params_a, state_a, bn_a, rng_a, *rest_a = a
    params_b, state_b, bn_b, rng_b, *rest_b = b
    np.testing.assert_array_equal(params_a, params_b)
    assert state_a.keys() == state_b.keys() and state_a
    for k in state_a:
        np.testing.assert_array_equal(state_a[k], state_b[k])
    assert bn_a.keys() == bn_b.keys() and bn_a
    for k in bn_a:
        np.testing.assert_array_equal(bn_a[k], bn_b[k])
    assert rng_a == rng_b and rest_a == rest_b


def test_fit_trains_every_epoch_and_learns():
    seen = []
    t = Trainer(**{**SMALL, "epochs": 4})
    history = t.fit(on_epoch=seen.append)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] == [r["epoch"] for r in seen]
    assert t.epochs_done == 4
    for r in history:
        assert set(HISTORY_KEYS) <= set(r) and "comm_time" not in r
        assert 0 <= r["kernel_time"] <= r["time"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test_acc"] > 0.85
    assert t.fit() == history            # nothing left to train
    assert t.evaluate() == (history[-1]["test_loss"], history[-1]["test_acc"])


def test_same_arguments_give_the_same_bits():
    a, b = Trainer(**SMALL), Trainer(**SMALL)
    a.fit()
    b.fit()
    _assert_same(_snapshot(a), _snapshot(b))
    c = Trainer(**{**SMALL, "seed": 1})
    c.fit()
    assert not np.array_equal(c.model.params.data, a.model.params.data)


def test_progress_reports_every_batch():
    calls = []
    t = Trainer(**SMALL)
    t.train_epoch(lambda *a: calls.append(a))
    n = len(t.data[1])
    total = -(-n // SMALL["batch_size"])
    assert calls == [(1, b, total) for b in range(1, total + 1)]


@pytest.mark.parametrize("state_dtype", ["float32", "int8", "float8"])
def test_save_and_resume_continue_bit_identically(tmp_path, state_dtype):
    kw = {**SMALL, "state_dtype": state_dtype, "hidden": 96}   # 96x96 > 4096: int8 state
    path = tmp_path / "c.npz"
    full = Trainer(**kw)
    full.fit()
    first = Trainer(**kw)
    first.train_epoch()
    first.save(path)
    resumed = Trainer(**kw)
    resumed.resume(path)
    assert resumed.epochs_done == 1 and _numbers(resumed.history) == _numbers(first.history)
    resumed.fit()
    _assert_same(_snapshot(resumed), _snapshot(full))


@table_grid.quick(family=lambda p: None, option="state_dtype")   # bfloat16: one optimizer
@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(SPECS))
def test_every_registered_optimizer_trains_and_resumes(tmp_path, name, state_dtype):
    """``fastopt train --optimizer NAME`` for every entry of the registry (its choices): the
    trainer builds it (``--beta`` mapped as the entry says), trains, and resumes from a
    checkpoint to the same bits."""
    if state_dtype != "float32" and not SPECS[name].row.lowbit:
        pytest.skip(f"{name}'s kernel has float state only")
    kw = {**SMALL, "optimizer": name, "epochs": 2, "state_dtype": state_dtype, "hidden": 96}
    path = tmp_path / "c.npz"
    full = Trainer(**kw)
    full.fit()
    assert type(full.opt) is SPECS[name].cls and np.all(np.isfinite(full.model.params.data))
    first = Trainer(**kw)
    first.train_epoch()
    first.save(path)
    resumed = Trainer(**kw)
    resumed.resume(path)
    resumed.fit()
    _assert_same(_snapshot(resumed), _snapshot(full))


def test_checkpoint_extras_are_named_entries(tmp_path):
    t = Trainer(**SMALL)
    t.train_epoch()
    t.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        extras = sorted(k for k in z.files if k.startswith("extra"))
        np.testing.assert_array_equal(z["extra/model/bn1.running_var"], t.model.bns[0].running_var)
    assert extras == ["extra.json/history", "extra.json/rng_state", "extra/epoch"] + [
        f"extra/model/bn{i}.running_{s}" for i in (1, 2) for s in ("mean", "var")]


def _rewrite(path, change):
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    change(entries)
    with open(path, "wb") as f:
        np.savez(f, **entries)


def test_resume_reads_the_names_of_earlier_checkpoints(tmp_path):
    # fastopt train wrote bn1__running_mean before its loop moved to fastopt.train
    path = tmp_path / "c.npz"
    full, first = Trainer(**SMALL), Trainer(**SMALL)
    full.fit()
    first.train_epoch()
    first.save(path)

    def to_old_names(entries):
        for k in [k for k in entries if k.startswith("extra/model/")]:
            entries["extra/" + k[len("extra/model/"):].replace(".", "__")] = entries.pop(k)

    _rewrite(path, to_old_names)
    resumed = Trainer(**SMALL)
    resumed.resume(path)
    np.testing.assert_array_equal(resumed.model.bns[1].running_mean,
                                  first.model.bns[1].running_mean)
    resumed.fit()
    _assert_same(_snapshot(resumed), _snapshot(full))


@pytest.mark.parametrize("change,msg", [
    (lambda e: e.update({"extra/model/bn3.running_mean": np.zeros(16, np.float32)}),
     "unknown entries ['bn3.running_mean']"),
    (lambda e: e.pop("extra/model/bn2.running_var"), "state has no 'bn2.running_var'"),
    (lambda e: e.update({"extra/bn1__running_mean": e["extra/model/bn1.running_mean"] + 1}),
     "'bn1.running_mean' is stored twice"),
    (lambda e: e.update({"extra/model/bn1.running_var": np.full(16, -1, np.float32)}),
     "running_var'] must be finite and >= 0"),
    (lambda e: e.pop("extra.json/rng_state"), "KeyError: 'rng_state'"),
    (lambda e: e.update({"extra/epoch": np.asarray(2.5)}), "epoch must be an int"),
    (lambda e: e.update({"extra.json/history": np.asarray('[{"epoch": true}]')}),
     "history must be a list of records"),
])
def test_resume_is_all_or_nothing(tmp_path, change, msg):
    path = tmp_path / "c.npz"
    t = Trainer(**SMALL)
    t.train_epoch()
    t.save(path)
    _rewrite(path, change)
    fresh = Trainer(**SMALL)
    before = _snapshot(fresh)
    with pytest.raises(CheckpointError, match=re.escape(msg)):
        fresh.resume(path)
    _assert_same(_snapshot(fresh), before)
    assert fresh.opt.step_count == 0


def test_a_stored_twice_entry_with_the_same_values_loads(tmp_path):
    path = tmp_path / "c.npz"
    t = Trainer(**SMALL)
    t.train_epoch()
    t.save(path)
    _rewrite(path, lambda e: e.update({"extra/bn1__running_mean": e["extra/model/bn1.running_mean"]}))
    fresh = Trainer(**SMALL)
    fresh.resume(path)
    _assert_same(_snapshot(fresh), _snapshot(t))


def test_user_data_sizes_the_model():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5)).astype(np.float32)
    y = np.digitize(X[:, 0], [-0.5, 0.5])                    # 3 classes
    t = Trainer(**{**SMALL, "epochs": 8, "batch_size": 32}, data=(X[:240], y[:240], X[240:], y[240:]))
    assert t.model.sizes == (5, 16, 16, 3)
    assert t.fit()[-1]["test_acc"] > 0.8


def _data(**change):
    X = np.zeros((8, 3), np.float32)
    y = np.array([0, 1] * 4)
    d = dict(X_train=X, y_train=y, X_test=X[:4], y_test=y[:4])
    d.update(change)
    return tuple(d.values())


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(optimizer=3), TypeError, "optimizer must be a str"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(lr=1e39), ValueError, "lr = 1e+39 overflows float32"),
    (dict(schedule="linear"), ValueError, "schedule must be one of"),
    (dict(epochs=0), ValueError, "epochs must be >= 1"),
    (dict(epochs=2.0), TypeError, "epochs must be an int"),
    (dict(batch_size=1), ValueError, "batch_size must be >= 2"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(hidden=0), ValueError, "hidden must be >= 1"),
    (dict(beta=1.0), ValueError, "beta must be in [0, 1)"),
    (dict(impl="cuda"), ValueError, "impl must be one of fused, reference"),
    (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm must be > 0"),
    (dict(state_dtype="float16"), ValueError, "state_dtype must be one of"),
    (dict(strategy=object()), TypeError, "strategy must provide wrap"),
    (dict(data=[1, 2]), TypeError, "data must be a tuple (X_train, y_train, X_test, y_test)"),
    (dict(data=_data(X_train=[[0.0]])), TypeError, "X_train must be a numpy array"),
    (dict(data=_data(X_test=np.zeros((4, 3)))), TypeError, "X_test must be a 2-D float32"),
    (dict(data=_data(y_train=np.zeros(8, np.float32))), TypeError, "y_train must be a 1-D array of integer"),
    (dict(data=_data(y_test=np.array([0, -1, 0, 1]))), ValueError, "y_test has a negative class"),
    (dict(data=_data(y_train=np.zeros(7, int))), ValueError, "X_train, y_train have 8 and 7 samples"),
    (dict(data=_data(X_test=np.zeros((4, 2), np.float32))), ValueError, "same number (>= 1) of features"),
    (dict(data=_data(X_train=np.full((8, 3), np.nan, np.float32))), ValueError, "X_train has non-finite"),
])
def test_bad_arguments_are_refused_by_name(kw, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        Trainer(**{**SMALL, **kw})


def test_momentum_with_beta_zero_is_refused_by_the_optimizer():
    with pytest.raises(ValueError, match="momentum"):
        Trainer(**{**SMALL, "optimizer": "momentum", "beta": 0.0})


def test_attributes_are_read_only():
    t = Trainer(**SMALL)
    for name in ("model", "opt", "strategy", "data", "epochs", "batch_size", "rng", "epochs_done",
                 "history"):
        with pytest.raises(AttributeError):
            setattr(t, name, None)
    t.train_epoch()
    t.history.clear()                    # a copy: the trainer's records stay
    assert len(t.history) == 1


def test_evaluate_needs_both_x_and_y():
    t = Trainer(**SMALL)
    X, y = t.data[2], t.data[3]
    assert t.evaluate(X[:50], y[:50]) == t.model.evaluate(X[:50], y[:50])
    with pytest.raises(TypeError, match="both X and y"):
        t.evaluate(X)


class _Recording(SingleProcess):
    """A one-process strategy that records what the trainer asks of it."""

    calls: list              # (a strategy's public attributes are declared: SingleProcess)

    def __init__(self):
        self.calls = []

    def step(self, optimizer, n_local, n_global):
        self.calls.append(("step", n_local, n_global))
        super().step(optimizer, n_local, n_global)

    def average(self, arrays):
        self.calls.append(("average", len(arrays)))

    def communication_time(self):
        return 0.0


def test_the_trainer_runs_through_its_strategy():
    strategy = _Recording()
    t = Trainer(**{**SMALL, "batch_size": 500}, strategy=strategy)
    assert t.strategy is strategy
    rec = t.train_epoch()
    n = len(t.data[1])                   # 1438: batches of 500, 500, 438
    assert strategy.calls == [("step", 500, 500), ("step", 500, 500), ("step", n - 1000, n - 1000),
                              ("average", 1), ("average", 4)]
    assert rec["comm_time"] == 0.0
    plain = Trainer(**{**SMALL, "batch_size": 500})
    plain.train_epoch()
    _assert_same(_snapshot(t), _snapshot(plain))


def test_a_one_sample_last_batch_is_skipped():
    # 1438 training samples in batches of 479: the last has 2; of 1437 (batch 718): 1, skipped
    strategy = _Recording()
    Xtr, ytr, Xte, yte = Trainer(**SMALL).data
    t = Trainer(**{**SMALL, "batch_size": 718}, data=(Xtr[:1437], ytr[:1437], Xte, yte),
                strategy=strategy)
    t.train_epoch()
    assert [c for c in strategy.calls if c[0] == "step"] == [("step", 718, 718)] * 2


def test_data_parallel_strategy_serves_one_trainer():
    from fastopt.distributed import DataParallelStrategy

    s = DataParallelStrategy(shard_state=True)
    assert s.data_parallel is None
    with pytest.raises(RuntimeError, match="serves no trainer yet"):
        s.rank
