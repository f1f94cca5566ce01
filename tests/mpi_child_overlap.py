"""The MPI side of tests/test_overlap.py: ``mpiexec -n P python -m mpi_child_overlap SCENARIO...``.

Overlapped (bucketed, non-blocking) gradient reduction and the bfloat16 wire of
:mod:`fastopt.distributed.buckets`.  Each scenario checks its results on every rank and raises
on a wrong one (the abort hook then ends the job with a non-zero exit); rank 0 prints
``ok <scenario>``.
"""

import sys
import time

import numpy as np

import fastopt
from fastopt.distributed import DataParallel
from fastopt.kernels._formats import bf16_to_float32, float32_to_bf16
from fastopt.nn.models import MLP
from mpi_child import (SHAPES, _attributes_refused, check_equal, comm, done, local_grad, make_fp, rank,
                       rank_order_mean, size)

EPS = float(np.finfo(np.float32).eps)
NAMES = list(SHAPES)


def _order(kind):
    """The order a backward pass marks the parameters ready in."""
    if kind == "backward":
        return NAMES[::-1]
    if kind == "forward":
        return NAMES
    if kind == "partial":          # some never marked: step() reduces them
        return NAMES[::-2]
    return []


def _run_flat(steps=3, order="backward", weights=None, optimizer=None, **kw):
    """``steps`` steps of DataParallel(optimizer(fp), **kw) on a FlatParams (default SGD with
    lr 1), this rank's gradients ``local_grad``, the parameters marked ready in ``order``
    (overlap).  Returns (params, reduced gradient of the last step): the whole gradient, or
    with ``shard_state=True`` this rank's slice of it."""
    fp = make_fp()
    dp = DataParallel((optimizer or (lambda p: fastopt.SGD(p, lr=1.0)))(fp), **kw)
    for step in range(1, steps + 1):
        fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
        w = None if weights is None else weights[rank]
        if w is not None and dp.bucketed:       # (overlap, or a bucketed wire or transport)
            dp.begin_step(weight=w)
        if kw.get("overlap"):
            for name in _order(order):
                dp.ready(name)
        dp.step(weight=w)
    dp.verify_parameters()
    reduced = dp._groups[0].red if dp.shard_state else fp.grad
    return fp.data.copy(), reduced.copy()


def _rounding_bound(step, weights=None):
    """Per element: how far two float32 summation orders of the P gradients can land apart."""
    total = np.zeros(make_fp().size, np.float64)
    for r in range(size):
        g = local_grad(total.size, np.float32, step, r).astype(np.float64)
        total += np.abs(g) * (1.0 if weights is None else weights[r])
    if weights is None:
        total /= size
    return 2 * (size - 1) * EPS * total + 1e-30


def overlap_equals_sequential():
    """Overlapped buckets (any bucket size, any readiness order) give the blocking path's result:
    bit for bit with 2 ranks (a sum of two terms has one value) and in deterministic mode
    (rank-order sums either way); within float32 rounding of a reordered sum otherwise."""
    weights = [(r + 1) / sum(range(1, size + 1)) for r in range(size)]
    for det in (False, True):
        for wts in (None, weights):
            ref_p, ref_g = _run_flat(deterministic=det, weights=wts)
            if det:     # the definition: rank-order sums
                check_equal(ref_g, rank_order_mean(ref_g.size, np.float32, 3, wts), "det ref")
            for bucket_bytes, order, transport in [
                    (b, o, t) for b in (None, 2000, 60_000, 10**9)
                    for o in ("backward", "forward", "partial", "none")
                    # (the default, "auto": the shared window on one node)
                    for t in (("mpi", "auto") if b in (None, 60_000) else ("mpi",))]:
                if True:
                    p, g = _run_flat(overlap=True, deterministic=det, weights=wts,
                                     bucket_bytes=bucket_bytes, order=order,
                                     transport=transport)
                    what = (f"det={det} weighted={wts is not None} {bucket_bytes} {order} "
                            f"{transport}")
                    if det or size == 2:
                        check_equal(g, ref_g, what)
                        check_equal(p, ref_p, what)
                    if det and bucket_bytes in (None, 2000) and transport == "mpi":
                        # the shared window sums in rank order too: the same bits
                        for ov in (False, True):
                            p, g = _run_flat(overlap=ov, transport="shared_window",
                                             weights=wts, bucket_bytes=bucket_bytes)
                            check_equal(g, ref_g, what + f" shared window overlap={ov}")
                            check_equal(p, ref_p, what + f" shared window overlap={ov}")
                    else:
                        bound = _rounding_bound(3, wts)
                        assert np.all(np.abs(g.astype(np.float64) - ref_g) <= bound), what
    done("overlap_equals_sequential")


