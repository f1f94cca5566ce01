"""Overlapped gradient reduction and the bfloat16 wire (fastopt.distributed.buckets).

MPI scenarios run under ``mpiexec -n 2`` and ``-n 3`` (tests/mpi_child_overlap.py), each
launch with a timeout; the bfloat16 packing and the FlatParams hook are checked here.
No timing thresholds.
"""

import copy
import pickle

import numpy as np
import pytest

import fastopt
from fastopt.distributed.buckets import pack_bf16, unpack_bf16
from fastopt.kernels._formats import bf16_to_float32, float32_to_bf16

from test_distributed import launch, needs_mpi

SCENARIOS = ["overlap_equals_sequential", "layer_buckets", "overlap_lists_and_dicts",
             "overlap_mlp_hook", "bf16_wire", "overlap_arguments", "shared_allreduce", "shared_pipeline",
             "window_overlaps", "zero1_overlap", "train_cli_overlap", "check_after_launch"]


@pytest.fixture(scope="module", params=[pytest.param(2, id="n=2"), pytest.param(3, id="n=3")])
def mpi_run(request):
    _, out, _ = launch(request.param, SCENARIOS, module="mpi_child_overlap")
    return out


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_overlap_scenario(mpi_run, scenario):
    assert any(line.startswith(f"ok {scenario}") for line in mpi_run.splitlines()), mpi_run


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n,transport", [(2, ""), (3, ""), (2, "_window"), (3, "_window"),
                                         (2, "_zero1")])
def test_a_rank_that_stops_with_requests_pending_is_a_timeout_not_a_hang(n, transport):
    rc, out, err = launch(n, [f"fault_overlap_hang{transport}"], timeout=90, expect_ok=False,
                          module="mpi_child_overlap")
    assert rc != 0
    assert "waited more than 2 s in the gradient reduction of step 1" in err, err


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("transport", ["", "_window"])
def test_an_exception_with_requests_pending_aborts_the_job(transport):
    rc, out, err = launch(2, [f"fault_overlap_exception{transport}"], timeout=90,
                          expect_ok=False, module="mpi_child_overlap")
    assert rc != 0
    assert "uncaught RuntimeError on rank 1" in err and "requests pending" in err, err


def _specials():
    u = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,   # ties to even, either side
                  0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,   # overflow -> inf; inf
                  0x7F800001, 0xFFFFFFFF, 0x7FC00000, 0x00000001,   # NaNs; a subnormal
                  0x80000000, 0x00008000], np.uint32)
    return u.view(np.float32)


@pytest.mark.parametrize("x", [
    _specials(),
    np.random.default_rng(0).standard_normal(10_001).astype(np.float32) * 1e3,
    np.random.default_rng(1).integers(0, 2**32, 4096, dtype=np.uint32).view(np.float32),
], ids=["specials", "normal", "any bits"])
def test_pack_bf16_is_the_specified_rounding(x):
    x = x.copy()
    before = x.copy()
    out = np.empty(x.size, np.uint16)
    pack_bf16(x, out, np.empty(x.size, np.uint32))
    np.testing.assert_array_equal(out, float32_to_bf16(x))
    np.testing.assert_array_equal(x.view(np.uint32), before.view(np.uint32))   # input untouched
    back = unpack_bf16(out, np.empty(x.size, np.float32))
    np.testing.assert_array_equal(back.view(np.uint32), bf16_to_float32(out).view(np.uint32))
    finite = np.isfinite(x) & (np.abs(x) < 3e38)
    err = np.abs(back[finite].astype(np.float64) - x[finite])
    # half a unit in the last of 8 significant bits; subnormals: half of bfloat16's 2**-133
    assert np.all(err <= 2.0 ** -8 * np.abs(x[finite].astype(np.float64)) + 2.0 ** -134)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 8, 16, 64])
