"""The MPI side of tests/test_distributed.py: run under ``mpiexec -n P python mpi_child.py SCENARIO...``.

Every scenario checks its own results on every rank and raises on a wrong one; an uncaught
exception aborts the job (DataParallel installs the hook), so the launcher sees a non-zero
exit.  Rank 0 prints ``ok <scenario>`` for each scenario that passed, and results the
launcher checks as ``result <json>``.
"""

import functools
import json
import os
import pickle
import sys
import time

import numpy as np

import fastopt
from fastopt.distributed import (DataParallel, DistributedError, batch_part, node_threads,
                                 shard_bounds)
from fastopt.distributed import checkpoint as dckpt
from fastopt.optim import part as optim_part
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
RESULTS = {}

# (class, kwargs) for every optimizer in the registry
OPTS = {
    "sgd": (fastopt.SGD, dict(lr=0.1, momentum=0.9)),
    "momentum": (fastopt.Momentum, dict(lr=0.1, beta=0.9)),
    "rmsprop": (fastopt.RMSprop, dict(lr=0.01)),
    "adam": (fastopt.Adam, dict(lr=0.01)),
    "adamw": (fastopt.AdamW, dict(lr=0.01, weight_decay=0.1)),
}
# uneven sizes: 3 blocks and a tail, so 2 and 3 ranks get unequal slices
SHAPES = {"W1": (300, 170), "b1": (170,), "W2": (170, 7), "b2": (7,)}


def make_fp(dtype=np.float32, shapes=SHAPES):
    fp = fastopt.FlatParams(shapes, dtype=dtype)
    fp.data[...] = np.random.default_rng(123).standard_normal(fp.size)
    return fp


@functools.lru_cache(maxsize=64)
def _grad(n, dtype, step, r):
    g = np.random.default_rng([7, step, r]).standard_normal(n).astype(dtype)
    g.flags.writeable = False
    return g


def local_grad(n, dtype, step, r):
    """Rank r's gradient at ``step`` (10 distinct ones, cycled: cheap for long runs)."""
    return _grad(n, dtype, step % 10, r)


def rank_order_mean(n, dtype, step, weights=None):
    """The sum every deterministic DataParallel must compute: in rank order, then / P."""
    total = None
    for r in range(size):
        g = local_grad(n, dtype, step, r).copy()
        if weights is not None:
            g *= dtype(weights[r])
        total = g.copy() if total is None else np.add(total, g, out=total)
    if weights is None and size > 1:
        np.divide(total, size, out=total)
    return total


def check_equal(a, b, what):
    if not np.array_equal(a, b, equal_nan=True):
        bad = np.flatnonzero(a != b)
        raise AssertionError(f"{what}: {bad.size} elements differ, first at {bad[:5]}: "
                             f"{a.reshape(-1)[bad[:3]]} vs {b.reshape(-1)[bad[:3]]}")


_T0 = [time.perf_counter()]


def done(name):
    if rank == 0:
        print(f"ok {name} ({time.perf_counter() - _T0[0]:.1f} s)", flush=True)
    _T0[0] = time.perf_counter()


# ------------------------------------------------------------------ scenarios

def deterministic():
    """Both modes, every optimizer, both dtypes: the bits of the rank-order mean, identical everywhere."""
    for dtype in (np.float32, np.float64):
        for name, (cls, kw) in OPTS.items():
            ref_fp = make_fp(dtype)
            ref = cls(ref_fp, **kw)
            runs = {}
            for shard in (False, True):
                for align in (None, 7):
                    fp = make_fp(dtype)
                    dp = DataParallel(cls(fp, **kw), shard_state=shard, deterministic=True,
                                      align=align)
                    runs[(shard, align)] = (fp, dp)
            for step in range(1, 6):
                ref_fp.grad[...] = rank_order_mean(ref_fp.size, dtype, step)
                ref.step()
                for fp, dp in runs.values():
                    fp.grad[...] = local_grad(fp.size, dtype, step, rank)
                    dp.step()
            for key, (fp, dp) in runs.items():
                check_equal(fp.data, ref_fp.data, f"{name} {np.dtype(dtype)} {key}")
                dp.verify_parameters()
                assert dp.step_count == 5
    done("deterministic")


def weighted():
    weights = [(r + 1) / sum(range(1, size + 1)) for r in range(size)]
    for shard in (False, True):
        fp, ref_fp = make_fp(), make_fp()
        dp = DataParallel(fastopt.Adam(fp, lr=0.01), shard_state=shard, deterministic=True)
        ref = fastopt.Adam(ref_fp, lr=0.01)
        for step in range(1, 4):
            ref_fp.grad[...] = rank_order_mean(fp.size, np.float32, step, weights)
            ref.step()
            fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
            dp.step(weight=weights[rank])
        check_equal(fp.data, ref_fp.data, f"weighted shard={shard}")
    done("weighted")


def allreduce_100_steps():
    """Not deterministic: MPI's own reductions; identical on all ranks after 100 steps, close to the mean."""
    for shard, bucket in ((False, None), (True, 10_000)):
        if True:
            fp, ref_fp = make_fp(), make_fp()
            dp = DataParallel(fastopt.Adam(fp, lr=1e-3), shard_state=shard, bucket_size=bucket)
            ref = fastopt.Adam(ref_fp, lr=1e-3)
            for step in range(1, 101):
                fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
                dp.step()
                ref_fp.grad[...] = rank_order_mean(fp.size, np.float32, step)
                ref.step()
            dp.verify_parameters()
            assert np.allclose(fp.data, ref_fp.data, rtol=1e-4, atol=1e-4), \
                np.abs(fp.data - ref_fp.data).max()
            assert not np.array_equal(fp.data, make_fp().data)
    done("allreduce_100_steps")


