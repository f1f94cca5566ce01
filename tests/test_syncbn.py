"""Synchronized batch norm: the kernels' ``reduce`` hook, ``BatchNorm.sync``, and (under
``mpiexec -n 2`` and ``-n 3``, in subprocesses with timeouts) ``fastopt.distributed.SyncStats``,
``SyncBatchNorm`` and ``fastopt train --distributed --sync-bn``."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference
from fastopt.nn import BatchNorm, BatchNormSync

IMPLS = [pytest.param(kernels, id="fused"), pytest.param(reference, id="reference")]
SHAPES = [(37, 5), (37, 4, 3), (11, 3, 600)]        # row mode, row mode with S, plane mode


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (1e3 + rng.standard_normal(shape)).astype(dtype)     # far from zero: the shift matters
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    gamma = (1 + 0.1 * rng.standard_normal(C)).astype(dtype)
    beta = (0.1 * rng.standard_normal(C)).astype(dtype)
    return x, dy, gamma, beta


def _capture(store):
    """A reduce that records its arguments and returns them (the whole batch: one part)."""
    def reduce(*args):
        store.append(tuple(np.copy(a) if isinstance(a, np.ndarray) else a for a in args))
        return args
    return reduce


PARTS = [slice(0, 0), slice(0, 1), slice(1, 7), slice(7, None)]


@pytest.mark.parametrize("k", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_part_with_the_whole_batch_statistics_is_the_whole_batch_rows(k, shape, dtype):
    # each part (empty, one row, the rest) normalized with the whole batch's statistics (what
    # reduce returns) gives exactly the whole batch's rows of y and dx, and the same running
    # statistics; dgamma and dbeta are the part's own sums
    x, dy, gamma, beta = _data(shape, dtype)
    C = shape[1]
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    whole_stats, whole_sums = [], []
    y, mean, invstd = k.batchnorm_forward(x, gamma, beta, rm, rv, reduce=_capture(whole_stats))
    dx, dgamma, dbeta = k.batchnorm_backward(dy, x, gamma, mean, invstd,
                                             reduce=_capture(whole_sums))
    n = x.size // C
    assert whole_stats[0][0] == n and whole_sums[0][0] == n
    # (a reduce returning its arguments changes nothing: the bits of the call without it)
    rm0, rv0 = np.zeros(C, dtype), np.ones(C, dtype)
    y0, _, _ = k.batchnorm_forward(x, gamma, beta, rm0, rv0)
    dx0, dgamma0, dbeta0 = k.batchnorm_backward(dy, x, gamma, mean, invstd)
    for a, b in ((y, y0), (rm, rm0), (rv, rv0), (dx, dx0), (dgamma, dgamma0), (dbeta, dbeta0)):
        np.testing.assert_array_equal(a, b)
    sum_dgamma, sum_dbeta = np.zeros(C), np.zeros(C)
    for rows in PARTS:
        seen = []
        xp, dyp = x[rows], dy[rows]
        prm, prv = np.zeros(C, dtype), np.ones(C, dtype)

        def stats(n_part, m, v):
            seen.append((n_part, m.copy(), v.copy()))
            return whole_stats[0]

        yp, mp, ip = k.batchnorm_forward(xp, gamma, beta, prm, prv, reduce=stats)
        n_part = xp.size // C
        assert seen[0][0] == n_part
        if n_part:
            np.testing.assert_allclose(seen[0][1], xp.swapaxes(0, 1).reshape(C, -1).mean(1, dtype=np.float64),
                                       rtol=1e-12)
        np.testing.assert_array_equal(yp, y[rows])
        np.testing.assert_array_equal(mp, mean)
        np.testing.assert_array_equal(ip, invstd)
        np.testing.assert_array_equal(prm, rm)
        np.testing.assert_array_equal(prv, rv)
        dxp, dgp, dbp = k.batchnorm_backward(dyp, xp, gamma, mp, ip,
                                             reduce=lambda *a: whole_sums[0])
        np.testing.assert_array_equal(dxp, dx[rows])
        sum_dgamma += dgp
        sum_dbeta += dbp
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(sum_dgamma, dgamma, rtol=tol, atol=tol)
    np.testing.assert_allclose(sum_dbeta, dbeta, rtol=tol, atol=tol)


@pytest.mark.parametrize("k", IMPLS)
def test_reduce_refusals_change_nothing(k):
    x, dy, gamma, beta = _data((6, 3), np.float32)
    rm, rv, y = np.zeros(3, np.float32), np.ones(3, np.float32), np.full_like(x, 7)
    with pytest.raises(TypeError, match="reduce must be None or a callable"):
        k.batchnorm_forward(x, gamma, beta, rm, rv, out=y, reduce=3)
    with pytest.raises(TypeError, match="reduce must be None or a callable"):
        k.batchnorm_backward(dy, x, gamma, rm, rv, reduce="sum")
    # the whole batch (what reduce says) has one value per channel: refused, as one process
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        k.batchnorm_forward(x[:1], gamma, beta, rm, rv, out=y[:1],
                            reduce=lambda n, m, v: (1, m, v))
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    np.testing.assert_array_equal(y, 7)
    # without reduce, an empty batch is still refused
    with pytest.raises(ValueError, match="N == 0"):
        k.batchnorm_forward(x[:0], gamma, beta, rm, rv)


class _Echo(BatchNormSync):
    """One process's synchronization: the whole batch is this process's part."""

    def __init__(self):
        self.calls = []

    def stats(self, layer, signature, n, mean, var):
        self.calls.append(("stats", signature, n))
        return n, mean, var

    def sums(self, layer, signature, n, sum_dy, sum_dy_xmu, weight):
        self.calls.append(("sums", signature, n, weight))
        return n, sum_dy, sum_dy_xmu

    def refuse(self, layer, phase, signature, error):
        self.calls.append(("refuse", phase, type(error).__name__))
        raise RuntimeError(f"refused everywhere: {error}")


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_a_layer_with_a_sync_calls_it_and_keeps_the_bits(impl):
    x, dy, _, _ = _data((9, 4), np.float32)
    sync = _Echo()
    a, b = BatchNorm(4, impl=impl, sync=sync, name="bn7"), BatchNorm(4, impl=impl)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    np.testing.assert_array_equal(a.backward(dy), b.backward(dy))
    for name in ("running_mean", "running_var", "dgamma", "dbeta"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    sig = "bn7.forward(x of shape (N, 4), float32, eps=1e-05, momentum=0.1)"
    assert sync.calls == [("stats", sig, 9), ("sums", sig.replace("forward", "backward"), 9, 1.0)]
    # inference: no collective
    a.forward(x, training=False)
    a.backward(dy)
    assert len(sync.calls) == 2
    # weight= reaches the sync; it needs a synchronized training forward
    a.forward(x)
    a.backward(dy, weight=0.25)
    assert sync.calls[-1][-1] == 0.25
    b.forward(x)
    with pytest.raises(ValueError, match="weight is for synchronized batch norm"):
        b.backward(dy, weight=0.5)
    # the backward pass goes with its forward: the sync it had then
    a.forward(x)
    a.sync = None
    a.backward(dy)
    assert sync.calls[-1][0] == "sums" and len(sync.calls) == 6


def test_a_refused_input_is_refused_through_the_sync_before_anything_changes():
    x, dy, _, _ = _data((9, 4), np.float32)
    sync = _Echo()
    bn = BatchNorm(4, sync=sync)
    bn.forward(x)
    before = [bn.running_mean.copy(), bn.running_var.copy(), bn.dgamma.copy()]
    for bad in (x[:, :3].copy(), x.astype(np.float64), "x"):
        with pytest.raises(RuntimeError, match="refused everywhere"):
            bn.forward(bad)
    assert [c[:2] for c in sync.calls[1:]] == [("refuse", "forward")] * 3
    with pytest.raises(RuntimeError, match="refused everywhere"):
        bn.backward(dy[:, :3].copy())
    with pytest.raises(RuntimeError, match="refused everywhere.*weight must be > 0"):
        bn.backward(dy, weight=0)
    assert [c[:2] for c in sync.calls[-2:]] == [("refuse", "backward")] * 2
    for a, b in zip(before, [bn.running_mean, bn.running_var, bn.dgamma]):
        np.testing.assert_array_equal(a, b)
    # the whole batch's count is checked after the reduction: not a refusal (every process
    # raises it by itself)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.forward(x[:1])
    assert sync.calls[-1] == ("stats", "bn.forward(x of shape (N, 4), float32, eps=1e-05, "
                                       "momentum=0.1)", 1)


def test_sync_is_checked_when_set():
    bn = BatchNorm(3)
    assert bn.sync is None
    for bad in (3, "mpi", object()):
        with pytest.raises(TypeError, match="sync must be None or a BatchNormSync"):
            bn.sync = bad
        with pytest.raises(TypeError, match="sync must be None or a BatchNormSync"):
            BatchNorm(3, sync=bad)
    assert bn.sync is None
    s = _Echo()
    bn.sync = s
    assert bn.sync is s and "sync=" in repr(bn)


def test_sync_batchnorm_arguments_are_checked_before_any_collective():
    from fastopt.distributed import DataParallelStrategy, SyncBatchNorm, sync_batchnorm

    with pytest.raises(TypeError, match="pass comm, deterministic and timeout to the SyncStats"):
        SyncBatchNorm(3, sync=_Echo(), deterministic=True)
    with pytest.raises(TypeError, match="layers must be a model with .bns"):
        sync_batchnorm(3)
    with pytest.raises(TypeError, match=r"layers\[1\] must be a BatchNorm"):
        sync_batchnorm([BatchNorm(2), "bn"])
    with pytest.raises(TypeError, match="sync_bn must be True or False"):
        DataParallelStrategy(sync_bn="yes")


def test_cli_sync_bn_needs_distributed():
    for flag in ("--sync-bn", "--no-sync-bn"):
        p = subprocess.run([sys.executable, "-m", "fastopt.cli", "train", flag, "--epochs", "1"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "need --distributed" in p.stderr, p.stderr


# ------------------------------------------------------------------ under mpiexec

from test_distributed import ROOT, _accuracy, launch, needs_mpi  # noqa: E402

SCENARIOS = ["equals_one_process", "deterministic_bits", "faults", "small_parts"]


@pytest.fixture(scope="module", params=[pytest.param(2, id="n=2"), pytest.param(3, id="n=3")])
def mpi_run(request):
    n = request.param
    _, out, _ = launch(n, SCENARIOS, module="mpi_syncbn_child", timeout=300)
    result = json.loads(next(line[len("result "):] for line in out.splitlines()
                             if line.startswith("result ")))
    return n, out, result


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(mpi_run, scenario):
    # equals_one_process: 100 steps of the digits MLP (SGD with momentum, Adam), uneven parts,
    # within 1e-5 relative of one process; faults: a clear DistributedError on every rank
    n, out, _ = mpi_run
    assert f"ok {scenario}" in out.splitlines(), out


@pytest.mark.slow
@needs_mpi
def test_deterministic_mode_gives_the_same_bits_in_another_launch(mpi_run):
    n, _, result = mpi_run
    _, out, _ = launch(n, ["deterministic_bits"], module="mpi_syncbn_child", timeout=300)
    again = json.loads(next(line[len("result "):] for line in out.splitlines()
                            if line.startswith("result ")))
    assert again["deterministic_crc"] == result["deterministic_crc"]


@pytest.mark.slow
@needs_mpi
def test_a_rank_that_never_reaches_the_layer_is_a_timeout_not_a_hang():
    rc, out, err = launch(2, ["stuck_forward"], module="mpi_syncbn_child", timeout=90,
                          expect_ok=False)
    assert rc != 0
    assert ("rank 0 of 2 waited more than 2 s in bn1.forward(x of shape (N, 3), float32, "
            "eps=1e-05, momentum=0.1): the statistics allgather") in err, err


@pytest.mark.slow
@needs_mpi
def test_train_distributed_with_sync_bn_matches_one_process():
    # one process and 2 ranks (synchronized batch norm, the default) train the same model:
    # with SGD and momentum the trajectories agree to ~1e-8, so the held-out accuracy and loss
    # agree.  (With Adam's eps = 1e-8 rounding-level differences grow like two summation
    # orders in one process: docs/guide/distributed.rst has the 3-seed figures.)
    args = ["train", "--quiet", "--seed", "1", "--optimizer", "momentum", "--lr", "0.05",
            "--epochs", "6", "--hidden", "64"]
    single = subprocess.run([sys.executable, "-m", "fastopt.cli", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    _, out, _ = launch(2, [*args, "--distributed"], module="fastopt.cli", timeout=300)
    assert "synchronized batch norm" in out, out
    assert abs(_accuracy(out) - _accuracy(single.stdout)) <= 0.006, (out, single.stdout)

    def test_loss(text):
        line = next(x for x in text.splitlines() if x.startswith("epoch   6"))
        return float(line.split("test loss")[1].split()[0])

    assert test_loss(out) == pytest.approx(test_loss(single.stdout), abs=2e-4), (out, single)
