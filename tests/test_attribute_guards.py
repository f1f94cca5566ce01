"""Attributes checked when set, beyond the optimizers and layers (test_nn_guards.py): the
trainer and its one-process strategy, the micro-batch synchronization, the tuning records,
the distributed helpers that need no MPI ranks (DataParallelStrategy before it serves a
trainer, Watchdog, GuardedComm).

For each class: every construction option is read-only (AttributeError naming it; the
object is unchanged and keeps working: what it computes after the refusal is what it
computes without one), a misspelled name raises with the close match, and an option that
may change between steps is checked as the constructor checks it.  DataParallel,
SyncStats and a DataParallelStrategy serving a trainer are tested under mpiexec
(``attributes`` in mpi_child.py, run by test_distributed.py).
"""

import dataclasses

import numpy as np
import pytest

from fastopt.distributed import DataParallelStrategy, Watchdog
from fastopt.distributed.errors import GuardedComm
from fastopt.nn.microbatch import MicroBatches, MicroBatchNorm
from fastopt.train import SingleProcess, Trainer
from fastopt.train.tuning import Trial, random_search

SMALL = dict(optimizer="adam", lr=0.01, schedule="exponential", epochs=3, batch_size=128,
             seed=0, hidden=16)


def _same_object(obj, before):
    """``obj``'s instance dict holds exactly the objects of ``before``."""
    now = vars(obj)
    assert now.keys() == before.keys()
    assert all(now[k] is v for k, v in before.items())


def _bits(t):
    return (t.model.params.data.tobytes(), {k: v.tobytes() for k, v in
                                             t.model.state_dict().items()},
            [{k: v for k, v in r.items() if "time" not in k} for r in t.history])


# ------------------------------------------------------------------ Trainer, SingleProcess

TRAINER_FIXED = ["model", "opt", "strategy", "data", "epochs", "batch_size", "micro_batch", "rng",
                 "epochs_done", "task", "history", "history_keys"]


@pytest.mark.parametrize("micro", [None, 8])
def test_trainer_refused_assignments_change_nothing(micro):
    kw = dict(SMALL, micro_batch=micro)
    t, ref = Trainer(**kw), Trainer(**kw)
    t.train_epoch(), ref.train_epoch()
    before = dict(vars(t))
    for name in TRAINER_FIXED:
        for value in (None, getattr(t, name)):
            with pytest.raises(AttributeError, match=f"Trainer.{name} cannot be set"):
                setattr(t, name, value)
    for name, close in (("epocs", "epochs"), ("batchsize", "batch_size"), ("histroy", "history"),
                        ("micro_batches", "micro_batch")):
        with pytest.raises(AttributeError, match=f"'{name}' to set; did you mean '{close}'"):
            setattr(t, name, 5)
    _same_object(t, before)
    t.train_epoch(), ref.train_epoch()
    assert _bits(t) == _bits(ref)


def test_trainer_construction_options_say_to_build_another():
    t = Trainer(**SMALL)
    with pytest.raises(AttributeError, match="construct a new Trainer"):
        t.epochs = 10
    with pytest.raises(AttributeError, match="epochs_done cannot be set: train_epoch"):
        t.epochs_done = 2


def test_single_process_strategy_is_fixed():
    s = SingleProcess()
    for name, value in (("rank", 0), ("size", 2), ("sync_bn", True)):
        with pytest.raises(AttributeError, match=f"SingleProcess.{name} cannot be set"):
            setattr(s, name, value)
    with pytest.raises(AttributeError, match="did you mean 'sync_bn'"):
        s.sync_nb = True
    assert (s.rank, s.size, s.sync_bn) == (0, 1, False) and vars(s) == {}
    t, ref = Trainer(**SMALL, strategy=s), Trainer(**SMALL)
    t.train_epoch(), ref.train_epoch()
    assert _bits(t) == _bits(ref)