def zero1_rank_order():
    """ZeRO-1 without ``deterministic`` sums in rank order too (its exchange moves bytes; the
    owner adds): values whose sum depends on the order, then every optimizer and both dtypes
    against the deterministic modes, bit for bit, with and without buckets."""
    # (1 + 1e8) - 1e8 = 0 in float32, 1 + (1e8 - 1e8) = 1: MPI_Reduce_scatter gave rank 0's
    # slice 1 with 3 ranks (Open MPI 5)
    fp = make_fp()
    dp = DataParallel(fastopt.SGD(fp, lr=0.0), shard_state=True)
    fp.grad[...] = np.float32([1.0, 1e8, -1e8][rank] if size == 3 else rank + 1.0)
    dp.step(weight=1.0)
    expected = np.float32(0.0) if size == 3 else np.float32(sum(range(1, size + 1)))
    check_equal(dp._groups[0].red, np.full_like(dp._groups[0].red, expected),
                "ZeRO-1's reduced slice (rank-order sum)")
    for dtype in (np.float32, np.float64):
        for name, (cls, kw) in OPTS.items():
            for bucket in (None, 5_000):
                runs = {}
                for shard, det in ((True, False), (True, True), (False, True)):
                    fp = make_fp(dtype)
                    runs[(shard, det)] = (fp, DataParallel(cls(fp, **kw), shard_state=shard,
                                                           deterministic=det,
                                                           bucket_size=bucket))
                for step in range(1, 4):
                    for fp, dp in runs.values():
                        fp.grad[...] = local_grad(fp.size, dtype, step, rank)
                        dp.step()
                ref = runs[(False, True)][0].data
                for key, (fp, dp) in runs.items():
                    check_equal(fp.data, ref, f"{name} {np.dtype(dtype)} bucket={bucket} {key}")
                    dp.verify_parameters()
    done("zero1_rank_order")


def low_precision_state():
    """Plain mode with bfloat16 / int8 state: every rank steps the averaged gradient, so the
    parameters equal one process's on the rank-order mean, bit for bit (deterministic)."""
    for sd in ("bfloat16", "int8"):
        fp, ref_fp = make_fp(), make_fp()
        dp = DataParallel(fastopt.Adam(fp, lr=1e-3, state_dtype=sd, min_lowbit_size=1000),
                          deterministic=True)
        ref = fastopt.Adam(ref_fp, lr=1e-3, state_dtype=sd, min_lowbit_size=1000)
        for step in range(1, 21):
            fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
            dp.step()
            ref_fp.grad[...] = rank_order_mean(fp.size, np.float32, step)
            ref.step()
        dp.verify_parameters()
        check_equal(fp.data, ref_fp.data, f"{sd} state")
        assert dp.state_bytes() == ref.state_nbytes < 8 * fp.size / 1.5
    done("low_precision_state")


def buckets():
    runs = []
    for bucket in (None, 100, 1000, 16_384, 10**9):
        fp = make_fp()
        dp = DataParallel(fastopt.AdamW(fp, lr=0.01), shard_state=True, deterministic=True,
                          bucket_size=bucket)
        for step in range(1, 4):
            fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
            dp.step()
        runs.append(fp.data.copy())
    for r in runs[1:]:
        check_equal(r, runs[0], "bucketed")
    done("buckets")


def state_memory():
    fp = make_fp()
    full = fastopt.Adam(make_fp(), lr=0.01)
    full_bytes = sum(b.nbytes for bufs in full.state.values() for b in bufs)
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), shard_state=True)
    lo, hi = dp.shard[0]
    mine = dp.state_bytes()
    assert mine == 2 * 4 * (hi - lo), (mine, lo, hi)
    total = comm.allreduce(mine)
    assert total == full_bytes, (total, full_bytes)
    block = 16_384 * 2 * 4
    assert mine <= full_bytes / size + block, (mine, full_bytes, size)
    assert dp.shard == [shard_bounds(fp.size, size, 16_384)[rank]]
    plain = DataParallel(fastopt.Adam(make_fp(), lr=0.01))
    assert plain.state_bytes() == full_bytes
    RESULTS["state_bytes"] = comm.gather(mine)
    RESULTS["full_state_bytes"] = full_bytes
    done("state_memory")


def lists_and_dicts():
    rng = np.random.default_rng(5)
    shapes = [(40, 30), (30,), (1000,), (17, 3)]
    dtypes = [np.float32, np.float64, np.float32, np.float64]
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    for as_dict in (False, True):
        for shard in (False, True):
            params = [a.copy() for a in init]
            ref_params = [a.copy() for a in init]
            keys = [f"p{i}" for i in range(len(params))]
            wrap = (lambda xs: dict(zip(keys, xs))) if as_dict else (lambda xs: xs)
            dp = DataParallel(fastopt.Adam(wrap(params), lr=0.01), shard_state=shard,
                              deterministic=True, align=64)
            ref = fastopt.Adam(wrap(ref_params), lr=0.01)
            for step in range(1, 4):
                locals_ = [np.random.default_rng([step, rank, i]).standard_normal(s).astype(d)
                           for i, (s, d) in enumerate(zip(shapes, dtypes))]
                before = [g.copy() for g in locals_]
                dp.step(wrap(locals_))
                for g, b in zip(locals_, before):
                    check_equal(g, b, "step changed the caller's gradients")
                mean = []
                for i, (s, d) in enumerate(zip(shapes, dtypes)):
                    tot = None
                    for r in range(size):
                        g = np.random.default_rng([step, r, i]).standard_normal(s).astype(d)
                        tot = g if tot is None else np.add(tot, g, out=tot)
                    if size > 1:
                        tot /= size
                    mean.append(tot)
                ref.step(wrap(mean))
            for i, (p, q) in enumerate(zip(params, ref_params)):
                check_equal(p, q, f"array {i} dict={as_dict} shard={shard}")
            sd = dp.state_dict(root=None)
            rsd = ref.state_dict()
            for name in rsd["state"]:
                a, b = sd["state"][name], rsd["state"][name]
                for k in (keys if as_dict else range(len(params))):
                    check_equal(np.asarray(a[k]), np.asarray(b[k]), f"state {name}[{k}]")
    done("lists_and_dicts")


