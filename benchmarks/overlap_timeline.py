"""Where the time of the 16M synthetic data-parallel step goes, bucket by bucket.

Run ``mpiexec -n 2 python benchmarks/overlap_timeline.py [bucket_bytes] [reps] [mode]``.

The synthetic model of ``fastopt bench --distributed`` (16M float32 parameters in 16 layers;
the backward pass copies each layer's gradient in, last layer first, and calls
``grads_ready``) under four DataParallel variants, interleaved: ``plain`` (MPI_Allreduce after
the backward pass), ``overlap`` (MPI_Iallreduce per bucket), ``window_seq`` and ``window``
(the MPI-3 shared window's pipeline, after the backward pass or during it).  Prints per rank
the median backward and step times (and their range); with ``mode``, one step's timeline
from :attr:`fastopt.distributed.buckets.BucketReducer.trace`, in ms from the step's start:
``C`` a layer computed, ``l`` a bucket launched (the number: its first element / 2**20),
``test@t+d(k)`` an MPI_Testall of ``d`` ms after which ``k`` buckets were complete, ``p`` /
``s`` / ``c`` a window piece posted / summed here / copied back, ``f`` step() starts and ends
its waiting.
"""

import sys
import time

import numpy as np

import fastopt
from fastopt.distributed import DataParallel, use_node_share
from fastopt.distributed._mpi import require_mpi


def main(bucket=4 << 20, reps=7, show=None):
    comm = require_mpi().COMM_WORLD
    rank = comm.Get_rank()
    use_node_share(comm)
    big, layers = 1 << 24, 16
    names = [f"layer{i}" for i in range(layers)]
    fp = fastopt.FlatParams({k: (big // layers,) for k in names})
    g = np.random.default_rng(rank).standard_normal(big).astype(np.float32)
    modes = {"plain": {}, "overlap": dict(overlap=True, bucket_bytes=bucket),
             "window_seq": dict(transport="shared_window", bucket_bytes=bucket),
             "window": dict(overlap=True, transport="shared_window", bucket_bytes=bucket)}
    dps = {}
    for k, options in modes.items():
        dps[k] = DataParallel(fastopt.Adam(fp, lr=1e-4), abort_on_exception=False, **options)
        dps[k].detach()

    def backward(trace):
        for k in reversed(names):
            np.copyto(fp.grads[k], g[fp.slice(k)])
            if trace is not None:
                trace.append((time.perf_counter(), "computed", k))
            fp.grads_ready(k)

    keys = list(modes)
    steps, traces = {k: [] for k in keys}, {}
    for rep in range(reps + 1):          # the first round warms up; the last one is traced
        for k in keys[rep % 4:] + keys[:rep % 4]:
            dp = dps[k]
            if dp.overlap:
                dp.attach()
            trace = [] if rep == reps else None
            for r in dp._reducers:
                r.trace = trace
            comm.Barrier()
            t0 = time.perf_counter()
            backward(trace)
            t1 = time.perf_counter()
            dp.step()
            t2 = time.perf_counter()
            if trace is not None:
                traces[k] = (t0, trace, t1, t2)
            elif rep > 0:
                steps[k].append((t1 - t0, t2 - t0))
            dp.detach()
    everyone = comm.gather((steps, traces))
    if rank != 0:
        return
    for k in keys:
        for r, (st, _) in enumerate(everyone):
            a = np.array(st[k]) * 1e3
            print(f"{k:11} rank {r}: backward {np.median(a[:, 0]):6.1f} ms, step "
                  f"{np.median(a[:, 1]):6.1f} ms [{a[:, 1].min():.1f}-{a[:, 1].max():.1f}]")
    if show is None:
        return
    for r, (_, tr) in enumerate(everyone):
        t0, events, t1, t2 = tr[show]
        print(f"--- {show}, rank {r}: backward ends at {1e3 * (t1 - t0):.1f} ms, "
              f"step at {1e3 * (t2 - t0):.1f} ms")
        out = []
        for t, e, w in events:
            at = 1e3 * (t - t0)
            if e == "ready":
                continue
            if e == "test":
                out.append(f"test@{at:.1f}+{1e3 * w[0]:.1f}({w[1]})")
            elif e == "computed":
                out.append(f"C@{at:.1f}")
            else:
                out.append(f"{e[0]}{'' if w is None else w >> 20}@{at:.1f}")
        print(" ".join(out))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]) if a else 4 << 20, int(a[1]) if len(a) > 1 else 7, a[2] if len(a) > 2 else None)