def overlap_lists_and_dicts():
    """ready(key, grad) copies the gradient now; step() takes the rest (or nothing)."""
    arrays = [np.random.default_rng(i).standard_normal(s).astype(dt)
              for i, (s, dt) in enumerate([((30, 20), np.float32), ((20,), np.float64),
                                           ((20, 5), np.float32), ((5,), np.float64)])]
    keys = ["a", "b", "c", "d"]
    for as_dict, marked, transport in [(d, m, t) for d in (False, True)
                                       for m in ((), (3, 1), (3, 2, 1, 0))
                                       for t in ("mpi", "shared_window")]:
        if True:
            params = [a.copy() for a in arrays]
            ref_params = [a.copy() for a in arrays]
            P = dict(zip(keys, params)) if as_dict else params
            R = dict(zip(keys, ref_params)) if as_dict else ref_params
            dp = DataParallel(fastopt.Adam(P, lr=0.01), overlap=True, deterministic=True,
                              bucket_bytes=256, transport=transport)
            ref = DataParallel(fastopt.Adam(R, lr=0.01), deterministic=True)
            for step in range(1, 4):
                grads = [np.random.default_rng([step, rank, i]).standard_normal(a.shape)
                         .astype(a.dtype) for i, a in enumerate(arrays)]
                G = dict(zip(keys, grads)) if as_dict else grads
                for i in marked:
                    dp.ready(keys[i] if as_dict else i, grads[i])
                dp.step(None if len(marked) == len(arrays) else G)
                ref.step(G)
            for a, b in zip(params, ref_params):
                check_equal(a, b, f"dict={as_dict} marked={marked} {transport}")
    done("overlap_lists_and_dicts")