def state_dicts():
    """Sharded state_dict == plain state_dict; load + continue == never stopping; bad input refused."""
    fps = {s: make_fp() for s in (False, True)}
    dps = {s: DataParallel(fastopt.Adam(fps[s], lr=0.01), shard_state=s, deterministic=True)
           for s in (False, True)}
    for step in range(1, 4):
        for s in (False, True):
            fps[s].grad[...] = local_grad(fps[s].size, np.float32, step, rank)
            dps[s].step()
    sd_plain = dps[False].state_dict(root=None)
    sd_shard = dps[True].state_dict(root=None)
    assert sd_plain["step"] == sd_shard["step"] == 3
    for name in sd_plain["state"]:
        check_equal(sd_shard["state"][name][0], sd_plain["state"][name][0], name)
    root_only = dps[True].state_dict()
    assert (root_only is None) == (rank != 0)
    # into a fresh sharded DataParallel with the parameters of step 3, then 2 more steps each
    fresh_fp = make_fp()
    fresh_fp.data[...] = fps[True].data
    fresh = DataParallel(fastopt.Adam(fresh_fp, lr=0.01), shard_state=True, deterministic=True)
    fresh.load_state_dict(sd_plain if rank == 0 else None)
    assert fresh.step_count == 3
    for step in range(4, 6):
        for fp, dp in ((fps[True], dps[True]), (fresh_fp, fresh)):
            fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
            dp.step()
    check_equal(fresh_fp.data, fps[True].data, "resumed")
    # a state_dict of another optimizer is refused on every rank, nothing changes
    before = fresh.state_dict(root=None)
    bad = fastopt.SGD(make_fp(), lr=0.1, momentum=0.9).state_dict()
    try:
        fresh.load_state_dict(bad if rank == 0 else None)
    except ValueError as e:
        assert "is for SGD, not Adam" in str(e), e
    else:
        raise AssertionError("a state_dict of SGD was accepted")
    after = fresh.state_dict(root=None)
    check_equal(after["state"]["exp_avg"][0], before["state"]["exp_avg"][0], "after refusal")
    done("state_dicts")


def checkpoints(directory):
    """Sharded run writes; the file loads into a plain run at this size (and, in the launcher, into one process)."""
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), shard_state=True, deterministic=True)
    for step in range(1, 4):
        fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
        dp.step()
    path = os.path.join(directory, f"ckpt{size}.npz")
    dckpt.save_checkpoint(path, fp, dp, epoch=3, note="from mpi")
    sd = dp.state_dict()
    if rank == 0:
        np.savez(os.path.join(directory, f"expected{size}.npz"), data=fp.data,
                 **{k: v[0] for k, v in sd["state"].items()})
    fp2 = fastopt.FlatParams(SHAPES)
    dp2 = DataParallel(fastopt.Adam(fp2, lr=0.01), deterministic=True)
    extras = dckpt.load_checkpoint(path, fp2, dp2)
    assert extras == {"epoch": 3, "note": "from mpi"}, extras
    check_equal(fp2.data, fp.data, "loaded parameters")
    assert dp2.step_count == 3
    # a checkpoint written by one process (the launcher) into a sharded run
    single = os.path.join(directory, "single.npz")
    if os.path.exists(single):
        fp3 = fastopt.FlatParams(SHAPES)
        dp3 = DataParallel(fastopt.Adam(fp3, lr=0.01), shard_state=True)
        dckpt.load_checkpoint(single, fp3, dp3)
        exp = np.load(os.path.join(directory, "single_expected.npz"))
        check_equal(fp3.data, exp["data"], "single-process checkpoint: parameters")
        sd3 = dp3.state_dict(root=None)
        check_equal(sd3["state"]["exp_avg_sq"][0], exp["exp_avg_sq"], "single: exp_avg_sq")
        assert dp3.step_count == 2
    # a sharded run with groups, clipping, the guard and int8 state writes a checkpoint the
    # launcher loads in one process (test_distributed.py)
    fp4, opt4, _ = _resume_pair("flat", "int8", True, clip=5.0)
    dp4 = DataParallel(opt4, shard_state=True, deterministic=True, align=100)
    for step in range(1, 5):
        _dp_step(fp4, dp4, None, _grads_like([fp4.data], step, rank, nan=step == 2))
    assert dp4.optimizer.skipped_steps == 1
    dckpt.save_checkpoint(os.path.join(directory, f"features{size}.npz"), fp4, dp4, epoch=4)
    sd4 = dp4.state_dict()
    if rank == 0:
        np.save(os.path.join(directory, f"features_data{size}.npy"), fp4.data)
        with open(os.path.join(directory, f"features_sd{size}.pkl"), "wb") as f:
            pickle.dump(sd4, f)
    # missing and corrupt files: the same error on every rank, nothing changed
    garbage = os.path.join(directory, f"garbage{size}.npz")
    if rank == 0:
        with open(garbage, "wb") as f:
            f.write(b"PK\x03\x04 not really a zip")
    comm.Barrier()
    for bad, exc in ((os.path.join(directory, "nope.npz"), FileNotFoundError), (garbage, None)):
        before = fp2.data.copy()
        try:
            dckpt.load_checkpoint(bad, fp2, dp2)
        except FileNotFoundError:
            assert exc is FileNotFoundError
        except dckpt.CheckpointError:
            assert exc is None
        else:
            raise AssertionError(f"{bad} loaded")
        check_equal(fp2.data, before, "after a failed load")
    done("checkpoints")


#: DataParallel's construction options, read-only after construction (each with a value to
#: try: a different one, or the same; both are refused)
FIXED_OPTIONS = {
    "comm": lambda dp: MPI.COMM_SELF, "rank": lambda dp: dp.rank + 1,
    "size": lambda dp: 1, "flat": lambda dp: None,
    "shard_state": lambda dp: not dp.shard_state,
    "deterministic": lambda dp: not dp.deterministic, "bucket_size": lambda dp: 7,
    "align": lambda dp: 3, "overlap": lambda dp: not dp.overlap,
    "bucket_bytes": lambda dp: 1024,
    "wire_dtype": lambda dp: "native" if dp.wire_dtype == "bfloat16" else "bfloat16",
    "error_feedback": lambda dp: not dp.error_feedback,
    "transport": lambda dp: "mpi" if dp.transport != "mpi" else "shared_window",
    "broadcast": lambda dp: not dp.broadcast, "num_threads": lambda dp: 1,
    "abort_on_exception": lambda dp: not dp.abort_on_exception,
    "timings": lambda dp: {}, "check_every": None, "timeout": None,
}
#: Misspelled names (with the hint expected), and settable options' bad values
MISSPELLED = {"overlapp": "'overlap'", "shard_states": "'shard_state'", "check_evry": "'check_every'",
              "timeuot": "'timeout'", "wire_dype": "'wire_dtype'", "bettas": "'betas'"}
BAD_SETTABLE = [("check_every", -1, ValueError), ("check_every", 1.5, TypeError),
                ("check_every", True, TypeError), ("check_every", None, TypeError),
                ("timeout", 0, ValueError), ("timeout", -2.0, ValueError),
                ("timeout", float("inf"), ValueError), ("timeout", "60", TypeError),
                ("timeout", True, TypeError)]


def _refused(fn, exc, *needles):
    try:
        fn()
    except exc as e:
        for needle in needles:
            assert needle in str(e), (needle, str(e))
    else:
        raise AssertionError(f"accepted: {needles}")


