"""The MPI side of tests/test_syncbn.py: ``mpiexec -n P python -m mpi_syncbn_child SCENARIO...``.

Every scenario checks its own results on every rank and raises on a wrong one (an uncaught
exception aborts the job); rank 0 prints ``ok <scenario>`` for each that passed, and
``result <json>`` at the end.
"""

import json
import sys
import time
import zlib

import numpy as np

import fastopt
from fastopt.data.datasets import prepare_data
from fastopt.distributed import (DataParallel, DistributedError, SyncBatchNorm, SyncStats,
                                 batch_part, sync_batchnorm)
from fastopt.nn.models import MLP
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
RESULTS = {}


def done(name):
    if rank == 0:
        print(f"ok {name}", flush=True)


def _batches(n_train, steps, seed=0):
    """Global batches (index arrays) of sizes 61, 64, 37, 50 and 23 (uneven parts at -n 2 and
    -n 3), the same on every rank."""
    rng = np.random.default_rng(seed)
    sizes = [61, 64, 37, 50, 23]
    return [rng.choice(n_train, sizes[s % len(sizes)], replace=False) for s in range(steps)]


def _grad_of_mean_loss(model, X, y):
    """Forward and backward of the mean cross-entropy over X's rows (any count, even 0)."""
    logits = model.forward(X, training=True)
    z = logits - logits.max(axis=1, keepdims=True) if len(X) else logits
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True) if len(X) else 1
    p[np.arange(len(y)), y] -= 1.0
    if len(X):
        p /= len(X)
    model.backward(p.astype(np.float32))


def _train(steps, make_opt, sync, deterministic=False, impl="fused", hidden=64):
    """``steps`` steps of the digits MLP on this rank's rows of every global batch, with
    ``sync`` batch norm; returns (model, dp)."""
    Xtr, ytr, _, _, _ = prepare_data(0)
    model = MLP((64, hidden, hidden, 10), rng=0, impl=impl)
    dp = DataParallel(make_opt(model.params), deterministic=deterministic, timeout=120)
    if sync:
        sync_batchnorm(model, deterministic=deterministic, timeout=120)
    for idx in _batches(len(ytr), steps):
        rows = batch_part(len(idx), rank, size)
        part = idx[rows]
        _grad_of_mean_loss(model, Xtr[part], ytr[part])
        dp.step(weight=len(part) / len(idx))
    return model, dp


def _train_one_process(steps, make_opt, impl="fused", hidden=64):
    Xtr, ytr, _, _, _ = prepare_data(0)
    model = MLP((64, hidden, hidden, 10), rng=0, impl=impl)
    opt = make_opt(model.params)
    for idx in _batches(len(ytr), steps):
        _grad_of_mean_loss(model, Xtr[idx], ytr[idx])
        opt.step()
    return model


def _arrays(model):
    out = dict(model.params.params)
    for bn in model.bns:
        out[f"{bn.name}.running_mean"] = bn.running_mean
        out[f"{bn.name}.running_var"] = bn.running_var
    return out


def _rel_errors(a, b):
    return {k: float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in b}


# Adam with eps = 1e-4: with its default 1e-8 the first steps are sign-like (lr * g / |g|), so
# an element whose gradient is at rounding level moves by +-lr depending on the summation
# order: one process against itself with the batch's rows reversed differs by 1e-4 after 20
# steps (8e-3 at 100 steps and lr 1e-2); with eps = 1e-4, 4e-8, as SGD with momentum.
OPTIMIZERS = {
    "momentum": lambda fp: fastopt.SGD(fp, lr=0.05, momentum=0.9),
    "adam": lambda fp: fastopt.Adam(fp, lr=1e-3, eps=1e-4),
}


