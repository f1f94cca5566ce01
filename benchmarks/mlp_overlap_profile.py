"""Where the time of the MLP's overlapped data-parallel step goes, against the sequential one.

Run ``mpiexec -n 2 python benchmarks/mlp_overlap_profile.py [reps] [bucket_bytes]``.

The MLP of ``fastopt bench --distributed`` (64-256-256-10, a global batch of 256 split over
the ranks) under four DataParallel variants, interleaved step by step: ``plain``
(MPI_Allreduce after the backward pass), ``overlap`` (MPI_Iallreduce per bucket),
``window_seq`` and ``window`` (the MPI-3 shared window, after the backward pass or during
it).  Prints per variant, the slowest rank's median of: the backward pass (forward, loss
and backward, with the variant's hook: the ``ready()`` calls are in it), ``step()``, the
whole step, and the CPU time of the step (``time.process_time``) on each rank; then, from a
traced round (:attr:`~fastopt.distributed.buckets.BucketReducer.trace`), the median time
per ``ready()`` hook call and per ``MPI_Test`` call, and the number of each per step.
With 2 ranks on 2 vCPUs there is no idle core: overlap can only gain by removing waiting,
so the CPU time is the figure that does not depend on the machine's load.
"""

import os
import sys
import time

import numpy as np

import fastopt
from fastopt.data.datasets import prepare_data
from fastopt.distributed import DataParallel, batch_part, use_node_share
from fastopt.distributed._mpi import require_mpi
from fastopt.nn.models import MLP
from fastopt.runtime.blas import limited_blas_threads


PROFILED = {}


def profile(cls, name):
    """Accumulate the wall time of ``cls.name`` calls in PROFILED (the PROFILE=1 run)."""
    fn = getattr(cls, name)
    key = f"{cls.__name__}.{name}"
    PROFILED[key] = [0.0, 0]

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc = PROFILED[key]
            acc[0] += time.perf_counter() - t
            acc[1] += 1
    setattr(cls, name, timed)


def main(reps=200, bucket=64 << 10):
    if os.environ.get("PROFILE"):
        from fastopt.distributed import buckets, parallel, shm
        for cls, names in ((parallel.DataParallel, ("_on_grads_ready", "ready", "step", "_check_consistent",
                                                    "_finish_buckets")),
                           (buckets.BucketReducer, ("ready", "_start", "_progress", "_launch",
                                                    "finish")),
                           (shm.Pipeline, ("post", "progress", "drain", "arrived", "_copy"))):
            for name in names:
                profile(cls, name)
    comm = require_mpi().COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    use_node_share(comm)
    Xtr, ytr, _, _, _ = prepare_data(0)
    model = MLP((64, 256, 256, 10), rng=0)
    part = batch_part(256, rank, size)
    Xb, yb = Xtr[:256][part], ytr[:256][part]
    fp = model.params
    modes = {"plain": {}, "overlap": dict(overlap=True, bucket_bytes=bucket),
             "window_seq": dict(transport="shared_window", bucket_bytes=bucket),
             "window": dict(overlap=True, transport="shared_window", bucket_bytes=bucket)}
    only = os.environ.get("MODES")
    if only:
        modes = {k: v for k, v in modes.items() if k in only.split(",")}
    dps = {}
    for k, options in modes.items():
        dps[k] = DataParallel(fastopt.Adam(fp, lr=1e-4), abort_on_exception=False, **options)
        dps[k].detach() if dps[k].overlap else None
        if os.environ.get("CUTS"):
            for r in dps[k]._reducers:
                r._cut([int(c) for c in os.environ["CUTS"].split(",")])
                r._reset()
    keys = list(dps)
    rows = {k: [] for k in keys}
    traces = {k: [] for k in keys}
    for rep in range(reps + 10):
        for i in range(len(keys)):
            k = keys[(rep + i) % len(keys)]
            dp = dps[k]
            if dp.overlap:
                dp.attach()
            traced = rep >= reps
            trace = [] if traced else None
            for r in dp._reducers:
                r.trace = trace
            comm.Barrier()
            c0, t0 = time.process_time(), time.perf_counter()
            model.loss_and_grad(Xb, yb)
            t1 = time.perf_counter()
            dp.step()
            t2, c2 = time.perf_counter(), time.process_time()
            if traced:
                traces[k].append((t0, trace, t1, t2))
            elif rep >= 5:
                rows[k].append((t1 - t0, t2 - t1, t2 - t0, c2 - c0))
            if dp.overlap:
                dp.detach()
    everyone = comm.gather((rows, traces))
    prof = comm.gather(PROFILED)
    if rank != 0:
        return
    if PROFILED:
        n = reps + 10
        print(f"per step (all variants together: divide by the variants using each), {n} steps")
        for key in PROFILED:
            print(f"  {key:30} " + "  ".join(f"rank {r}: {1e3 * p[key][0] / n:.4f} ms in "
                                              f"{p[key][1] / n:.1f} calls"
                                              for r, p in enumerate(prof)))
    load = os.getloadavg()[0]
    print(f"MLP 64-256-256-10, batch 256, {size} ranks, buckets {bucket} B, {reps} steps per "
          f"variant, load {load:.1f}; ms, medians (10th percentiles), the slowest rank's; median "
          "CPU time per step on each rank")
    med = {}
    for k in keys:
        per = [np.median(np.array(st[k]), axis=0) * 1e3 for st, _ in everyone]
        low = [np.percentile(np.array(st[k]), 10, axis=0) * 1e3 for st, _ in everyone]
        worst, wlow = np.max(per, axis=0), np.max(low, axis=0)
        med[k] = worst
        cpu = " ".join(f"{p[3]:.3f}" for p in per)
        print(f"  {k:11} backward {worst[0]:.3f} ({wlow[0]:.3f})  step() {worst[1]:.3f} "
              f"({wlow[1]:.3f})  whole {worst[2]:.3f} ({wlow[2]:.3f})  CPU {cpu}")
        med[k + "_p10"] = wlow
    for q in ("", "_p10"):
        print("  medians:" if not q else "  10th percentiles:", end="")
        for a, b in (("overlap", "plain"), ("window", "window_seq"), ("window", "plain")):
            if a in med and b in med:
                print(f"  {a}/{b} {med[a + q][2] / med[b + q][2]:.3f}", end="")
        print()
    for k in keys:
        if not dps_overlapish(modes[k]):
            continue
        for r, (_, tr) in enumerate(everyone):
            gaps, tests, nready, ntest = [], [], [], []
            for t0, events, t1, t2 in tr[k]:
                ready = [t for t, e, _ in events if e == "ready"]
                nready.append(len(ready))
                ts = [w[0] for _, e, w in events if e == "test"]
                tests += ts
                ntest.append(len(ts))
                fin = [t for t, e, _ in events if e in ("finish", "finished")]
                if len(fin) == 2:
                    gaps.append(fin[1] - fin[0])
            print(f"  {k:11} rank {r}: ready() per step {np.median(nready):.0f}, tests "
                  f"{np.median(ntest):.0f} of median {1e3 * np.median(tests or [0]):.4f} ms, "
                  f"finish() {1e3 * np.median(gaps or [0]):.3f} ms")


def dps_overlapish(options):
    return bool(options)


if __name__ == "__main__":
    a = sys.argv[1:]
    with limited_blas_threads(1):
        main(int(a[0]) if a else 200, int(a[1]) if len(a) > 1 else 64 << 10)