def _attributes_refused(obj, cls, fixed, misspelled):
    """Every name of ``fixed`` read-only on ``obj`` (of class ``cls``), the ``misspelled``
    name refused with its close match; ``obj``'s instance dict unchanged."""
    before = dict(vars(obj))
    for name in fixed:
        for value in (None, getattr(obj, name)):
            _refused(lambda: setattr(obj, name, value), AttributeError, f"{cls}.{name} cannot be set")
    wrong, close = misspelled
    _refused(lambda: setattr(obj, wrong, None), AttributeError, f"did you mean '{close}'")
    assert vars(obj).keys() == before.keys() and all(vars(obj)[k] is v for k, v in before.items())


REDUCER_FIXED = ("comm", "watchdog", "rank", "size", "gbuf", "n", "mode", "wire", "mpitype",
                 "offsets", "per", "bounds", "scatter")


def reducer_attributes_refused(dp):
    """DataParallel's bucket reducers (and their shared windows): construction read-only,
    misspelled names refused, nothing changed."""
    for r in dp._reducers:
        _attributes_refused(r, "BucketReducer", REDUCER_FIXED, ("bucket", "buckets"))
        if r.shared is not None:
            _attributes_refused(r.shared, "SharedAllreduce", ("comm", "rank", "size", "n", "dtype"),
                                ("bufer", "buffer"))
    return len(dp._reducers)


def attributes():
    """Every construction option of DataParallel read-only afterwards, a misspelled name
    refused (not stored), check_every and timeout settable and checked as the constructor
    checks them; a refused assignment changes nothing: the steps after it have the bits of
    a DataParallel that saw none (every mode)."""
    configs = [dict(), dict(deterministic=True, bucket_size=1000), dict(shard_state=True),
               dict(shard_state=True, overlap=True, bucket_bytes=4096),
               dict(overlap=True, transport="mpi"), dict(overlap=True, transport="shared_window"),
               dict(wire_dtype="bfloat16", error_feedback=True, align=7)]
    reducers = 0
    for cfg in configs:
        pair = []
        for _ in range(2):
            fp = make_fp()
            pair.append((fp, DataParallel(fastopt.Adam(fp, lr=0.01, weight_decay=0.01),
                                          timeout=120, **cfg)))
        (fp, dp), (fp_ref, ref) = pair
        assert set(FIXED_OPTIONS) <= set(dir(dp)), cfg
        for step in range(1, 7):
            if step in (1, 4):           # refused assignments, between steps and before any
                before = dict(vars(dp))
                options = {name: getattr(dp, name) for name in FIXED_OPTIONS}
                for name, other in FIXED_OPTIONS.items():
                    if other is None:
                        continue
                    for value in (other(dp), getattr(dp, name)):
                        _refused(lambda: setattr(dp, name, value), AttributeError,
                                 f"DataParallel.{name} cannot be set",
                                 "construct a new DataParallel" if name != "timings" else "")
                for name, hint in MISSPELLED.items():
                    _refused(lambda: setattr(dp, name, True), AttributeError,
                             repr(name), f"did you mean {hint}")
                    assert name not in vars(dp)
                for name, value, exc in BAD_SETTABLE:
                    _refused(lambda: setattr(dp, name, value), exc, name)
                _refused(lambda: setattr(dp, "eps", -1.0), ValueError, "eps")
                assert vars(dp).keys() == before.keys() and all(
                    vars(dp)[k] is v for k, v in before.items()), cfg
                assert {n: getattr(dp, n) for n in FIXED_OPTIONS} == options
                reducers += reducer_attributes_refused(dp)
                assert dp.check_every == 1 and dp.timeout == 120.0 and dp.eps == 1e-8
            if step == 5:                # settable: checked, alike on every rank, in effect
                for d in (dp, ref):
                    d.check_every = np.int64(2)
                    d.timeout = 90
                    assert type(d.check_every) is int and d.check_every == 2
                    assert d.timeout == 90.0 and d._watch.timeout == 90.0
            for f, d in pair:
                f.grad[...] = local_grad(f.size, np.float32, step, rank)
                d.step()
            check_equal(fp.data, fp_ref.data, f"after refused assignments {cfg}")
        dp.verify_parameters()
        assert dp.step_count == 6
        # check_every set takes effect: 0, an lr changed on one rank goes unchecked; 1, the
        # next step finds it (on every rank, before updating)
        dp.check_every = 0
        dp.timeout = None
        assert dp.timeout is None and dp._watch.timeout is None
        if rank == size - 1:
            dp.lr = 0.02
        fp.grad[...] = local_grad(fp.size, np.float32, 7, rank)
        dp.step()
        assert dp.step_count == 7
        dp.check_every = 1
        _refused(dp.step, DistributedError, "disagree")
        assert dp.step_count == 7
    # the trainer's strategy, its synchronized batch norm and micro-batches: fixed; a trainer
    # whose strategy, trainer, SyncStats and OrderedMicroBatches refused assignments trains
    # the bits of one that saw none
    from fastopt.distributed import DataParallelStrategy, OrderedMicroBatches
    from fastopt.train import Trainer
    for micro in (None, 8):
        kw = dict(hidden=16, epochs=2, batch_size=128, seed=0, micro_batch=micro)
        t, t_ref = (Trainer(**kw, strategy=DataParallelStrategy(timeout=120))
                    for _ in range(2))
        s = t.strategy
        t.train_epoch(), t_ref.train_epoch()
        befores = [(o, dict(vars(o))) for o in (s, t, s.data_parallel)]
        for name in ("sync_bn", "options", "data_parallel", "sync_stats", "rank", "size"):
            _refused(lambda: setattr(s, name, getattr(s, name)), AttributeError,
                     f"DataParallelStrategy.{name} cannot be set")
        _refused(lambda: setattr(s, "sync_nb", False), AttributeError, "did you mean 'sync_bn'")
        _refused(lambda: setattr(t, "epochs", 5), AttributeError, "construct a new Trainer")
        _refused(lambda: setattr(s.data_parallel, "overlap", True), AttributeError,
                 "construct a new DataParallel")
        if micro is None:
            stats = s.sync_stats
            befores.append((stats, dict(vars(stats))))
            for name, value in (("ordered", True), ("comm", MPI.COMM_SELF),
                                ("deterministic", True), ("timeout", 5.0), ("rank", 0)):
                _refused(lambda: setattr(stats, name, value), AttributeError,
                         f"SyncStats.{name} cannot be set")
            _refused(lambda: setattr(stats, "determinstic", True), AttributeError,
                     "did you mean 'deterministic'")
        else:
            mb = t._micro
            assert isinstance(mb, OrderedMicroBatches)
            befores.append((mb, dict(vars(mb))))
            for name in ("size", "rank", "nprocs", "bounds", "n_total", "batchnorm"):
                _refused(lambda: setattr(mb, name, getattr(mb, name)), AttributeError,
                         f"OrderedMicroBatches.{name} cannot be set")
            _refused(lambda: setattr(mb, "timeout", 5.0), AttributeError, "'timeout' to set")
            _refused(lambda: setattr(mb, "seconds", -1.0), ValueError, "seconds")
        for o, before in befores:
            assert vars(o).keys() == before.keys() and all(
                vars(o)[k] is v for k, v in before.items()), type(o).__name__
        t.train_epoch(), t_ref.train_epoch()
        check_equal(t.model.params.data, t_ref.model.params.data, f"trainer micro={micro}")
        assert ([{k: v for k, v in r.items() if "time" not in k} for r in t.history]
                == [{k: v for k, v in r.items() if "time" not in k} for r in t_ref.history])
    assert reducers >= 4, reducers       # the overlapped configurations' reducers were seen
    done("attributes")