def overlap_mlp_hook():
    """The MLP's backward pass calls params.grads_ready per layer: with overlap=True the
    trained model equals the blocking run's (bit for bit: deterministic; or with 2 ranks)."""
    X = np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 5, 64)
    rows = slice(rank * 64 // size, (rank + 1) * 64 // size)
    for det in (False, True):
        runs = []
        for overlap, transport in ((False, "auto"), (True, "mpi"), (True, "auto")):
            model = MLP((12, 32, 32, 5), rng=0)
            dp = DataParallel(fastopt.Adam(model.params, lr=0.01), overlap=overlap,
                              deterministic=det, bucket_bytes=2048, transport=transport)
            for _ in range(5):
                model.loss_and_grad(X[rows], y[rows])
                dp.step()
            dp.detach()
            model.loss_and_grad(X[rows], y[rows])     # (no hook any more: nothing launched)
            runs.append(model.params.data.copy())
        for run, transport in zip(runs[1:], ("mpi", "auto")):
            if det or size == 2:
                check_equal(run, runs[0], f"MLP det={det} {transport}")
            else:
                assert np.allclose(run, runs[0], rtol=1e-4, atol=1e-5)
    done("overlap_mlp_hook")


def _bf16_model(step, weights=None, residuals=None):
    """The bfloat16 wire, written out: each rank's bits, the float32 rank-order sum, / P,
    rounded again; and each rank's new residual."""
    n = make_fp().size
    total = np.zeros(n, np.float32)
    new_res = []
    for r in range(size):
        v = local_grad(n, np.float32, step, r).copy()
        if weights is not None:
            v *= np.float32(weights[r])
        if residuals is not None:
            v += residuals[r]
        q = bf16_to_float32(float32_to_bf16(v))
        new_res.append(v - q)
        total += q
    if weights is None and size > 1:
        total /= np.float32(size)
    return bf16_to_float32(float32_to_bf16(total)), new_res


def bf16_wire():
    """Bits of the documented algorithm; within the documented bound of the exact mean; half
    the bytes; error feedback's residual is v - bf16(v), carried from step to step."""
    weights = [(r + 1) / sum(range(1, size + 1)) for r in range(size)]
    n = make_fp().size
    for wts in (None, weights):
        for overlap in (False, True):
            for ef in (False, True):
                fp = make_fp()
                dp = DataParallel(fastopt.SGD(fp, lr=1.0), wire_dtype="bfloat16",
                                  overlap=overlap, error_feedback=ef, bucket_bytes=3000)
                residuals = [np.zeros(n, np.float32) for _ in range(size)] if ef else None
                for step in range(1, 5):
                    fp.grad[...] = local_grad(n, np.float32, step, rank)
                    w = None if wts is None else wts[rank]
                    if overlap:
                        if w is not None:
                            dp.begin_step(weight=w)
                        for name in NAMES[::-1]:
                            dp.ready(name)
                    dp.step(weight=w)
                    expect, new_res = _bf16_model(step, wts, residuals)
                    what = f"bf16 weighted={wts is not None} overlap={overlap} ef={ef} step {step}"
                    check_equal(fp.grad, expect, what)
                    if ef:
                        residuals = new_res
                        check_equal(dp.residuals[0], residuals[rank], what + " residual")
                        assert np.any(residuals[rank] != 0)
                    else:
                        assert dp.residuals is None
                        # the documented bound against the exact (float64) mean
                        gs = [local_grad(n, np.float32, step, r).astype(np.float64)
                              * (1.0 if wts is None else wts[r]) for r in range(size)]
                        exact, mag = sum(gs), sum(np.abs(g) for g in gs)
                        if wts is None:
                            exact, mag = exact / size, mag / size
                        bound = 2.0 ** -8 * (mag + np.abs(exact)) + size * 2.0 ** -24 * mag \
                            + 2.0 ** -8 * 2.0 ** -8 * mag
                        err = np.abs(fp.grad - exact)
                        assert np.all(err <= bound), (what, (err - bound).max())
                        assert err.max() > 0          # (it does round)
                dp.verify_parameters()
                assert dp._reducers[0].bytes_per_step * 2 == DataParallel(
                    fastopt.SGD(make_fp(), lr=1.0), overlap=True)._reducers[0].bytes_per_step
    # error feedback, over many steps: the sum of what was sent tracks the sum of the gradients
    fp = make_fp()
    dp = DataParallel(fastopt.SGD(fp, lr=1.0), wire_dtype="bfloat16", error_feedback=True,
                      deterministic=True)
    fp_plain = make_fp()
    dp_plain = DataParallel(fastopt.SGD(fp_plain, lr=1.0), wire_dtype="bfloat16")
    fp_exact = make_fp()
    for step in range(1, 41):
        for f, d in ((fp, dp), (fp_plain, dp_plain)):
            f.grad[...] = local_grad(n, np.float32, step, rank)
            d.step()
        fp_exact.data[...] -= rank_order_mean(n, np.float32, step)
    err_ef = np.abs(fp.data - fp_exact.data).mean()
    err_plain = np.abs(fp_plain.data - fp_exact.data).mean()
    assert err_ef < err_plain, (err_ef, err_plain)
    done("bf16_wire")


def _refused(fn, exc, text):
    try:
        fn()
    except exc as e:
        assert text in str(e), (text, str(e))
    else:
        raise AssertionError(f"not refused: {text}")


def overlap_arguments():
    fp = make_fp()
    opt = fastopt.Adam(fp, lr=0.01)
    _refused(lambda: DataParallel(opt, overlap=1), TypeError, "overlap must be True or False")
    _refused(lambda: DataParallel(opt, error_feedback="yes"), TypeError, "error_feedback")
    _refused(lambda: DataParallel(opt, overlap=True, bucket_bytes=0), ValueError, "bucket_bytes")
    _refused(lambda: DataParallel(opt, overlap=True, bucket_bytes=2.5), TypeError, "bucket_bytes")
    _refused(lambda: DataParallel(opt, wire_dtype=16), TypeError, "wire_dtype must be a str")
    _refused(lambda: DataParallel(opt, wire_dtype="float16"), ValueError, "wire_dtype must be one of")
    _refused(lambda: DataParallel(opt, wire_dtype="bfloat16", shard_state=True), ValueError,
             "shard_state=False")
    _refused(lambda: DataParallel(opt, error_feedback=True), ValueError, "needs wire_dtype")
    _refused(lambda: DataParallel(opt, transport=None), TypeError, "transport must be a str")
    _refused(lambda: DataParallel(opt, transport="tcp"), ValueError, "transport must be")
    _refused(lambda: DataParallel(opt, transport="shared_window", shard_state=True), ValueError,
             "shard_state=False")
    _refused(lambda: DataParallel(opt, transport="shared_window", wire_dtype="bfloat16"),
             ValueError, "wire_dtype='native'")
    _refused(lambda: DataParallel(fastopt.Adam(make_fp(np.float64)), wire_dtype="bfloat16"),
             ValueError, "float32 parameters")
    # transport="auto" (the default): the shared window for an overlapped plain step with a
    # native wire (every rank is on this node); MPI otherwise
    for kw, want in ((dict(overlap=True), "shared_window"),
                     (dict(overlap=True, deterministic=True), "shared_window"),
                     (dict(), "mpi"),
                     (dict(overlap=True, shard_state=True), "mpi"),
                     (dict(overlap=True, wire_dtype="bfloat16"), "mpi"),
                     (dict(overlap=True, transport="mpi"), "mpi"),
                     (dict(transport="shared_window"), "shared_window")):
        got = DataParallel(fastopt.SGD(make_fp(), lr=1.0), **kw)
        assert got.transport == want, (kw, got.transport)
        assert bool(got._reducers and got._reducers[0].mode == "window") == (want != "mpi"), kw
    plain = DataParallel(fastopt.Adam(make_fp(), lr=0.01))
    _refused(lambda: plain.ready("W1"), ValueError, "overlap=True")
    _refused(lambda: plain.begin_step(), ValueError, "overlap=True")
    dp = DataParallel(opt, overlap=True, bucket_bytes=1000)
    before = fp.grad.copy()
    _refused(lambda: dp.ready("W7"), ValueError, "not a parameter")
    _refused(lambda: dp.ready("W1", np.zeros((300, 170), np.float32)), TypeError, "no gradient")
    _refused(lambda: dp.begin_step(weight=-1.0), ValueError, "weight")
    check_equal(fp.grad, before, "grad after refusals")
    dp.ready("b2")
    _refused(lambda: dp.ready("b2"), ValueError, "already called")
    _refused(lambda: dp.begin_step(weight=0.5), ValueError, "before the first ready()")
    dp.step()
    # a weight announced, another passed: refused after the collectives completed, everywhere
    dp.begin_step(weight=0.5)
    dp.ready("b2")
    _refused(lambda: dp.step(weight=0.25), ValueError, "same")
    # lists: a wrong gradient is refused before anything is copied
    arrays = [np.ones((4, 3), np.float32), np.ones(3, np.float32)]
    dpl = DataParallel(fastopt.SGD(arrays, lr=0.1), overlap=True)
    buf = dpl._groups[0].gbuf.copy()
    _refused(lambda: dpl.ready(0, np.ones((3, 4), np.float32)), ValueError, "shape (4, 3)")
    _refused(lambda: dpl.ready(0, np.ones((4, 3), np.float64)), ValueError, "float32")
    _refused(lambda: dpl.ready(5, np.ones(3, np.float32)), ValueError, "not a parameter")
    check_equal(dpl._groups[0].gbuf, buf, "list buffer after refusals")
    comm.Barrier()
    done("overlap_arguments")


def shared_allreduce():
    """The MPI-3 shared-window allreduce: the rank-order sum's bits on every rank, call after
    call, for both dtypes and sizes that do not divide evenly (or are empty)."""
    from fastopt.distributed.shm import SharedAllreduce

    for dtype in (np.float32, np.float64):
        for n in (0, 1, 17, 100_003):
            red = SharedAllreduce(comm, n, dtype)
            for step in range(1, 4):
                red.buffer[...] = local_grad(n, dtype, step, rank)
                red.allreduce()
                total = local_grad(n, dtype, step, 0).copy()
                for r in range(1, size):
                    total += local_grad(n, dtype, step, r)
                check_equal(red.buffer, total, f"shared {np.dtype(dtype)} n={n} step {step}")
            red.free()
            red.free()
    _refused(lambda: SharedAllreduce(comm, -1), ValueError, "n")
    _refused(lambda: SharedAllreduce(comm, 3, np.int32), TypeError, "float32 or float64")
    done("shared_allreduce")


def shared_pipeline():
    """The window's pipeline piece by piece (as BucketReducer drives it): pieces of any size
    and alignment, posted in any grouping, give the rank-order sums' bits, divided or not;
    and a rank that runs ahead into the next reduction waits (acquire) until every rank has
    copied what it needs from its window: here the last rank copies slowly, and rank 0's
    next values must not leak into them."""
    from fastopt.distributed.shm import SharedAllreduce

    n = 10_007
    red = SharedAllreduce(comm, n)
    pieces = [(0, 1), (1, 17), (17, 4000), (4000, 4001), (4001, n)][::-1]
    slow = red._copy_shares
    if rank == size - 1:
        def slow_copy(out, lo, hi):
            time.sleep(0.05)
            slow(out, lo, hi)
        red._copy_shares = slow_copy
    for step in range(1, 5):
        divide = step % 2 == 0
        out = np.full(n, np.nan, np.float32)
        red.acquire()
        red.buffer[...] = local_grad(n, np.float32, step, rank)
        pipe = red.pipeline(out, divide=divide)
        if step == 2:                    # read-only and misspelled names refused, nothing changed
            _attributes_refused(red, "SharedAllreduce", ("comm", "rank", "size", "n", "dtype"),
                                ("bufer", "buffer"))
            _attributes_refused(pipe, "Pipeline", ("red", "out", "divide"), ("trase", "trace"))
        for k, (lo, hi) in enumerate(pieces):
            pipe.post(lo, hi)
            if k % 2:
                pipe.progress()
        pipe.drain()
        assert pipe.pending == 0
        red.release()
        want = rank_order_mean(n, np.float32, step) if divide else None
        if want is None:
            want = local_grad(n, np.float32, step, 0).copy()
            for r in range(1, size):
                want += local_grad(n, np.float32, step, r)
        check_equal(out, want, f"pipeline step {step} divide={divide}")
    red.free()
    done("shared_pipeline")


def window_overlaps():
    """transport='shared_window', overlap=True: the buckets are copied into the window and
    posted during the backward pass (ready()), not in step(); the trace says when."""
    fp = make_fp()
    dp = DataParallel(fastopt.SGD(fp, lr=1.0), overlap=True, transport="shared_window",
                      bucket_bytes=4000)
    r = dp._reducers[0]
    for step in (1, 2):      # (after the first step, one bucket per layer or run of layers)
        r.trace = trace = []
        fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
        nb = len(r.buckets)
        for name in NAMES[::-1]:
            dp.ready(name)
        before = len(trace)
        dp.step()
        posted = [e for _, e, _ in trace[:before] if e == "posted"]
        assert len(posted) == nb > 1, (len(posted), nb)
        # (step() starts the consistency check, then waits: nothing posted there)
        assert [e for _, e, _ in trace[before:]][:2] == ["check", "finish"], trace[before:]
        assert sum(e == "copied" for _, e, _ in trace) == nb
        check_equal(fp.grad, rank_order_mean(fp.size, np.float32, step), "window overlapped")
    w2 = fp.slice("W2").start        # b2 + W2 reach 1000 elements; then b1 + W1
    assert [(b.lo, b.hi) for b in r.buckets] == [(w2, fp.size), (0, w2)], r.buckets
    done("window_overlaps")


def check_after_launch():
    """The bucketed step starts its consistency check (non-blocking) once every bucket is
    launched, and waits for it with them; a disagreement still raises DistributedError on
    every rank before the update (parameters and step count unchanged).  ZeRO-1 overlapped
    too (its reduce-scatter per bucket)."""
    from fastopt.distributed import DistributedError

    for transport, overlap, shard in (("mpi", True, False), ("shared_window", False, False),
                                      ("shared_window", True, False), ("mpi", True, True)):
        if True:
            what = f"{transport} overlap={overlap} shard_state={shard}"
            fp = make_fp()
            dp = DataParallel(fastopt.SGD(fp, lr=1.0), overlap=overlap, transport=transport,
                              bucket_bytes=4000, shard_state=shard)
            r = dp._reducers[0]
            for step in (1, 2):
                r.trace = trace = []
                nb = len(r.buckets)     # (the first step's; then whole layers)
                fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
                for name in (NAMES[::-1] if overlap else ()):
                    dp.ready(name)
                dp.step()
                events = [e for _, e, _ in trace]
                assert events.count("check") == 1, (what, events)
                c = events.index("check")
                assert "launched" not in events[c:], (what, events)
                assert events.count("launched") == nb, (what, nb, events)
                if shard:
                    lo, hi = dp.shard[0]
                    check_equal(dp._groups[0].red,
                                rank_order_mean(fp.size, np.float32, step)[lo:hi], what)
                elif transport == "shared_window" or size == 2:
                    check_equal(fp.grad, rank_order_mean(fp.size, np.float32, step), what)
            # an lr changed on one rank: refused on every rank, after the reduction, before
            # the update
            if rank == size - 1:
                dp.lr = 0.5
            fp.grad[...] = local_grad(fp.size, np.float32, 3, rank)
            for name in (NAMES[::-1] if overlap else ()):
                dp.ready(name)
            before = fp.data.copy()
            try:
                dp.step()
            except DistributedError as e:
                assert "disagree" in str(e) and "0.5" in str(e), (what, e)
            else:
                raise AssertionError(f"{what}: the lr mismatch was not detected")
            check_equal(fp.data, before, f"{what}: a refused step changed the parameters")
            assert dp.step_count == 2, (what, dp.step_count)
            # the check off: no check event
            dp = DataParallel(fastopt.SGD(make_fp(), lr=1.0), overlap=overlap,
                              transport=transport, check_every=0, shard_state=shard)
            dp._reducers[0].trace = trace = []
            dp.step()
            assert "check" not in [e for _, e, _ in trace], (what, trace)
    done("check_after_launch")


def layer_buckets():
    """After the first step the buckets are runs of whole layers (the parameters of one
    grads_ready call), if every rank saw the same layers; else the default buckets stay."""
    for same in (True, False):
        fp = make_fp()
        dp = DataParallel(fastopt.SGD(fp, lr=1.0), overlap=True, bucket_bytes=400,
                          transport="mpi")
        r = dp._reducers[0]
        default = [(b.lo, b.hi) for b in r.buckets]
        assert len(default) > 100
        for step in (1, 2, 3):
            fp.grad[...] = local_grad(fp.size, np.float32, step, rank)
            if same or rank == 0:
                fp.grads_ready("W2", "b2")       # (a hook call: one layer)
                fp.grads_ready("W1", "b1")
            else:
                for name in NAMES[::-1]:
                    fp.grads_ready(name)
            dp.step()
            check_equal(fp.grad, rank_order_mean(fp.size, np.float32, step), f"{same} {step}")
            got = [(b.lo, b.hi) for b in r.buckets]
            if same:
                w2 = fp.slice("W2").start
                assert got == [(w2, fp.size), (0, w2)], got
            else:
                assert got == default
        dp.verify_parameters()
    done("layer_buckets")


def zero1_overlap():
    """ZeRO-1 overlapped (a reduce-scatter per bucket, started by ready()) equals ZeRO-1
    without overlap bit for bit, deterministic or not (rank-order sums either way: both are
    exchanges).  With clipping and the non-finite guard, weights, any bucket size and
    readiness order, and over lists."""
    weights = [(r + 1) / sum(range(1, size + 1)) for r in range(size)]
    for det in (True, False):
        for wts in (None, weights):
            def run(**kw):
                return _run_flat(weights=wts, shard_state=True, deterministic=det, align=64,
                                 optimizer=lambda fp: fastopt.Adam(
                                     fp, lr=0.01, max_grad_norm=5.0, skip_nonfinite=True),
                                 **kw)
            ref_p, ref_red = run()
            for bucket_bytes in (None, 2000, 60_000):
                for order in ("backward", "forward", "partial", "none"):
                    p, red = run(overlap=True, bucket_bytes=bucket_bytes, order=order)
                    what = f"zero1 det={det} weighted={wts is not None} {bucket_bytes} {order}"
                    check_equal(red, ref_red, what)
                    check_equal(p, ref_p, what)
    # lists: ready(i, grad) for some, step(grads) for the rest
    arrays = [np.random.default_rng(i).standard_normal(sh).astype(np.float32)
              for i, sh in enumerate([(40, 30), (30,), (30, 5)])]
    params = [a.copy() for a in arrays]
    ref_params = [a.copy() for a in arrays]
    dp = DataParallel(fastopt.Adam(params, lr=0.01), shard_state=True, deterministic=True,
                      overlap=True, bucket_bytes=512, align=16)
    ref = DataParallel(fastopt.Adam(ref_params, lr=0.01), shard_state=True,
                       deterministic=True, align=16)
    for step in range(1, 4):
        grads = [np.random.default_rng([step, rank, i]).standard_normal(a.shape)
                 .astype(np.float32) for i, a in enumerate(arrays)]
        dp.ready(2, grads[2])
        dp.step(grads)
        ref.step(grads)
    for a, b in zip(params, ref_params):
        check_equal(a, b, "zero1 overlap lists")
    done("zero1_overlap")


def train_cli_overlap():
    """fastopt train --distributed overlaps by default: the same numbers as --no-overlap (bit
    for bit: --deterministic), and the bfloat16 wire trains too."""
    import contextlib
    import io

    from fastopt.cli import main

    def run(*extra):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["train", "--epochs", "2", "--quiet", "--hidden", "32", "--distributed",
                       *extra])
        assert rc in (0, None), rc
        return buf.getvalue()

    def numbers(out):
        return [line.split("time")[0] for line in out.splitlines() if line.startswith("epoch")]

    over = run("--deterministic")
    plain = run("--deterministic", "--no-overlap")
    if rank == 0:
        assert "overlapped with the backward pass" in over and "overlapped" not in plain
        assert numbers(over) == numbers(plain) and len(numbers(over)) == 2, (over, plain)
    # ZeRO-1 overlaps too (each bucket to its slice's owner), with the same bits
    over = run("--deterministic", "--shard-state", "--micro-batch", "0")
    plain = run("--deterministic", "--shard-state", "--micro-batch", "0", "--no-overlap")
    if rank == 0:
        assert "ZeRO-1 (sharded optimizer state), overlapped" in over, over
        assert "overlapped" not in plain, plain
        assert numbers(over) == numbers(plain) and len(numbers(over)) == 2, (over, plain)
    bf16 = run("--wire-dtype", "bfloat16", "--error-feedback")
    if rank == 0:
        assert "bfloat16 on the wire, error feedback" in bf16, bf16
        acc = float(bf16.split("held-out accuracy:")[1].split()[0])
        assert acc > 0.85, bf16
    done("train_cli_overlap")