def test_a_strategy_subclass_declares_its_attributes():
    class Counting(SingleProcess):
        steps: int                       # declared: settable

        def __init__(self):
            self.steps = 0

        def step(self, optimizer, n_local, n_global):
            self.steps += 1
            super().step(optimizer, n_local, n_global)

    s = Counting()
    with pytest.raises(AttributeError, match="did you mean 'steps'"):
        s.stpes = 1
    t = Trainer(**SMALL, strategy=s)
    t.train_epoch()
    assert s.steps == -(-len(t.data[1]) // SMALL["batch_size"])


# ------------------------------------------------------------------ MicroBatchNorm

def test_micro_batch_norm_is_fixed_and_its_steps_unchanged():
    t, ref = Trainer(**SMALL, micro_batch=8), Trainer(**SMALL, micro_batch=8)
    sync = t.model.bns[0].sync if t.model.bns[0].sync is not None else None
    mbn = t._micro.batchnorm
    assert isinstance(mbn, MicroBatchNorm) and mbn.batches is t._micro and mbn.ordered is True
    before = dict(vars(mbn))
    for name, value in (("batches", MicroBatches(4)), ("batches", mbn.batches),
                        ("ordered", False), ("ordered", True)):
        with pytest.raises(AttributeError, match=f"MicroBatchNorm.{name} cannot be set"):
            setattr(mbn, name, value)
    with pytest.raises(AttributeError, match="did you mean 'batches'"):
        mbn.batchs = MicroBatches(4)
    _same_object(mbn, before)
    assert t.model.bns[0].sync is sync
    t.train_epoch(), ref.train_epoch()
    assert _bits(t) == _bits(ref)


# ------------------------------------------------------------------ Trial

def test_trials_are_records():
    trials = random_search(lambda p: p["x"], {"x": 2.0}, n_trials=2, rng=0)
    tr = trials[0]
    for name, value in (("score", 1.0), ("params", {}), ("index", 3), ("scroe", 1.0)):
        with pytest.raises(AttributeError):
            setattr(tr, name, value)
    assert (tr.index, tr.params, tr.score) == (0, {"x": 2.0}, 2.0)
    assert tr == Trial(0, {"x": 2.0}, 2.0)
    assert isinstance(dataclasses.FrozenInstanceError(), AttributeError)


# ------------------------------------------------------------------ DataParallelStrategy

def test_data_parallel_strategy_options_are_fixed():
    s = DataParallelStrategy(sync_bn=False, shard_state=True, timeout=30)
    before = dict(vars(s))
    for name, value in (("sync_bn", True), ("sync_bn", False), ("options", {}),
                        ("data_parallel", None), ("sync_stats", None), ("rank", 0), ("size", 1)):
        with pytest.raises(AttributeError, match=f"DataParallelStrategy.{name} cannot be set"):
            setattr(s, name, value)
    for name, close in (("sync_nb", "sync_bn"), ("option", "options"),
                        ("shard_state", None), ("timeout", None)):
        with pytest.raises(AttributeError, match=f"DataParallelStrategy has no attribute "
                                                 f"'{name}' to set"
                                                 + (f"; did you mean '{close}'" if close else "")):
            setattr(s, name, True)
    _same_object(s, before)
    assert s.sync_bn is False and s.options == {"shard_state": True, "timeout": 30}
    s.options["shard_state"] = False           # a copy: the strategy's stay
    assert s.options == {"shard_state": True, "timeout": 30}
    assert s.data_parallel is None and s.sync_stats is None
    with pytest.raises(RuntimeError, match="serves no trainer"):
        s.rank


# ------------------------------------------------------------------ Watchdog, GuardedComm

class _Comm:
    """Enough of a communicator for a Watchdog that never fires."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Abort(self, code):                          # pragma: no cover - never called
        raise AssertionError("aborted")

    def Barrier(self):
        return "barrier"


@pytest.mark.parametrize("value, exc", [(0, ValueError), (-1.0, ValueError),
                                        (float("inf"), ValueError), (float("nan"), ValueError),
                                        ("5", TypeError), (True, TypeError), ([5], TypeError)])
def test_watchdog_timeout_checked_when_set_as_constructed(value, exc):
    comm = _Comm()
    with pytest.raises(exc, match="timeout"):
        Watchdog(comm, value)
    w = Watchdog(comm, 30)
    before = dict(vars(w))
    with pytest.raises(exc, match="timeout"):
        w.timeout = value
    _same_object(w, before)
    assert w.timeout == 30.0


def test_watchdog_timeout_may_be_set_and_comm_may_not():
    comm = _Comm()
    w = Watchdog(comm, None)
    w.timeout = np.float32(2.5)
    assert w.timeout == 2.5 and type(w.timeout) is float
    with w("a collective"):
        assert w._deadline is not None           # the new limit applies
    assert w._deadline is None
    w.timeout = None
    with w("another"):
        assert w._deadline is None
    with pytest.raises(AttributeError, match="Watchdog.comm cannot be set"):
        w.comm = _Comm()
    with pytest.raises(AttributeError, match="did you mean 'timeout'"):
        w.timout = 5
    assert w.comm is comm and w.timeout is None


def test_guarded_comm_is_fixed_and_still_guards():
    comm, w = _Comm(), Watchdog(_Comm(), 60)
    g = w.guard(comm, "here")
    for name in ("unguarded", "watchdog"):
        with pytest.raises(AttributeError, match=f"GuardedComm.{name} cannot be set"):
            setattr(g, name, None)
    with pytest.raises(AttributeError, match="did you mean 'watchdog'"):
        g.watchdg = w
    assert g.unguarded is comm and g.watchdog is w
    assert g.Barrier() == "barrier" and g.Get_size() == 1


# ------------------------------------------------------------------ Table

def test_tables_are_frozen():
    from fastopt.data.tabular import Table

    X = np.zeros((3, 2), np.float32)
    t = Table(X, np.array([0, 1, 0]), "classification", np.array(["a", "b"]), ["x0", "x1"], "y",
              "mem")
    for name, value in (("X", X), ("task", "regression"), ("target", "z"), ("taks", "z")):
        with pytest.raises(AttributeError):
            setattr(t, name, value)
    assert t.task == "classification" and t.n_outputs == 2 and not hasattr(t, "taks")