def mismatches():
    """Different layouts / hyperparameters: a DistributedError on every rank, no hang."""
    shapes = dict(SHAPES)
    if rank == size - 1:
        shapes["b2"] = (8,)
    try:
        DataParallel(fastopt.Adam(make_fp(shapes=shapes), lr=0.01))
    except DistributedError as e:
        assert "differ" in str(e) and "rank 0 has" in str(e), e
    else:
        raise AssertionError("layout mismatch not detected")
    lr = 0.01 if rank == 0 else 0.02
    try:
        DataParallel(fastopt.Adam(make_fp(), lr=lr))
    except DistributedError as e:
        assert "hyperparameters" in str(e), e
    else:
        raise AssertionError("lr mismatch not detected")
    try:
        DataParallel(fastopt.Adam(make_fp(np.float64 if rank == 1 else np.float32), lr=0.01))
    except DistributedError as e:
        assert "float64" in str(e), e
    else:
        raise AssertionError("dtype mismatch not detected")
    # an lr changed on one rank between steps: refused before the step, on every rank
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), shard_state=True)
    fp.grad[...] = 1.0
    dp.step()
    if rank == 1:
        dp.lr = 0.5
    before = fp.data.copy()
    try:
        dp.step()
    except DistributedError as e:
        assert "disagree" in str(e) and "0.5" in str(e), e
    else:
        raise AssertionError("per-step hyperparameter mismatch not detected")
    check_equal(fp.data, before, "a refused step changed the parameters")
    # plain mode clips the averaged gradient, identically on every rank
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01, max_grad_norm=0.5))
    fp.grad[...] = local_grad(fp.size, np.float32, 1, rank)
    dp.step()
    everyone = comm.allgather(fp.data.copy())
    for other in everyone:
        check_equal(fp.data, other, "clipped step differs between ranks")
    done("mismatches")


def small_and_threads():
    """Fewer blocks than ranks (empty slices); threads: each rank's share of its node."""
    fp = fastopt.FlatParams({"w": (5,)})
    fp.data[...] = 1.0
    dp = DataParallel(fastopt.Adam(fp, lr=0.1), shard_state=True, deterministic=True)
    fp.grad[...] = rank + 1.0
    dp.step()
    check_equal(fp.data, np.full(5, 0.9, np.float32), "tiny model")
    lo, hi = shard_bounds(5, size, 16_384)[rank]
    assert dp.state_bytes() == 8 * (hi - lo), (dp.state_bytes(), lo, hi)
    n = node_threads(comm)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    total = node.allreduce(n)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= n and total <= max(node.Get_size(), comm.allreduce(cpus, op=MPI.MAX)), (n, total)
    RESULTS["threads"] = comm.gather(fastopt.get_num_threads())
    assert [batch_part(10, r, size) for r in range(size)][rank] == batch_part(10, rank, size)
    done("small_and_threads")


def threads_restored():
    """DataParallel(num_threads=...) gives the process its thread count back on close() and
    at the end of a with block (before: the count it set stayed set)."""
    from fastopt.runtime.threads import num_threads_setting

    def dp(n):
        fp = fastopt.FlatParams({"w": (5,)})
        return DataParallel(fastopt.Adam(fp, lr=0.1), num_threads=n)

    for before in (None, 3):           # nothing set, and a count the user set
        fastopt.set_num_threads(before)
        for n, during in ((1, 1), (2, 2), ("auto", node_threads(comm) if before is None else 3)):
            with dp(n) as d:
                assert num_threads_setting() == during, (before, n, num_threads_setting())
                d.step(); d.close()     # the block's own close() after it does nothing
                assert num_threads_setting() == before, (before, n, num_threads_setting())
            assert num_threads_setting() == before, (before, n, num_threads_setting())
    # a count set after the constructor is the user's: kept
    fastopt.set_num_threads(None)
    d = dp(1)
    fastopt.set_num_threads(2)
    d.close()
    assert num_threads_setting() == 2, num_threads_setting()
    # a bad num_threads is refused before anything changes, naming it
    fastopt.set_num_threads(None)
    for bad, exc in (("autox", ValueError), (0, ValueError), (1.5, TypeError), (True, TypeError)):
        try:
            dp(bad)
        except exc as e:
            assert "num_threads" in str(e), e
        else:
            raise AssertionError(f"num_threads={bad!r} accepted")
        assert num_threads_setting() is None, (bad, num_threads_setting())
    # a constructor refused after its collectives began (an optimizer ZeRO-1 cannot cut, a
    # failure in its last stage) leaves the thread count, the parameters and the FlatParams
    # hooks as they were (before: the count it set stayed set, and rank 0's parameters
    # had been broadcast)
    for before in (None, 3):
        fastopt.set_num_threads(before)
        fp = fastopt.FlatParams({"w": (5,)})
        fp.data[...] = rank
        opt = fastopt.Adam(fp, lr=0.1)
        opt.clip_per_param = 1.0
        try:
            DataParallel(opt, shard_state=True, overlap=True, num_threads=1)
        except ValueError as e:
            assert "clip_per_param" in str(e), e
        else:
            raise AssertionError("clip_per_param with shard_state=True accepted")
        assert num_threads_setting() == before, (before, num_threads_setting())
        check_equal(fp.data, np.full(5, rank, np.float32), "a refused DataParallel")
        assert not fp.__dict__.get("_grad_hooks"), fp.__dict__.get("_grad_hooks")

        def fail(self, opt):
            raise RuntimeError("the last stage failed")

        fp = fastopt.FlatParams({"w": (5,)})
        real, DataParallel._shard_optimizer = DataParallel._shard_optimizer, fail
        try:
            DataParallel(fastopt.Adam(fp, lr=0.1), shard_state=True, overlap=True,
                         num_threads=1)
        except RuntimeError as e:
            assert "last stage" in str(e), e
        else:
            raise AssertionError("the failing stage did not raise")
        finally:
            DataParallel._shard_optimizer = real
        assert num_threads_setting() == before, (before, num_threads_setting())
        assert not fp.__dict__.get("_grad_hooks"), fp.__dict__.get("_grad_hooks")
    fastopt.set_num_threads(None)
    done("threads_restored")