# ------------------------------------------------------------------ faults (one per launch)

def fault_overlap_hang(transport="mpi", **kw):
    """Rank 1 launches its first buckets, then stops: the others wait in step() on pending
    requests (or the shared window's barrier); the watchdog (timeout=2) must end the job."""
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), overlap=True, timeout=2, bucket_bytes=4000,
                      check_every=0,     # (so the wait is on the pending requests)
                      transport=transport, **kw)
    dp.ready("b2")
    dp.ready("W2")
    if rank == 1:
        time.sleep(3600)
    dp.step()
    raise AssertionError("unreachable: the job should have been aborted")


def fault_overlap_exception():
    """Rank 1 raises while its buckets are in flight: the abort hook ends every rank."""
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), overlap=True, timeout=60, bucket_bytes=4000,
                      transport="mpi")
    dp.ready("b2")
    if rank == 1:
        raise RuntimeError("boom with requests pending")
    dp.step()
    raise AssertionError("unreachable: the job should have been aborted")


def fault_overlap_hang_window():
    fault_overlap_hang("shared_window")


def fault_overlap_hang_zero1():
    fault_overlap_hang(shard_state=True)


def fault_overlap_exception_window():
    """As fault_overlap_exception, with buckets in the shared window's pipeline."""
    fp = make_fp()
    dp = DataParallel(fastopt.Adam(fp, lr=0.01), overlap=True, timeout=60, bucket_bytes=4000,
                      transport="shared_window")
    dp.ready("b2")
    if rank == 1:
        raise RuntimeError("boom with requests pending")
    dp.step()
    raise AssertionError("unreachable: the job should have been aborted")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        globals()[name]()