def equals_one_process():
    """100 steps (uneven parts, a rank with no row at -n 3): the parameters and running
    statistics of one process on the global batches, within 1e-5 relative (each array's
    norm); without synchronization, far from them (the control)."""
    worst = {}
    for name, make in OPTIMIZERS.items():
        for impl in ("fused", "reference"):
            single = _arrays(_train_one_process(100, make, impl=impl))
            model, dp = _train(100, make, sync=True, impl=impl)
            dp.verify_parameters()
            err = _rel_errors(_arrays(model), single)
            worst[f"{name}/{impl}"] = max(err.values())
            bad = {k: v for k, v in err.items() if not v <= 1e-5}
            assert not bad, (name, impl, bad)
    # the control: per-rank batch norm trains another model (and the test can fail)
    model, _ = _train(100, OPTIMIZERS["momentum"], sync=False)
    control = max(_rel_errors(_arrays(model),
                              _arrays(_train_one_process(100, OPTIMIZERS["momentum"]))).values())
    assert control > 1e-3, control
    RESULTS["equals_one_process"] = {"worst": worst, "control": control}
    done("equals_one_process")


def _crc(model):
    crc = 0
    for a in _arrays(model).values():
        crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8), crc)
    return crc


def deterministic_bits():
    """Deterministic mode: the same bits on two runs (and on every rank); the statistics are
    the rank-order merge on every rank in either mode."""
    make = OPTIMIZERS["momentum"]
    crcs = [_crc(_train(40, make, sync=True, deterministic=True)[0]) for _ in range(2)]
    assert crcs[0] == crcs[1], crcs
    everyone = comm.allgather(crcs[0])
    assert len(set(everyone)) == 1, everyone
    RESULTS["deterministic_crc"] = crcs[0]
    done("deterministic_bits")


def _layer(C=3, name="bn1", sync=None, **kw):
    fp = fastopt.FlatParams(fastopt.BatchNorm.shapes(C, name=name))
    return fastopt.BatchNorm(C, params=fp, name=name, sync=sync, **kw), fp


def _x(n, C=3, seed=0, spatial=()):
    rng = np.random.default_rng([seed, rank])
    return (3 + rng.standard_normal((n, C) + spatial)).astype(np.float32)


def _expect_everywhere(fn, *needles):
    """``fn()`` raises DistributedError on every rank, its message holding the needles."""
    try:
        fn()
    except DistributedError as e:
        msg = str(e)
    else:
        raise AssertionError(f"{fn} raised nothing on rank {rank}")
    for needle in needles:
        assert needle in msg, (needle, msg)
    everyone = comm.allgather(msg)
    assert len(set(everyone)) == 1, everyone
    return msg