def _resume_pair(kind, fmt, groups, skip=True, clip=None):
    """(params, AdamW, keys) for a resume scenario, built alike on every call.

    ``kind`` is "flat", "list" (PyTorch-style groups) or "dict"; with ``groups`` the second
    half of the arrays is in a group without weight decay (and its own lr); ``skip``:
    skip_nonfinite; ``clip``: max_grad_norm.
    """
    kw = dict(lr=0.01, weight_decay=0.3, skip_nonfinite=skip, max_grad_norm=clip)
    if fmt != "float32":
        kw.update(state_dtype=fmt, min_lowbit_size=100)
    if kind == "flat":
        fp = make_fp()
        return fp, fastopt.AdamW(fp, groups=[{"params": ["b1", "b2"], "weight_decay": 0.0,
                                               "lr": 0.02}]
                                 if groups else None, **kw), None
    rng = np.random.default_rng(11)
    shapes = [(40, 30), (30,), (1000,), (17, 3)]
    dtypes = ([np.float32] * 4 if fmt != "float32"
              else [np.float32, np.float64, np.float32, np.float64])
    arrays = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    if kind == "list":
        spec = ([{"params": arrays[:2]}, {"params": arrays[2:], "weight_decay": 0.0,
                                          "lr": 0.02}]
                if groups else arrays)
        return arrays, fastopt.AdamW(spec, **kw), None
    keys = ["W0", "b1", "W2", "b3"]
    return arrays, fastopt.AdamW(dict(zip(keys, arrays)), groups=[
        {"params": ["W2", "b3"], "weight_decay": 0.0, "lr": 0.02}] if groups else None,
        **kw), keys


def _grads_like(arrays, step, r, nan=False):
    out = []
    for i, a in enumerate(arrays):
        g = np.random.default_rng([step, r, i, 3]).standard_normal(a.shape).astype(a.dtype)
        if nan and i == 0:
            g.reshape(-1)[0] = np.nan
        out.append(g)
    return out


def _mean_grads(arrays, step):
    total = None
    for r in range(size):
        g = _grads_like(arrays, step, r)
        total = g if total is None else [np.add(t, x, out=t) for t, x in zip(total, g)]
    if size > 1:
        total = [np.divide(t, size, out=t) for t in total]
    return total


def _step_single(params, opt, keys, grads):
    if isinstance(params, fastopt.FlatParams):
        params.grad[...] = grads[0]
        opt.step()
    else:
        opt.step(dict(zip(keys, grads)) if keys else grads)


def _arrays_of(params):
    return [params.data] if isinstance(params, fastopt.FlatParams) else params


def resume_keeps_everything(directory=None):
    """A state_dict (or checkpoint) with parameter groups, skipped_steps and any state format
    loads into a DataParallel as into one optimizer: continuing gives the same bits."""
    cases = [(kind, fmt, shard) for kind in ("flat", "list", "dict")
             for fmt in ("float32", "bfloat16", "int8") for shard in (False, True)]
    for kind, fmt, shard in cases:
        groups = True
        p_ref, ref, keys = _resume_pair(kind, fmt, groups)
        p_dp, opt, _ = _resume_pair(kind, fmt, groups)
        arrays_ref, arrays_dp = _arrays_of(p_ref), _arrays_of(p_dp)
        # the single-process run: 3 steps, one of them skipped (a NaN)
        for step in range(1, 4):
            g = _mean_grads(arrays_ref, step) if step != 2 else \
                _grads_like(arrays_ref, step, 0, nan=True)
            _step_single(p_ref, ref, keys, g)
        assert ref.skipped_steps == 1 and ref.step_count == 2
        sd = ref.state_dict()
        for a, b in zip(arrays_dp, arrays_ref):
            a[...] = b
        dp = DataParallel(opt, shard_state=shard, deterministic=True, align=64)
        what = f"{kind} {fmt} shard={shard}"
        dp.load_state_dict(sd if rank == 0 else None)
        assert dp.optimizer.skipped_steps == 1, (what, dp.optimizer.skipped_steps)
        assert dp.step_count == 2, what
        if groups:
            assert dp.optimizer.param_groups[1].get("weight_decay") == 0.0, what
        for step in range(4, 7):
            _step_single(p_ref, ref, keys, _mean_grads(arrays_ref, step))
            g = _grads_like(arrays_dp, step, rank)
            if kind == "flat":
                p_dp.grad[...] = g[0]
                dp.step()
            else:
                dp.step(dict(zip(keys, g)) if keys else g)
        for i, (a, b) in enumerate(zip(arrays_dp, arrays_ref)):
            check_equal(a, b, f"{what}: array {i} after resuming")
        # and back: the DataParallel's state_dict is the single optimizer's
        back = dp.state_dict(root=None)
        mine = ref.state_dict()
        for key in ("step", "epoch", "hyper", "skipped_steps", "groups", "state_dtype"):
            if key in mine or key in back:
                assert back.get(key) == mine.get(key), (what, key, back.get(key), mine.get(key))
        check_state_dicts(back, mine, what)
        if shard:
            # a state_dict in another format (or without the groups) does not fit: refused on
            # every rank, nothing changed
            other = {"float32": "int8", "bfloat16": "float32", "int8": "bfloat16"}[fmt]
            before = dp.state_dict(root=None)
            for bad, words in ((_resume_pair(kind, other, True)[1].state_dict(), ("state",)),
                               (_resume_pair(kind, fmt, False)[1].state_dict(),
                                ("group", "entries"))):
                try:
                    dp.load_state_dict(bad if rank == 0 else None)
                except ValueError as e:
                    assert any(w in str(e) for w in words), e
                else:
                    raise AssertionError(f"{what}: ZeRO-1 took a state_dict that does not fit")
            check_state_dicts(dp.state_dict(root=None), before, f"{what}: after refusal")
    # the same through a checkpoint file written by one process
    if directory is not None:
        for fmt, shard in (("float32", False), ("int8", False), ("float32", True),
                           ("int8", True), ("bfloat16", True)):
            p_ref, ref, _ = _resume_pair("flat", fmt, True)
            p_dp, opt, _ = _resume_pair("flat", fmt, True)
            for step in range(1, 4):
                g = _mean_grads([p_ref.data], step) if step != 2 else \
                    _grads_like([p_ref.data], step, 0, nan=True)
                _step_single(p_ref, ref, None, g)
            path = os.path.join(directory, f"groups{size}{fmt}.npz")
            if rank == 0:
                fastopt.save_checkpoint(path, p_ref, ref, epoch=2)
            comm.Barrier()
            dp = DataParallel(opt, deterministic=True, shard_state=shard, align=100)
            dckpt.load_checkpoint(path, p_dp, dp)
            assert dp.optimizer.skipped_steps == 1
            assert dp.optimizer.param_groups[1].get("weight_decay") == 0.0
            for step in range(4, 6):
                _step_single(p_ref, ref, None, _mean_grads([p_ref.data], step))
                p_dp.grad[...] = _grads_like([p_dp.data], step, rank)[0]
                dp.step()
            check_equal(p_dp.data, p_ref.data, f"checkpoint {fmt} shard={shard}: after resuming")
            check_state_dicts(dp.state_dict(root=None), ref.state_dict(),
                              f"checkpoint {fmt} shard={shard}")
    done("resume_keeps_everything")


