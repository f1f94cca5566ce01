"""``fastopt bench --distributed``: collectives, the data-parallel step, and an alpha-beta scaling model.

Run under ``mpiexec -n P``.  Measures, with P ranks:

* the node's memory-copy bandwidth (``np.copyto`` of the largest buffer, on rank 0 alone)
  and the in-place ``MPI_Allreduce`` of float32 buffers: GB/s of the buffer
  (``bytes / time``, "algorithm bandwidth") and bus bandwidth (``× 2(P−1)/P``, the bytes each
  rank must send and receive in a ring), and its ratio to the copy bandwidth;
* where the time of the 16M allreduce goes: the same bytes through out-of-place
  ``MPI_Allreduce``, ``MPI_Reduce_scatter_block`` + ``MPI_Allgather``, 4 MiB buckets,
  ``MPI_Iallreduce``, and the MPI-3 shared-memory window of
  :class:`~fastopt.distributed.shm.SharedAllreduce` (one node), each as a ratio to the copy;
* the latency α of an 8-byte allreduce;
* a data-parallel step split into compute, communication and optimizer, plain allreduce
  against ZeRO-1, and the optimizer state per rank: the MLP of ``fastopt train`` (real
  forward/backward on this rank's part of a global batch of 256) and a synthetic model of
  ``size`` float32 parameters in 16 layers (compute: copying each layer's gradient in, last
  layer first); each sequential (the allreduce after the backward pass), overlapped
  (``overlap=True``: buckets sent as the layers finish, through the transport it picks: the
  shared window on one node), overlapped through ``MPI_Iallreduce``, with a bfloat16 wire,
  through the MPI-3 shared window sequential and overlapped, and ZeRO-1 without overlap
  (``MPI_Reduce_scatter``; deterministic: a blocking ``MPI_Alltoallv`` exchange) and with it
  (the same exchange per bucket, non-blocking);
* the alpha-beta model of that step on M machines (a ring over M nodes: ``2(M−1)`` messages
  of ``S/M`` bytes; ZeRO-1 sends the same bytes as a reduce-scatter plus an all-gather, and
  divides the optimizer's time and state by M), with the measured optimizer time, for
  float32 and for bfloat16 on the wire (half the bytes).
"""

import time

import numpy as np

from ..runtime import machine

__all__ = ["run_distributed", "format_distributed", "scaling_model"]

LINKS_GBIT = (10, 25, 100)
LAYERS = 16           # the synthetic model's layers
MLP_BUCKET = 64 << 10          # overlap buckets (bytes): the MLP's layers are 10 KB to 256 KB
SYNTH_BUCKET = 4 << 20
MACHINES = (2, 4, 8, 16, 32, 64)
NET_ALPHA = 25e-6     # seconds per message between machines (TCP on a datacentre network)


def _median_time(comm, fn, reps):
    """The slowest rank's median time of ``fn`` (collectives on ``comm.unguarded``): each
    repetition runs under one deadline of ``comm``'s watchdog (not the whole loop: a loaded
    machine may need more than a short timeout for all of them), so the guard costs nothing
    per call."""
    times = []
    raw = comm.unguarded
    for _ in range(reps):
        with comm.watchdog("fastopt bench --distributed: timing a collective"):
            raw.Barrier()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    # the slowest rank's time is the collective's time
    return comm.allreduce(float(np.median(times)), op=_max(comm))


def _max(comm):
    from ..distributed._mpi import require_mpi

    return require_mpi().MAX


