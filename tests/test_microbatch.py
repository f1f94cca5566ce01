"""Ordered reduction by micro-batches (fastopt.nn.microbatch, fastopt.distributed.microbatch).

One process: the micro-batched gradient is the gradient (float32 rounding of the usual
path), and bad ``micro_batch`` values are refused.  Under ``mpiexec -n 2`` and ``-n 3`` (in
subprocesses with timeouts, skipped without mpi4py): the trainer's parameters and running
statistics equal one process's bit for bit, and a rank failing inside a step ends the job
with an error instead of a hang.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from fastopt.nn.microbatch import MicroBatches, MicroBatchNorm
from fastopt.nn.models import MLP
from fastopt.train import Trainer

from test_distributed import ROOT, TIMEOUT, launch, needs_mpi


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12)).astype(np.float32) * 3 + 1
    return X, rng.integers(0, 5, n)


@pytest.mark.parametrize("n, size", [(64, 8), (61, 8), (64, 1), (9, 64), (2, 1)])
def test_micro_batched_gradient_is_the_gradient(n, size):
    X, y = _batch(n)
    ref, micro_model = MLP((12, 16, 16, 5), rng=1), MLP((12, 16, 16, 5), rng=1)
    loss_ref, acc_ref = ref.loss_and_grad(X, y)
    micro = MicroBatches(size)
    rows = micro.plan(n)
    assert rows == slice(0, n)
    loss, acc = micro_model.loss_and_grad(X[rows], y[rows], micro=micro)
    assert acc == acc_ref and loss == pytest.approx(loss_ref, rel=1e-6)
    g, g_ref = micro_model.params.grad, ref.params.grad
    # float32 rounding of a different product order (one-row products against the batch's).
    # Batch norm's backward over two rows cancels (x_hat = +-1), amplifying it: n=2 rows of
    # one row each measured up to 44 float32 eps of the largest gradient (AMD Zen 3,
    # OpenBLAS 0.3.31's Haswell kernels; 17 on Zen 4), against <= 3 eps for 9 rows and more.
    tol = (2e-6 if n >= 8 else 2e-5) * np.abs(g_ref).max()
    assert np.abs(g - g_ref).max() <= tol
    for bn, bn_ref in zip(micro_model.bns, ref.bns):
        np.testing.assert_allclose(bn.running_mean, bn_ref.running_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(bn.running_var, bn_ref.running_var, rtol=1e-6)
        assert bn.sync is None                 # (restored after the call)


def test_micro_batched_regression_gradient_is_the_gradient():
    X, _ = _batch(50)
    y = X[:, 0].astype(np.float64) * 2 - 1
    ref, micro_model = MLP((12, 16, 1), rng=2, loss="mse"), MLP((12, 16, 1), rng=2, loss="mse")
    loss_ref, r2_ref = ref.loss_and_grad(X, y)
    micro = MicroBatches(7)
    micro.plan(50)
    loss, r2 = micro_model.loss_and_grad(X, y, micro=micro)
    assert loss == pytest.approx(loss_ref, rel=1e-6) and r2 == pytest.approx(r2_ref, rel=1e-6)
    g, g_ref = micro_model.params.grad, ref.params.grad
    assert np.abs(g - g_ref).max() <= 2e-6 * np.abs(g_ref).max()


def test_micro_batches_plan_contiguous_runs():
    micro = MicroBatches(8)
    micro._rank, micro._nprocs = 2, 3          # (what OrderedMicroBatches sets)
    assert micro.plan(64) == slice(40, 64) and micro.bounds == [(0, 8), (8, 16), (16, 24)]
    assert micro.plan(30) == slice(16, 30) and micro.bounds == [(0, 8), (8, 14)]
    assert micro.plan(8) == slice(0, 8) and micro.holds_sum
    micro._rank = 0
    assert micro.plan(8) == slice(0, 0) and micro.bounds == [] and not micro.holds_sum


@pytest.mark.parametrize("name, value, exc, match", [
    ("seconds", -1.0, ValueError, "seconds"), ("seconds", float("nan"), ValueError, "seconds"),
    ("seconds", "1", TypeError, "seconds"), ("seconds", None, TypeError, "seconds"),
    ("size", 4, AttributeError, "size"), ("rank", 1, AttributeError, "rank"),
    ("nprocs", 2, AttributeError, "nprocs"), ("bounds", [(0, 4)], AttributeError, "bounds"),
    ("n_total", 4, AttributeError, "n_total"), ("batchnorm", None, AttributeError, "batchnorm"),
    ("sise", 4, AttributeError, "did you mean 'size'"),
])
def test_a_rejected_attribute_set_changes_nothing(name, value, exc, match):
    micro = MicroBatches(8)
    micro.plan(20)
    micro.seconds = 2                          # the one settable attribute: a float >= 0
    assert micro.seconds == 2.0 and type(micro.seconds) is float
    before = dict(vars(micro))
    with pytest.raises(exc, match=match):
        setattr(micro, name, value)
    assert vars(micro) == before
    assert micro.plan(20) == slice(0, 20) and micro.bounds == [(0, 8), (8, 16), (16, 20)]


def test_one_process_reference_is_reproducible_and_close_to_the_default():
    kw = dict(hidden=16, epochs=2, seed=0)
    a, b = Trainer(micro_batch=8, **kw), Trainer(micro_batch=8, **kw)
    a.fit(), b.fit()
    assert a.micro_batch == 8 and Trainer(**kw).micro_batch is None
    assert a.model.params.data.tobytes() == b.model.params.data.tobytes()
    default = Trainer(**kw)
    default.fit()
    assert abs(a.history[-1]["test_acc"] - default.history[-1]["test_acc"]) <= 0.03


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-8, ValueError), (2.5, TypeError),
                                      ("8", TypeError), (True, TypeError)])
def test_bad_micro_batch_is_refused(bad, exc):
    with pytest.raises(exc, match="micro_batch"):
        Trainer(hidden=8, epochs=1, micro_batch=bad)
    with pytest.raises(exc, match="micro_batch"):
        MicroBatches(bad)


def test_a_refused_input_changes_no_gradient():
    model = MLP((12, 16, 16, 5), rng=1)
    model.params.grad[...] = 7.0
    micro = MicroBatches(8)
    X, y = _batch(64)
    micro.plan(64)
    with pytest.raises(TypeError, match="dtype"):
        model.loss_and_grad(X.astype(np.float64), y, micro=micro)
    with pytest.raises(ValueError, match="rows"):
        model.loss_and_grad(X[:40], y[:40], micro=micro)
    assert (model.params.grad == 7.0).all()
    assert all(bn.sync is None for bn in model.bns)
    assert repr(MicroBatchNorm(micro)) == "MicroBatchNorm(size=8)"


def test_cli_micro_batch_options():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "fastopt.cli", "train", "--quiet",
                               "--epochs", "1", "--hidden", "8", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=TIMEOUT)
    bad = run("--micro-batch", "-1")
    assert bad.returncode != 0 and "--micro-batch" in bad.stderr
    both = run("--micro-batch", "8", "--wire-dtype", "bfloat16")
    assert both.returncode != 0
    assert run("--micro-batch", "8").returncode == 0


# ------------------------------------------------------------------ under mpiexec

CONFIGS = [
    # Adam on the digits, the CLI's strategy (overlap, small buckets), short last batches
    dict(hidden=32, epochs=2, seed=0, micro_batch=8,
         strategy=dict(overlap=True, bucket_bytes=4096)),
    # the last batch of each epoch is one micro-batch (1438 = 143 * 10 + 8): ranks without rows
    dict(hidden=16, epochs=1, seed=1, micro_batch=8, batch_size=10, optimizer="momentum"),
    # ZeRO-1, clipping
    dict(hidden=16, epochs=1, seed=2, micro_batch=5, batch_size=37, max_grad_norm=0.5,
         strategy=dict(shard_state=True)),
    dict(hidden=16, epochs=1, seed=2, micro_batch=4, max_grad_norm=0.5,
         strategy=dict(deterministic=True)),
    # the control: without micro-batches the ranks sum in another order (other bits)
    dict(hidden=16, epochs=1, seed=0, strategy=dict(deterministic=True)),
]


def _single(config):
    config = {k: v for k, v in config.items() if k != "strategy"}
    t = Trainer(**config)
    t.fit()
    return t


@pytest.fixture(scope="module")
def references():
    return [_single(c) for c in CONFIGS]


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_ranks_equal_one_process_bit_for_bit(n, references, tmp_path):
    out = tmp_path / "ranks.npz"
    launch(n, ["train", str(out), *map(json.dumps, CONFIGS)], timeout=2 * TIMEOUT,
           module="mpi_micro_child")
    got = np.load(out)
    *references, control = references
    assert got[f"{len(references)}/params"].tobytes() != control.model.params.data.tobytes()
    for i, ref in enumerate(references):
        assert got[f"{i}/params"].tobytes() == ref.model.params.data.tobytes(), i
        for k, v in ref.model.state_dict().items():
            assert got[f"{i}/{k}"].tobytes() == v.tobytes(), (i, k)
        assert got[f"{i}/test_acc"].tolist() == [h["test_acc"] for h in ref.history]


@needs_mpi
@pytest.mark.slow
def test_cli_distributed_equals_one_process_with_the_same_micro_batch(tmp_path):
    args = ["train", "--epochs", "2", "--hidden", "32", "--quiet", "--seed", "1"]
    single = subprocess.run([sys.executable, "-m", "fastopt.cli", *args, "--micro-batch", "8",
                             "--save", str(tmp_path / "one.npz")], cwd=ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert single.returncode == 0, single.stderr
    _, out, _ = launch(3, [*args, "--distributed", "--save", str(tmp_path / "three.npz")],
                       module="fastopt.cli")
    assert "ordered reduction by micro-batches of 8" in out, out
    one, three = np.load(tmp_path / "one.npz"), np.load(tmp_path / "three.npz")
    for k in one.files:
        if one[k].dtype.kind == "f":
            assert one[k].tobytes() == three[k].tobytes(), k


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["refused_micro", "refused", "raises_micro", "raises"])
@pytest.mark.parametrize("n", [2, 3])
def test_a_rank_failing_inside_a_step_ends_the_job(kind, n):
    # the last rank's input is refused (float64 rows) or its backward pass raises in the
    # third step: every rank must end (an error, a non-zero exit), none may wait for ever
    rc, out, err = launch(n, [kind], timeout=120, expect_ok=False, module="mpi_micro_child")
    assert rc != 0
    if kind.startswith("refused"):
        assert "refused" in err and "DistributedError" in err and "float64" in err, err
    else:
        assert "boom inside the step" in err and f"on rank {n - 1}" in err, err


def test_micro_of_the_wrong_type_is_refused_before_any_gradient_is_written():
    model = MLP((8, 16, 3), rng=np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    y = np.arange(16) % 3
    model.params.grad[...] = 7.0
    with pytest.raises(TypeError, match="micro must be a fastopt.nn.microbatch.MicroBatches"):
        model.loss_and_grad(X, y, micro=8)
    assert np.all(model.params.grad == 7.0)


def test_pickled_model_leaves_out_the_work_buffers_and_gives_the_same_gradient():
    import pickle

    model = MLP((8, 16, 16, 3), rng=np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    y = np.arange(32) % 3
    mb = MicroBatches(8)
    mb.plan(32)
    model.loss_and_grad(X, y, micro=mb)
    back = pickle.loads(pickle.dumps(model))
    assert back._parts is None and back._acts is None
    mb2 = MicroBatches(8)
    mb2.plan(32)
    back.loss_and_grad(X, y, micro=mb2)
    np.testing.assert_array_equal(back.params.grad, model.params.grad)