def check_state_dicts(a, b, what):
    """Two state dicts hold the same counters, hyperparameters, groups and state bits."""
    for key in ("type", "step", "epoch", "hyper", "skipped_steps", "groups", "state_dtype",
                "min_lowbit_size", "seed"):
        assert a.get(key) == b.get(key), (what, key, a.get(key), b.get(key))
    assert set(a["state"]) == set(b["state"]), what
    for name, ea in a["state"].items():
        eb = b["state"][name]
        assert type(ea) is type(eb) and len(ea) == len(eb), (what, name)
        for k in (ea if isinstance(ea, dict) else range(len(ea))):
            x, y = ea[k], eb[k]
            if isinstance(y, dict):
                assert isinstance(x, dict) and set(x) == set(y), (what, name, k)
                for f in y:
                    if isinstance(y[f], np.ndarray):
                        assert x[f].dtype == y[f].dtype and x[f].shape == y[f].shape, (what, f)
                        check_equal(x[f], y[f], f"{what}: state {name}[{k}][{f!r}]")
                    else:
                        assert x[f] == y[f], (what, name, k, f)
            else:
                assert x.dtype == y.dtype and x.shape == y.shape, (what, name, k)
                check_equal(x, y, f"{what}: state {name}[{k}]")


def _dp_step(params, dp, keys, grads):
    if isinstance(params, fastopt.FlatParams):
        params.grad[...] = grads[0]
        dp.step()
    else:
        dp.step(dict(zip(keys, grads)) if keys else grads)


def zero1_every_feature():
    """ZeRO-1 with parameter groups, clipping, the non-finite guard and every state format
    equals plain data parallel (deterministic mode: the same reduced gradient), over a
    FlatParams, a list (float32 and float64 arrays) and a dict: the parameters, every state
    bit, the step and skip counts and the clipping norm, bit for bit."""
    clip = 5.0                                     # below every step's norm: always clipping
    for kind in ("flat", "list", "dict"):
        for fmt in ("float32", "bfloat16", "int8"):
            runs = {}
            for shard in (False, True):
                params, opt, keys = _resume_pair(kind, fmt, True, clip=clip)
                # align=100: slices cut inside runs and arrays, off the int8 blocks unless snapped
                runs[shard] = (params, DataParallel(opt, shard_state=shard, deterministic=True,
                                                    align=100))
            what = f"ZeRO-1 {kind} {fmt}"
            norms = {False: [], True: []}
            for step in range(1, 7):
                for shard, (params, dp) in runs.items():
                    g = _grads_like(_arrays_of(params), step, rank,
                                    nan=(step == 3 and rank == size - 1))
                    _dp_step(params, dp, keys, g)
                    norms[shard].append(dp.optimizer.grad_norm)
            (p_plain, plain), (p_shard, shard) = runs[False], runs[True]
            for i, (a, b) in enumerate(zip(_arrays_of(p_shard), _arrays_of(p_plain))):
                check_equal(a, b, f"{what}: array {i}")
            assert shard.optimizer.skipped_steps == plain.optimizer.skipped_steps == 1, what
            assert shard.step_count == plain.step_count == 5, what
            for s, (x, y) in enumerate(zip(norms[True], norms[False]), 1):
                if s == 3:
                    assert not np.isfinite(x) and not np.isfinite(y), (what, x, y)
                else:
                    assert y > clip and x == y, (what, s, x, y)
            shard.verify_parameters()
            sd = shard.state_dict(root=None)
            check_state_dicts(sd, plain.state_dict(root=None), what)
            assert len(sd["groups"]) == 2 and sd["groups"][1]["lr"] == 0.02, sd["groups"]
            if fmt == "int8":
                # every slice starts on a quantization block of its tensor (align=100 is not)
                exts = optim_part.extents(_resume_pair(kind, fmt, True)[1])
                for lo, _ in shard.shard:
                    for e in exts:
                        if e.fmt == "int8" and e.start < lo < e.stop:
                            assert (lo - e.start) % 256 == 0, (what, lo, e)
    # wrapping an optimizer that has stepped: each rank keeps its slices of that state
    for kind in ("flat", "list", "dict"):
        for fmt in ("float32", "bfloat16", "int8"):
            params, opt, keys = _resume_pair(kind, fmt, True)
            for step in (1, 2):
                _step_single(params, opt, keys, _mean_grads(_arrays_of(params), step))
            want = opt.state_dict()
            dp = DataParallel(opt, shard_state=True, deterministic=True, align=100)
            check_state_dicts(dp.state_dict(root=None), want, f"wrapped after 2 steps {kind} {fmt}")
    done("zero1_every_feature")