def test_divide_by_ranks_gives_the_division_bits(dtype, size):
    from fastopt.distributed.sharding import divide_by_ranks

    bits = np.uint32 if dtype == np.float32 else np.uint64
    rng = np.random.default_rng(size)
    x = np.concatenate([
        rng.integers(0, np.iinfo(bits).max, 20_000, dtype=bits, endpoint=True).view(dtype),
        rng.standard_normal(1000).astype(dtype),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype),
        np.array([np.finfo(dtype).tiny, np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal,
                  3 * np.finfo(dtype).smallest_subnormal], dtype)])
    with np.errstate(all="ignore"):
        want = np.divide(x, dtype(size))
        got = divide_by_ranks(x.copy(), size)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(bits), want[~nan].view(bits))


def test_grad_hooks_are_called_removed_and_never_copied():
    fp = fastopt.FlatParams({"W": (3, 2), "b": (2,)})
    seen = []
    remove = fp.add_grad_hook(seen.append)
    fp.grads_ready("b")
    fp.grads_ready("W", "b")
    assert seen == [("b",), ("W", "b")]
    for other in (fp.copy(), copy.deepcopy(fp), pickle.loads(pickle.dumps(fp))):
        other.grads_ready("W")       # a copy has no hook
    assert len(seen) == 2
    remove()
    remove()
    fp.grads_ready("W")
    assert len(seen) == 2
    with pytest.raises(TypeError, match="hook must be callable"):
        fp.add_grad_hook(3)


def test_mlp_backward_marks_every_parameter_ready_once_last_layer_first():
    from fastopt.nn.models import MLP

    model = MLP((6, 8, 8, 3), rng=0)
    seen = []
    model.params.add_grad_hook(lambda names: seen.extend(names))
    X = np.random.default_rng(0).standard_normal((10, 6)).astype(np.float32)
    model.loss_and_grad(X, np.arange(10) % 3)
    assert sorted(seen) == sorted(model.params.shapes) and len(seen) == len(set(seen))
    assert seen[:2] == ["W3", "b3"] and seen[-3:] == ["W1", "bn1.gamma", "bn1.beta"]


@pytest.mark.parametrize("argv,message", [
    (["--no-overlap"], "need --distributed"),
    (["--wire-dtype", "bfloat16"], "need --distributed"),
    (["--error-feedback"], "need --distributed"),
    (["--bucket-bytes", "4096"], "need --distributed"),
    (["--bucket-bytes", "0"], "a positive integer"),
    (["--wire-dtype", "float16"], "invalid choice"),
    (["--distributed", "--shard-state", "--wire-dtype", "bfloat16"], "not with --shard-state"),
    (["--distributed", "--error-feedback"], "needs --wire-dtype bfloat16"),
])
def test_train_overlap_options_are_checked(capsys, argv, message):
    from fastopt.cli import main

    try:
        rc = main(["train", "--epochs", "1", *argv])
    except SystemExit as e:          # (argparse's own refusals)
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_layer_cuts_are_runs_of_whole_layers_or_none():
    from fastopt.distributed.buckets import _layer_cuts

    # the MLP 64-256-256-10's FlatParams: W1, bn1.gamma, bn1.beta, W2, bn2.*, W3, b3
    off = [0, 16384, 16640, 16896, 82432, 82688, 82944, 85504, 85514]
    layers = [(6, 7), (3, 4, 5), (0, 1, 2)]
    assert _layer_cuts(layers, off, 2048) == [85514, 82944, 16896, 0]
    assert _layer_cuts(layers, off, 16384) == [85514, 16896, 0]      # W3 + b3 joins W2's
    assert _layer_cuts(layers, off, 1 << 20) == [85514, 0]
    assert _layer_cuts([(7,), (6,), (5, 4), (3,), (2, 1), (0,)], off, 1) == \
        [85514, 85504, 82944, 82432, 16896, 16384, 0]
    assert _layer_cuts(layers[:2], off, 2048) is None                 # not down to 0
    assert _layer_cuts(layers[::-1], off, 2048) is None               # not from the end down
    assert _layer_cuts([(6, 7), (3, 5), (0, 1, 2)], off, 2048) is None     # a gap