def faults():
    """Bad input on one rank, or calls that differ: a clear error on every rank, nothing
    changed, and the layers keep working."""
    # a wrong communicator, a wrong sync: refused before anything (every rank passes it)
    for bad in ("world", 0, MPI.COMM_NULL, MPI.COMM_WORLD.group):
        try:
            SyncStats(bad)
        except TypeError as e:
            assert "comm must be an mpi4py intracommunicator" in str(e), e
        else:
            raise AssertionError(f"SyncStats({bad!r}) accepted")
    for kw, exc in ((dict(deterministic=1), TypeError), (dict(timeout=0), ValueError),
                    (dict(timeout="1"), TypeError), (dict(abort_on_exception=None), TypeError)):
        try:
            SyncStats(**kw)
        except exc:
            pass
        else:
            raise AssertionError(f"SyncStats(**{kw}) accepted")
    stats = SyncStats(timeout=60)
    bn, fp = _layer(sync=stats)
    other, fp2 = _layer(sync=stats, name="bn2")
    stats.register([bn, other])
    try:
        bn.sync = MPI.COMM_WORLD
    except TypeError as e:
        assert "sync must be None or a BatchNormSync" in str(e)
    else:
        raise AssertionError("a communicator accepted as sync")
    assert bn.sync is stats
    good = _x(5)
    bn.forward(good)
    bn.backward(np.ones_like(good))
    before = {k: v.copy() for k, v in (("rm", bn.running_mean), ("rv", bn.running_var),
                                         ("grad", fp.grad))}
    last = size - 1

    def unchanged():
        for k, v in (("rm", bn.running_mean), ("rv", bn.running_var), ("grad", fp.grad)):
            assert np.array_equal(v, before[k]), k

    # one rank's x has another width, another dtype, is not an array
    for bad, needle in ((_x(5, C=4), "C = 4"), (_x(5).astype(np.float64), "dtype float64"),
                        ("x", "TypeError")):
        x = bad if rank == last else good
        _expect_everywhere(lambda: bn.forward(x), f"refused on rank {last}", needle,
                           "bn1.forward")
        unchanged()
    # the ranks' x differ after N (spatial shape)
    x = _x(5, spatial=(2,)) if rank == last else _x(5, spatial=(3,))
    _expect_everywhere(lambda: bn.forward(x), "calls differ", "(N, 3, 2)", "(N, 3, 3)")
    unchanged()
    # one rank calls another layer (of the same width), or has other hyperparameters
    layer = other if rank == last else bn
    _expect_everywhere(lambda: layer.forward(good), "calls differ", "bn2.forward", "bn1.forward")
    bn.momentum = 0.2 if rank == last else 0.1
    _expect_everywhere(lambda: bn.forward(good), "calls differ", "momentum=0.2")
    bn.momentum = 0.1
    unchanged()
    # backward: a bad dy or weight on one rank
    bn.forward(good)
    before = {k: v.copy() for k, v in (("rm", bn.running_mean), ("rv", bn.running_var),
                                         ("grad", fp.grad))}
    dy = np.ones((5, 4), np.float32) if rank == last else np.ones_like(good)
    _expect_everywhere(lambda: bn.backward(dy), f"refused on rank {last}", "bn1.backward",
                       "dy")
    unchanged()
    w = -1.0 if rank == last else 0.5
    _expect_everywhere(lambda: bn.backward(np.ones_like(good), weight=w), "weight must be > 0")
    unchanged()
    # a layer whose width differs between the ranks (its first call)
    wide, _ = _layer(C=4 if rank == last else 3, name="bn3", sync=stats)
    _expect_everywhere(lambda: wide.forward(_x(5, C=wide.num_features)), "layers differ",
                       "bn3 with C = 4", "bn3 with C = 3")
    _expect_everywhere(lambda: stats.register([bn, wide]), "layers differ",
                       "bn1 with C = 3, float32, bn3 with C = 4")
    # and after all of that, the layers still agree: a normal step works
    bn.forward(good)
    bn.backward(np.ones_like(good))
    everyone = comm.allgather(bn.running_var.tobytes())
    assert len(set(everyone)) == 1
    done("faults")


def small_parts():
    """Parts of 0 and 1 rows (the whole batch has 2+), and a whole batch of 1 row: refused
    on every rank with the usual message; SyncBatchNorm with 4-D inputs."""
    stats = SyncStats()
    bn, fp = _layer(sync=stats)
    whole = (3 + np.random.default_rng(5).standard_normal((size + 1, 3))).astype(np.float32)
    part = whole[batch_part(size + 1, rank, size)]
    ref, rfp = _layer()
    y = bn.forward(part)
    yw = ref.forward(whole)
    np.testing.assert_allclose(y, yw[batch_part(size + 1, rank, size)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, ref.running_var, rtol=1e-6)
    x1 = whole[:1] if rank == 0 else whole[:0]
    try:
        bn.forward(x1)
    except ValueError as e:
        assert "more than 1 value per channel" in str(e), e
    else:
        raise AssertionError("a whole batch of one row was accepted")
    sbn = SyncBatchNorm(2, deterministic=True, name="conv")
    x = _x(2, C=2, spatial=(3, 4))
    sbn.forward(x)
    sbn.backward(np.ones_like(x))
    done("small_parts")


def stuck_forward():
    """The last rank never reaches the layer: the others' watchdog (timeout 2 s) aborts."""
    stats = SyncStats(timeout=2)
    bn, _ = _layer(sync=stats)
    stats.register([bn])
    if rank == size - 1:
        time.sleep(3600)
    bn.forward(_x(4))
    raise AssertionError("unreachable: the job should have been aborted")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        globals()[name]()
    if rank == 0:
        print("result " + json.dumps(RESULTS), flush=True)