def scaling_model(n_params, opt_seconds, *, state_bytes_per_param=8, grad_bytes=4,
                  alpha=NET_ALPHA, links=LINKS_GBIT, machines=MACHINES):
    """Rows ``(M, link Gb/s, plain step s, ZeRO-1 step s, plain state B, ZeRO-1 state B,
    bfloat16-wire step s)``.

    ``opt_seconds``: the optimizer's time for the whole model on one machine.  Communication
    of a ring allreduce, or a reduce-scatter plus an all-gather, over M machines:
    ``2(M−1)·α + 2(M−1)/M · S/B`` with ``S = n_params · grad_bytes`` and B the link's bytes/s;
    the bfloat16 wire sends ``S/2`` (an all-to-all plus an all-gather of 2-byte elements).
    """
    rows = []
    size = n_params * grad_bytes
    for m in machines:
        for link in links:
            bw = link * 1e9 / 8
            comm = 2 * (m - 1) * alpha + 2 * (m - 1) / m * size / bw
            half = 2 * (m - 1) * alpha + 2 * (m - 1) / m * size / 2 / bw
            rows.append((m, link, comm + opt_seconds, comm + opt_seconds / m,
                         n_params * state_bytes_per_param,
                         -(-n_params // m) * state_bytes_per_param, half + opt_seconds))
    return rows


#: The data-parallel variants the step table compares: (key, label, DataParallel options)
MODES = (("plain", "sequential allreduce", dict()),
         ("overlap", "overlapped (transport auto)", dict(overlap=True)),
         ("overlap_mpi", "overlapped, MPI_Iallreduce", dict(overlap=True, transport="mpi")),
         ("bf16", "overlapped, bfloat16 wire", dict(overlap=True, wire_dtype="bfloat16")),
         ("window_seq", "sequential, MPI-3 shared window", dict(transport="shared_window")),
         ("window", "overlapped, MPI-3 shared window", dict(overlap=True,
                                                             transport="shared_window")),
         ("zero1", "ZeRO-1", dict(shard_state=True)),
         ("zero1_det", "ZeRO-1, deterministic (MPI_Alltoallv)",
          dict(shard_state=True, deterministic=True)),
         ("zero1_overlap", "ZeRO-1, overlapped (per-bucket exchange)",
          dict(shard_state=True, overlap=True)))


def _step_split(comm, fp, compute, reps, modes):
    """Each data-parallel variant's step, split: compute alone, exposed communication (the
    time ``step()`` waits for it), optimizer, and the whole step; the slowest rank's.

    ``modes``: (key, DataParallel options) pairs.  The variants run interleaved (one step of
    each in turn, rotating), so a change in the machine's load falls on all of them alike.
    All step the same parameters; an overlapped variant's hook is attached for its own steps
    only.
    """
    import fastopt
    from ..distributed import DataParallel

    dps = {}
    for key, options in modes:
        try:
            dp = DataParallel(fastopt.Adam(fp, lr=1e-4), comm.unguarded,
                              abort_on_exception=False, timeout=comm.watchdog.timeout,
                              **options)
        except ValueError:      # (on every rank: the shared window needs one node)
            continue
        dps[key] = dp
        dp.detach()
    transport = dps["overlap"].transport       # the one overlap=True chose
    keys = list(dps)
    steps = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    parts = {k: {"communication": [], "optimizer": []} for k in keys}

    def one(key, timed):
        dp = dps[key]
        if dp.overlap:
            dp.attach()
        comm.Barrier()
        before = dict(dp.timings)
        c, t = time.process_time(), time.perf_counter()
        compute()
        dp.step()
        if timed:
            steps[key].append(time.perf_counter() - t)
            cpu[key].append(time.process_time() - c)
            for name, ts in parts[key].items():
                ts.append(dp.timings[name] - before[name])
        dp.detach()

    for key in keys:   # warm-up
        one(key, False)
        one(key, False)
    for rep in range(reps):
        for i in range(len(keys)):
            one(keys[(rep + i) % len(keys)], True)
    comp = []
    for _ in range(reps):       # compute alone (no hook attached)
        comm.Barrier()
        t = time.perf_counter()
        compute()
        comp.append(time.perf_counter() - t)
    out = {}
    for k in keys:
        # medians, as the step's: a mean would charge one step's preemption by another
        # process (a time slice, ~100 times a 0.1 ms update) to every step's optimizer
        r = {"compute": float(np.median(comp)),
             "communication": float(np.median(parts[k]["communication"])),
             "optimizer": float(np.median(parts[k]["optimizer"])),
             "step": float(np.median(steps[k])), "cpu": float(np.median(cpu[k])),
             "state_bytes": dps[k].state_bytes()}
        # the slowest rank decides
        out[k] = {name: comm.allreduce(v, op=_max(comm)) for name, v in r.items()}
    out["transport"] = transport
    return out


def _modes(bucket_bytes):
    """MODES as (key, options), the bucketed ones (overlapped, shared window) with buckets of
    ``bucket_bytes``."""
    return [(key, dict(options, bucket_bytes=bucket_bytes)
             if "overlap" in options or "transport" in options else options)
            for key, _, options in MODES]


def _allreduce_ways(comm, n, reps):
    """The ``n``-element float32 allreduce's time, several ways (see the module docstring):
    rows of (name, seconds, copy seconds, ratio).  Each way alternates with a memory copy of
    the same bytes on every rank at once (``np.copyto``), so the ratio compares the two
    under the same load, whatever else the machine is doing."""
    from ..distributed._mpi import require_mpi
    from ..distributed.shm import SharedAllreduce

    mpi = require_mpi()
    raw = comm.unguarded
    size = raw.Get_size()
    buf = np.ones(n, np.float32)
    out = np.empty_like(buf)
    src, dst = np.ones_like(buf), np.empty_like(buf)
    rows = []

    def add(name, fn):
        ways, copies = [], []
        for _ in range(reps):
            with comm.watchdog(f"fastopt bench --distributed: timing {name}"):
                for f, ts in ((lambda: np.copyto(dst, src), copies), (fn, ways)):
                    raw.Barrier()
                    t = time.perf_counter()
                    f()
                    ts.append(time.perf_counter() - t)
        t_way = comm.allreduce(float(np.median(ways)), op=_max(comm))
        t_copy = comm.allreduce(float(np.median(copies)), op=_max(comm))
        rows.append((name, t_way, t_copy, t_copy / t_way))

    add("MPI_Allreduce in place", lambda: raw.Allreduce(mpi.IN_PLACE, buf, op=mpi.SUM))
    add("MPI_Allreduce, out of place", lambda: raw.Allreduce(buf, out, op=mpi.SUM))
    if n % size == 0:
        part = np.empty(n // size, np.float32)
        add("MPI_Reduce_scatter_block + MPI_Allgather",
            lambda: (raw.Reduce_scatter_block(buf, part, op=mpi.SUM), raw.Allgather(part, out)))
    step = 1 << 20
    add("MPI_Allreduce in place, 4 MiB buckets",
        lambda: [raw.Allreduce(mpi.IN_PLACE, buf[b:b + step], op=mpi.SUM)
                 for b in range(0, n, step)])
    add("MPI_Iallreduce in place + MPI_Wait",
        lambda: raw.Iallreduce(mpi.IN_PLACE, buf, op=mpi.SUM).Wait())
    shared = None
    with comm.watchdog("fastopt bench --distributed: the shared window"):
        try:
            shared = SharedAllreduce(raw, n)
        except ValueError:       # ranks on several nodes
            pass
    if shared is not None:
        shared.buffer[...] = 1.0
        add("MPI-3 shared-memory window, rank-order sum", shared.allreduce)
        with comm.watchdog("fastopt bench --distributed: the shared window"):
            shared.free()
    return rows


def run_distributed(comm=None, *, quick=False, reps=None, timeout=None):
    """The measurements, as a dict (the same on every rank).

    ``timeout``: seconds any collective may wait (a rank died or is stuck) before the job is
    aborted with a message (:class:`~fastopt.distributed.Watchdog`); None waits for ever.
    Every collective goes through the watchdog: the benchmark's own, and its DataParallel's.
    """
    import fastopt
    from ..distributed._mpi import world
    from ..nn.models import MLP
    from ..data.datasets import prepare_data
    from ..distributed import batch_part

    from ..distributed import use_node_share
    from ..runtime.blas import limited_blas_threads

    from ..distributed import Watchdog

    comm = world(comm)
    comm = Watchdog(comm, timeout).guard(comm, "fastopt bench --distributed")
    use_node_share(comm)
    with limited_blas_threads(1):   # as fastopt train: one BLAS thread per rank
        return _run(comm, quick, reps)


def _run(comm, quick, reps):
    import fastopt
    from ..nn.models import MLP
    from ..data.datasets import prepare_data
    from ..distributed import batch_part

    rank, size = comm.Get_rank(), comm.Get_size()
    raw = comm.unguarded     # the timed collectives: under one deadline each (_median_time)
    reps = reps or (5 if quick else 11)
    sizes = [1 << 20] if quick else [1 << 20, 1 << 24]
    big = sizes[-1]
    res = {"ranks": size, "quick": quick, "reps": reps, "threads": fastopt.get_num_threads(),
           "version": fastopt.__version__, "allreduce": [], "load": _load(),
           "cpu": machine.describe()}

    # node copy bandwidth: rank 0 alone, the others waiting
    src = np.ones(big, np.float32)
    dst = np.empty_like(src)
    copy_t = None
    if rank == 0:
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            np.copyto(dst, src)
            ts.append(time.perf_counter() - t)
        copy_t = float(np.median(ts))
    res["copy_gbs"] = src.nbytes / comm.bcast(copy_t) / 1e9
    del dst

    from ..distributed._mpi import require_mpi
    mpi = require_mpi()
    for n in sizes:
        buf = np.ones(n, np.float32)
        t = _median_time(comm, lambda: raw.Allreduce(mpi.IN_PLACE, buf, op=mpi.SUM), reps)
        algbw = buf.nbytes / t / 1e9
        res["allreduce"].append({"n": n, "time": t, "algbw": algbw,
                                 "busbw": algbw * 2 * (size - 1) / size,
                                 "of_copy": algbw / res["copy_gbs"]})
    tiny = np.ones(2, np.float32)
    res["alpha"] = _median_time(
        comm, lambda: [raw.Allreduce(mpi.IN_PLACE, tiny, op=mpi.SUM) for _ in range(100)],
        reps) / 100

    res["ways"] = _allreduce_ways(comm, big, reps)

    # the MLP of fastopt train, a global batch of 256
    Xtr, ytr, _, _, _ = prepare_data(0)
    model = MLP((64, 256, 256, 10), rng=0)
    part = batch_part(256, rank, size)
    Xb, yb = Xtr[:256][part], ytr[:256][part]
    res["mlp"] = {"params": model.params.size, "bucket_bytes": MLP_BUCKET}
    res["mlp"].update(_step_split(comm, model.params, lambda: model.loss_and_grad(Xb, yb),
                                  reps * 3, _modes(MLP_BUCKET)))

    # a synthetic model of `big` parameters in LAYERS layers, the last one's gradient first
    names = [f"layer{i}" for i in range(LAYERS)]
    fp = fastopt.FlatParams({k: (big // LAYERS,) for k in names})
    g = np.random.default_rng(rank).standard_normal(big).astype(np.float32)

    def backward():
        for k in reversed(names):
            np.copyto(fp.grads[k], g[fp.slice(k)])
            fp.grads_ready(k)

    res["synthetic"] = {"params": big, "bucket_bytes": SYNTH_BUCKET}
    res["synthetic"].update(_step_split(comm, fp, backward, reps, _modes(SYNTH_BUCKET)))
    del fp, g
    opt_one = res["synthetic"]["plain"]["optimizer"]
    res["model"] = {"n_params": big, "opt_seconds": opt_one, "alpha": NET_ALPHA,
                    "rows": scaling_model(big, opt_one)}
    return res


def _load():
    """The 1-minute load average (None where the OS has none): the figures depend on it."""
    import os

    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _ms(s):
    return f"{s * 1e3:9.3f}"


def format_distributed(res):
    """The report ``fastopt bench --distributed`` prints."""
    P = res["ranks"]
    lines = [f"fastopt {res['version']} bench --distributed: {P} ranks, {res['threads']} "
             f"thread(s) per rank, median of {res['reps']}"
             + (f", load average {res['load']:.1f}" if res.get("load") is not None else ""),
             f"cpu: {res.get('cpu', 'unknown')}",
             f"node memory copy (np.copyto, rank 0 alone): {res['copy_gbs']:.1f} GB/s",
             f"{'in-place MPI_Allreduce, float32':44} {'time':>9}  {'GB/s':>6}  {'bus GB/s':>8}  "
             f"{'/ copy':>6}"]
    for a in res["allreduce"]:
        lines.append(f"{'allreduce ' + _size(a['n']):44} {_ms(a['time'])} ms {a['algbw']:6.1f}  "
                     f"{a['busbw']:8.1f}  {a['of_copy']:6.2f}")
    lines.append(f"the {_size(res['allreduce'][-1]['n'])} float32 allreduce, several ways, "
                 "each against a copy of its bytes on every rank at once, alternating")
    lines.append(f"  {'':48} {'time':>9}     {'copy':>9}     {'copy / time':>11}")
    for name, t, tc, ratio in res["ways"]:
        lines.append(f"  {name:48} {_ms(t)} ms  {_ms(tc)} ms  {ratio:11.2f}")
    lines.append(f"allreduce latency (8 bytes): alpha = {res['alpha'] * 1e6:.1f} us")
    lines.append("")
    lines.append(f"{'data-parallel step (Adam)':44} {'compute':>9} {'communication':>14} "
                 f"{'optimizer':>10} {'step':>9} {'CPU':>9}  state per rank")
    for key, label in (("mlp", "MLP 64-256-256-10, batch 256"),
                       ("synthetic", f"synthetic {_size(res['synthetic']['params'])} params, "
                                     f"{LAYERS} layers")):
        lines.append(f"{label} (overlap buckets of {_size(res[key]['bucket_bytes'])}B)")
        for mode, name, _ in MODES:
            if mode not in res[key]:
                continue
            r = res[key][mode]
            lines.append(f"  {name:42} {_ms(r['compute'])} {_ms(r['communication']):>14} "
                         f"{_ms(r['optimizer']):>10} {_ms(r['step'])} {_ms(r['cpu'])}  "
                         f"{r['state_bytes'] / 1e6:8.2f} MB")
        r = {m: res[key][m]["step"] for m, _, _ in MODES if m in res[key]}
        lines.append(f"  overlapped step / sequential step: {r['overlap'] / r['plain']:.2f} "
                     f"(DataParallel(overlap=True), transport {res[key]['transport']}, against "
                     f"MPI_Allreduce); MPI_Iallreduce against MPI_Allreduce: "
                     f"{r['overlap_mpi'] / r['plain']:.2f}"
                     + (f"; shared window overlapped / sequential: "
                        f"{r['window'] / r['window_seq']:.2f}" if "window" in r else "")
                     + (f"; ZeRO-1 overlapped / ZeRO-1: {r['zero1_overlap'] / r['zero1']:.2f}, "
                        f"/ deterministic ZeRO-1 (the same exchange, blocking): "
                        f"{r['zero1_overlap'] / r['zero1_det']:.2f}"
                        if "zero1_overlap" in r else ""))
    lines.append("(ms per step, medians, the slowest rank's; communication: the time step() "
                 "waits for it, after the backward pass; CPU: the process's CPU time per step, "
                 "spinning in MPI waits included)")
    m = res["model"]
    lines.append("")
    lines.append(f"alpha-beta model, {_size(m['n_params'])} float32 parameters, Adam: step = "
                 f"2(M-1)*alpha + 2(M-1)/M * bytes/link + optimizer (ZeRO-1: optimizer/M); "
                 f"alpha = {m['alpha'] * 1e6:.0f} us, optimizer {m['opt_seconds'] * 1e3:.2f} ms "
                 "(measured above)")
    head = f"{'machines':>8}" + "".join(f"  {f'{l} Gb/s plain':>15} {'bf16':>8} {'ZeRO-1':>8}"
                                         for l in LINKS_GBIT)
    lines.append(head + "   state/rank plain -> ZeRO-1")
    rows = m["rows"]
    for mach in MACHINES:
        sel = [r for r in rows if r[0] == mach]
        line = f"{mach:>8}" + "".join(f"  {r[2] * 1e3:12.1f} ms {r[6] * 1e3:5.1f} ms "
                                      f"{r[3] * 1e3:5.1f} ms" for r in sel)
        line += f"   {sel[0][4] / 1e6:.0f} MB -> {sel[0][5] / 1e6:.1f} MB"
        lines.append(line)
    return "\n".join(lines)


def _size(n):
    for unit, div in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)