def zero1_clip_without_nan():
    """Clipping alone (SGD with momentum), float32 and float64 parameters, with buckets and
    the default slices (whole 16,384-element chunks): the same bits as plain data parallel."""
    for dtype in (np.float32, np.float64):
        runs = []
        for shard in (False, True):
            fp = make_fp(dtype)
            runs.append((fp, DataParallel(fastopt.SGD(fp, lr=0.1, momentum=0.9,
                                                      max_grad_norm=10.0),
                                          shard_state=shard, deterministic=True,
                                          bucket_size=5000)))
        for step in range(1, 5):
            for fp, dp in runs:
                fp.grad[...] = local_grad(fp.size, dtype, step, rank)
                dp.step()
        (fa, a), (fb, b) = runs
        check_equal(fb.data, fa.data, f"clipped {np.dtype(dtype)}")
        assert b.optimizer.grad_norm == a.optimizer.grad_norm > 10.0
    done("zero1_clip_without_nan")


def weighting_mismatch():
    """step(weight=...) on some ranks and step() on others: a DistributedError on every rank
    before anything changes (checked every step), or at the next check (check_every=2)."""
    for shard in (False, True):
        for det in (False, True):
            fp = make_fp()
            dp = DataParallel(fastopt.Adam(fp, lr=0.01), shard_state=shard, deterministic=det)
            fp.grad[...] = local_grad(fp.size, np.float32, 1, rank)
            dp.step(weight=1.0 / size)           # everyone weighted: fine
            fp.grad[...] = local_grad(fp.size, np.float32, 2, rank)
            before = fp.data.copy()
            try:
                dp.step(weight=1.0 / size) if rank == 0 else dp.step()
            except DistributedError as e:
                assert "weight" in str(e), e
            else:
                raise AssertionError(f"mixed weighting not detected (shard={shard}, det={det})")
            check_equal(fp.data, before, "a refused step changed the parameters")
            assert dp.step_count == 1
    # with check_every=2 the mixed step is not checked itself, but the next check sees it
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), check_every=2)
    for step in (1, 2):
        fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
        dp.step(weight=0.5) if (rank == 0 and step == 2) else dp.step()
    fp.grad[...] = local_grad(fp.size, np.float32, 3, rank)
    try:
        dp.step()
    except DistributedError as e:
        assert "weight" in str(e), e
    else:
        raise AssertionError("mixed weighting between checks not detected")
    # a group value changed on one rank between steps: refused too
    fp = make_fp()
    dp = DataParallel(fastopt.AdamW(fp, lr=0.01, groups=[{"params": ["b1"], "weight_decay": 0.0}]))
    fp.grad[...] = 1.0
    dp.step()
    if rank == size - 1:
        dp.optimizer.param_groups[1]["weight_decay"] = 0.5
    try:
        dp.step()
    except DistributedError as e:
        assert "disagree" in str(e), e
    else:
        raise AssertionError("a group value changed on one rank was not detected")
    done("weighting_mismatch")


# ------------------------------------------------------------------ faults (one per launch)

def fault_exception():
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01))
    if rank == size - 1:
        raise RuntimeError("boom on the last rank")
    dp.step()                      # the others wait here: the abort must end them
    raise AssertionError("unreachable: the job should have been aborted")


def fault_layout():
    shapes = dict(SHAPES)
    if rank == 1:
        shapes["W9"] = (3, 3)
    DataParallel(fastopt.Adam(make_fp(shapes=shapes), lr=0.01))   # raises on every rank


def fault_hang():
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), timeout=2)
    if rank == 1:
        time.sleep(3600)           # never reaches the step: the others' watchdog must abort
    dp.step()


def _stuck(where, directory):
    """Rank 1 is stuck (sleeps) where the others wait in a collective of ``where``: the
    others' watchdog (timeout=2) must end the job, not hang."""
    stuck = rank == 1
    if where == "construct":
        if stuck:
            time.sleep(3600)
        DataParallel(fastopt.Adam(make_fp(), lr=0.01), timeout=2)
        return
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), timeout=2, shard_state=True)
    path = os.path.join(directory, "stuck.npz")
    if where == "load_checkpoint":
        # the root (rank 0) is stuck reading: the others wait for it
        if rank == 0:
            fastopt.save_checkpoint(path, fp, fastopt.Adam(make_fp(), lr=0.01))
        comm.Barrier()
        dckpt.load_checkpoint(path, fp, dp, check=lambda extras: time.sleep(3600))
        return
    if stuck:
        time.sleep(3600)
    if where == "average_buffers":
        dp.average_buffers([np.ones(3)])
    elif where == "verify_parameters":
        dp.verify_parameters()
    elif where == "load_state_dict":
        dp.load_state_dict(fastopt.Adam(make_fp(), lr=0.01).state_dict())
    elif where == "save_checkpoint":
        dckpt.save_checkpoint(path, fp, dp)


def _bench_stuck(where):
    """``fastopt bench --distributed`` (timeout=2) with rank 1 stuck ``where``: before it
    starts, in place of one of its timed collectives, or in place of its data-parallel step."""
    from fastopt.benchmark import distributed as bench

    if rank == 1:
        if where == "start":
            time.sleep(3600)
        name = {"timing": "_median_time", "step": "_step_split"}[where]
        setattr(bench, name, lambda *args, **kwargs: time.sleep(3600))
    bench.run_distributed(quick=True, timeout=2)
    raise AssertionError("unreachable: the job should have been aborted")


for _where in ("start", "timing", "step"):
    globals()[f"fault_bench_{_where}"] = functools.partial(_bench_stuck, _where)


for _where in ("construct", "average_buffers", "verify_parameters", "load_state_dict",
               "save_checkpoint", "load_checkpoint"):
    globals()[f"fault_stuck_{_where}"] = functools.partial(_stuck, _where)


if __name__ == "__main__":
    args = sys.argv[1:]
    directory = None
    if args and args[0].startswith("--dir="):
        directory = args.pop(0)[len("--dir="):]
    for name in args:
        fn = globals()[name]
        fn(directory) if name in ("checkpoints", "resume_keeps_everything") \
            or name.startswith("fault_stuck_") else fn()
    if rank == 0:
        print("result " + json.dumps(RESULTS), flush=True)
