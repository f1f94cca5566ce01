"""Bucketed, non-blocking gradient reduction: overlap with the backward pass, and a bfloat16 wire.

:class:`~fastopt.distributed.DataParallel` uses a :class:`BucketReducer` per dtype group when
``overlap=True`` or ``wire_dtype="bfloat16"``.  How it works:

* **Buckets.**  The flat gradient buffer is cut into buckets of ``bucket_bytes`` from its
  *end* (a backward pass produces the last layers' gradients first), numbered in that
  order.  Bucket ``k`` is *complete* when every parameter that overlaps it was marked ready
  (:meth:`BucketReducer.ready`).  Buckets are **launched in their fixed order** (bucket ``k``
  only after buckets ``0 .. k-1``), so every rank issues the same collectives in the same
  order whatever order its layers finish in: MPI requires that of collectives on one
  communicator.  :meth:`BucketReducer.finish` (from ``DataParallel.step``) launches what was
  not launched, in order, and waits for everything.
* **Buckets of whole layers.**  Fixed-size buckets cut layers: the MLP's last bucket held its
  output layer and the end of the layer before, so nothing could start until that layer was
  done.  After the first step, if the :meth:`~BucketReducer.ready` calls (one per layer from
  ``FlatParams.grads_ready(...)``) covered the buffer from its end down to its start, every
  rank that saw the same layers (one allgather of the cuts' CRC-32, in the first
  :meth:`~BucketReducer.finish`) regroups the buckets as runs of consecutive layers, each
  closed at the first layer end that brings it to ``bucket_bytes`` or more (a layer larger
  than that is one bucket).  Only the boundaries move: each element's arithmetic, hence the
  bits, stay the same.  In the allreduce mode each bucket keeps one persistent
  ``MPI_Allreduce_init`` request (MPI-4), started each step: no new schedule per step.
* **Progress.**  Open MPI progresses a non-blocking collective only inside MPI calls; each
  ``ready()`` tests the pending requests (``MPI_Testall``; one ``MPI_Testsome`` in the window
  mode), so the exchange advances between layers while the backward pass computes.
  ``trace`` (a list, None by default) records ``(time, event, where)`` for each ``ready``,
  launch, test and pipeline stage: the timelines behind the figures in the performance notes.
* **Two ways to reduce a bucket.**

  - ``"allreduce"`` (DataParallel's ``transport="mpi"``, and ``"auto"`` across nodes):
    ``MPI_Iallreduce`` in place, then ``/ P`` unless
    weighted.  With 2 ranks the last bucket (complete only when the backward pass is over:
    nothing is left to hide it behind), and any bucket still unlaunched when ``step()``
    comes, is reduced there with the blocking ``MPI_Allreduce``: Open MPI's libnbc, which
    runs the non-blocking collectives, picks a slower algorithm on one node (66 KB: 83
    against 45 us; 270 KB: 302 against 162 us).  With 2 ranks the result is bit-identical
    to the blocking ``MPI_Allreduce`` (a sum of two terms does not depend on the order);
    with 3 and more, the MPI library may pick another summation order for a non-blocking
    or a smaller collective, so results agree within float32 rounding
    (``|a - b| <= 2 (P-1) eps * sum_r |g_r|`` per element).
  - ``"exchange"`` (``deterministic=True``, and every ``wire_dtype="bfloat16"`` run): an
    ``MPI_Ialltoallv`` sends each rank the pieces of the bucket that fall in its slice
    (:func:`~fastopt.distributed.sharding.shard_bounds`); the owner sums them **in rank
    order** ``((g0 + g1) + g2) + ...`` (and ``/ P`` unless weighted), and an
    ``MPI_Iallgatherv`` returns the sums to every rank.  Elementwise the same arithmetic as
    the blocking deterministic path: the same bits, run after run, overlapped or not.

* **bfloat16 on the wire** (``wire_dtype="bfloat16"``, float32 gradients).  Each rank rounds
  its (weighted) gradient to bfloat16, **to nearest, ties to even** (NaN stays NaN, overflow
  becomes infinity), as :func:`fastopt.kernels._formats.float32_to_bf16` specifies; the owner
  widens the P pieces to float32 exactly and sums them in float32 in rank order, divides by
  P unless weighted, and rounds the result to bfloat16 once more for the all-gather; every
  rank (the owner too) widens the same bits, so the parameters stay bit-identical on every
  rank.  Both halves of the exchange carry 2 bytes per element: **half the bytes** of a
  float32 ring allreduce (``2 (P-1)/P * n * 2`` per rank instead of ``* 4``).

  What it does to results: bfloat16 keeps 8 significant bits (unit roundoff ``u = 2**-8``).
  Per element, with ``g_r`` the (weighted) gradients and ``S = sum_r g_r`` (``/ P`` when
  averaging, on both sides)::

      |result - S| <= u * sum_r |g_r|  +  P * 2**-24 * sum_r |g_r|  +  u * |S'|

  (``S'`` the sum before its rounding), i.e. about ``2 * 2**-8`` relative for gradients of
  one sign, more where they cancel.  The rounding is unbiased on average but not per step:
  with ``error_feedback=True`` each rank keeps its packing residual ``e = v - bf16(v)``
  (``v = g + e_previous``) in float32 and adds it to the next step's gradient, so the rank's
  rounding errors do not accumulate over steps (the sum's second rounding is not fed back).
"""

import time
import zlib

import numpy as np

from ..kernels._attrs import Checked, fixed
from .sharding import divide_by_ranks, exchange_counts, pieces, shard_bounds, sum_in_rank_order

__all__ = ["BucketReducer", "pack_bf16", "unpack_bf16", "WIRE_DTYPES", "DEFAULT_BUCKET_BYTES"]

#: The gradient encodings on the wire DataParallel offers
WIRE_DTYPES = ("native", "bfloat16")

#: Default bucket size of the overlapped path (bytes of the gradient buffer per collective)
DEFAULT_BUCKET_BYTES = 1 << 20


def pack_bf16(x, out, tmp):
    """float32 ``x`` -> bfloat16 bits in ``out`` (uint16), round to nearest, ties to even.

    ``tmp``: a uint32 scratch array of ``x``'s size.  No allocation unless ``x`` has a NaN
    (NaN stays a quiet NaN of the same sign; the plain rounding could carry a NaN's low
    mantissa into the exponent).  Equals :func:`fastopt.kernels._formats.float32_to_bf16`.
    """
    u = x.view(np.uint32)
    np.right_shift(u, 16, out=tmp)
    np.bitwise_and(tmp, 1, out=tmp)
    np.add(tmp, 0x7FFF, out=tmp)
    np.add(tmp, u, out=tmp)
    np.right_shift(tmp, 16, out=tmp)
    np.copyto(out, tmp, casting="unsafe")
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(x, dtype=np.float32)        # (one pass: NaN if x has one)
    if np.isnan(total):
        nan = np.isnan(x)
        if nan.any():
            out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return out


def unpack_bf16(b, out):
    """bfloat16 bits ``b`` (uint16) -> float32 values in ``out``, exactly."""
    u = out.view(np.uint32)
    np.copyto(u, b, casting="unsafe")
    np.left_shift(u, 16, out=u)
    return out


class _Bucket:
    __slots__ = ("lo", "hi", "waiting", "counts", "displs", "mine", "recv", "launched", "request")

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi
        self.waiting = 0          # parameters overlapping it not yet ready this step
        self.launched = False
        self.request = None       # allreduce mode: its persistent MPI_Allreduce_init request


class BucketReducer(Checked):
    """The non-blocking, bucketed reduction of one flat gradient buffer (see the module docstring).

    Parameters
    ----------
    comm : GuardedComm
        The DataParallel's communicator (every call under its watchdog).
    watchdog : Watchdog
        Guards the waits (``MPI_Waitall`` is not a communicator call).
    gbuf : ndarray
        The flat gradient buffer (float32 or float64); reduced in place.
    offsets : list of int
        Where each parameter starts in ``gbuf`` (``len(params) + 1`` entries, the last ``n``).
    bucket_bytes : int
        Bytes of ``gbuf`` per bucket (at least one element).
    mode : {"allreduce", "exchange", "window"}
        "window": the ranks share one node; each bucket is copied (scaled, if weighted) into
        an MPI-3 shared-memory window when it is complete and goes into the window's
        :class:`~fastopt.distributed.shm.Pipeline`: as soon as every rank has posted it, each
        rank sums its share of the bucket in rank order straight from the others' windows,
        and as soon as every share is summed, copies the bucket back into ``gbuf``, all
        tested at each :meth:`ready`; :meth:`finish` waits for the rest.  The deterministic
        mode's bits.
    wire_dtype : {"native", "bfloat16"}
        "bfloat16" needs float32 and the exchange mode.
    error_feedback : bool
        Keep the bfloat16 packing residual and add it next step.
    align : int
        The slices' granularity (exchange mode), as DataParallel's.
    bounds : list of (int, int), optional
        Exchange mode: each rank's slice (default :func:`shard_bounds` with ``align``).
    scatter_into : ndarray, optional
        Exchange mode, ZeRO-1: this rank's slice of the reduced gradient goes here (the owner's
        rank-order sums, ``/ P`` unless weighted), and nothing is gathered back: a
        reduce-scatter, bucket by bucket, with the arithmetic of DataParallel's ZeRO-1
        reduce-scatter (the same bits).  Each rank's own piece is read in place (nothing is
        sent to itself).
    """

    # what the construction fixed (read-only: a new value would not re-cut the buckets or
    # re-post the persistent requests); every other public attribute is declared below
    _why = "it is fixed at construction (build a new BucketReducer)"
    comm = fixed("comm", "The guarded communicator.", _why)
    watchdog = fixed("watchdog", "The watchdog over the waits.", _why)
    rank = fixed("rank", "This rank in ``comm``.", _why)
    size = fixed("size", "The ranks in ``comm``.", _why)
    gbuf = fixed("gbuf", "The flat gradient buffer, reduced in place.", _why)
    n = fixed("n", "Elements of ``gbuf``.", _why)
    mode = fixed("mode", "``'allreduce'``, ``'exchange'`` or ``'window'``.", _why)
    wire = fixed("wire", "The wire encoding, ``'native'`` or ``'bfloat16'``.", _why)
    mpitype = fixed("mpitype", "The MPI datatype of ``gbuf``.", _why)
    offsets = fixed("offsets", "Where each parameter starts in ``gbuf``.", _why)
    per = fixed("per", "Elements per bucket.", _why)
    bounds = fixed("bounds", "Each rank's slice (exchange mode).", _why)
    scatter = fixed("scatter", "ZeRO-1's output slice, or None.", _why, "_scatter_into")
    del _why
    # state the reducer updates as it runs
    buckets: list
    shared: object
    packed: object
    residual: object
    started: bool
    trace: object

    def __init__(self, comm, watchdog, gbuf, offsets, *, bucket_bytes, mode, wire_dtype="native",
                 error_feedback=False, align=1, bounds=None, scatter_into=None):
        from ._mpi import require_mpi

        self._mpi = mpi = require_mpi()
        self._comm, self._watchdog = comm, watchdog
        self._rank, self._size = comm.Get_rank(), comm.Get_size()
        self._gbuf = gbuf
        self._n = n = gbuf.size
        self._mode, self._wire = mode, wire_dtype
        self._mpitype = mpi.FLOAT if gbuf.dtype == np.float32 else mpi.DOUBLE
        self._offsets = list(offsets)
        self._per = max(1, int(bucket_bytes) // gbuf.itemsize)
        self._persistent = hasattr(mpi.Comm, "Allreduce_init") and mpi.Get_version() >= (4, 0)
        # Two ranks, allreduce mode: the buckets launched in step() (the last one always:
        # it is complete only when the backward pass is over, with nothing left to hide it
        # behind) use the blocking MPI_Allreduce, about twice as fast as libnbc's
        # MPI_Iallreduce on one node (Open MPI 5: 45 against 83 us at 66 KB, 162 against
        # 302 at 270 KB).  With two ranks every summation order gives the same bits; with
        # more, the blocking and non-blocking algorithms may add in different orders, so
        # every bucket stays non-blocking (as it was)
        self._blocking = mode == "allreduce" and self.size == 2
        # (ZeRO-1's exchange keeps every bucket non-blocking: a blocking last bucket followed
        # by the consistency check's MPI_Iallreduce made two synchronizations of one, and the
        # 16M step slower: 142 against 124 ms, median, 2 loaded vCPUs, 2026-12-06)
        self._bounds = shard_bounds(n, self.size, align) if bounds is None else list(bounds)
        self._scatter_into = scatter_into
        if scatter_into is not None:
            lo, hi = self.bounds[self.rank]
            if mode != "exchange" or wire_dtype != "native" or scatter_into.shape != (hi - lo,):
                raise ValueError("scatter_into needs the exchange mode, the native wire and "
                                 f"{hi - lo} elements (this rank's slice)")
        self._cut(list(range(n, 0, -self.per)) + [0])
        self.shared = None
        if mode == "window":
            from .shm import SharedAllreduce

            with watchdog("DataParallel(): the shared-memory window"):
                self.shared = SharedAllreduce(comm.unguarded, n, gbuf.dtype)
        if wire_dtype == "bfloat16":
            self.packed = np.empty(n, np.uint16)          # this rank's bits, then the sums'
            self._tmp = np.empty(n, np.uint32)
        self.residual = np.zeros(n, np.float32) if error_feedback else None
        self._requests = []
        self._pipe = None          # window mode: this step's Pipeline
        self.trace = None          # a list: (time, event, where) per stage, for measurements
        self._weight = None
        self._ready = [False] * (len(self.offsets) - 1)
        self._next = 0             # the next bucket to launch
        self.started = False       # any parameter marked ready since the last finish
        self._seen = []            # the first step: the ready() calls' parameters, in order
        self._reset()

    def _cut(self, cuts):
        """The buckets between the descending element offsets ``cuts`` (``n`` first, 0 last)."""
        for b in getattr(self, "buckets", ()):
            if b.request is not None:         # (inactive: every step ends with a wait)
                b.request.Free()
        self.buckets = [_Bucket(lo, hi) for hi, lo in zip(cuts, cuts[1:]) if lo < hi]
        # which buckets each parameter overlaps (a parameter of size 0 overlaps none)
        self._param_buckets = []
        for p in range(len(self.offsets) - 1):
            o0, o1 = self.offsets[p], self.offsets[p + 1]
            self._param_buckets.append([k for k, b in enumerate(self.buckets)
                                        if o0 < b.hi and b.lo < o1])
        if self.mode == "exchange":
            dt = np.uint16 if self.wire == "bfloat16" else self.gbuf.dtype
            for b in self.buckets:
                b.counts, b.displs = pieces(b.lo, b.hi, self.bounds)
                b.mine = b.counts[self.rank]
                # (ZeRO-1: a row per other rank; this rank's piece is read in place)
                rows = self.size - (self.scatter is not None)
                b.recv = np.empty((rows, b.mine), dt)
            if self.wire == "bfloat16":
                widest = max((b.mine for b in self.buckets), default=0)
                self._sum = np.empty(widest, np.float32)
                self._wide = np.empty(widest, np.float32)

    # ------------------------------------------------------------ one step
    def _reset(self):
        for b in self.buckets:
            b.waiting = 0
            b.launched = False
        for ks in self._param_buckets:
            for k in ks:
                self.buckets[k].waiting += 1
        self._ready = [False] * len(self._ready)
        self._next = 0
        self._requests = []
        self.started = False

    def _mark(self, event, where):
        if self.trace is not None:
            self.trace.append((time.perf_counter(), event, where))

    def begin(self, weight):
        """The weight the coming buckets are scaled by (None: the mean), fixed until
        :meth:`finish`."""
        self._weight = weight
        self.started = True

    @property
    def weight(self):
        return self._weight

    def is_ready(self, p):
        return self._ready[p]

    def ready(self, *ps):
        """Parameters ``ps`` (indices into ``offsets``) have their gradients in ``gbuf``: launch
        the buckets that are now complete, in order, and advance the pending ones (one test
        for all of ``ps``: a layer's parameters are handed over together)."""
        ready, buckets = self._ready, self.buckets
        if self._seen is not None:
            self._seen.append(ps)
        for p in ps:
            ready[p] = True
            self._mark("ready", p)
            for k in self._param_buckets[p]:
                buckets[k].waiting -= 1
        self.started = True
        self._launch(until_complete=True)
        self._progress()

    def _progress(self):
        """Advance what is in flight (never waits)."""
        if self._pipe is not None:
            self._pipe.progress()
        elif self._requests:
            if self.trace is None:
                self._mpi.Request.Testall(self._requests)
            else:                     # (the same progress, and which buckets completed)
                t = time.perf_counter()
                done = sum(bool(r.Test()) for r in self._requests)
                self.trace.append((t, "test", (time.perf_counter() - t, done)))

    def _launch(self, until_complete, what=None):
        """Start the buckets in order: from ready() (``until_complete``) the complete ones,
        non-blocking, but for the allreduce mode's last; from step() (``what``: what it is
        doing, for the watchdog) every one left, the allreduce mode's blocking."""
        last = len(self.buckets) - 1
        while self._next <= last:
            b = self.buckets[self._next]
            if until_complete and (b.waiting > 0 or (self._next == last and self._blocking)):
                return        # (the last bucket is step()'s, blocking)
            self._start(b, what)
            self._next += 1
            if not until_complete and self._pipe is not None:
                self._pipe.progress()     # (each piece summed while it is in the cache)

    def _post(self, b, g):
        """Window mode: bucket ``b`` (``g``, this rank's gradient) into the shared window, and
        into the pipeline."""
        shared = self.shared
        if self._pipe is None:        # the first bucket of the step
            with self.watchdog("the gradient reduction (the previous step's readers of the "
                               "shared window)"):
                shared.acquire()
            self._pipe = shared.pipeline(self.gbuf, divide=self._weight is None and self.size > 1,
                                         trace=self.trace)
        w = shared.buffer[b.lo:b.hi]
        if self._weight is not None:
            np.multiply(g, self._weight, out=w)
        else:
            np.copyto(w, g)
        self._mark("launched", b.lo)
        self._pipe.post(b.lo, b.hi)

    def _start(self, b, what=None):
        mpi, comm = self._mpi, self.comm
        g = self.gbuf[b.lo:b.hi]
        if self._weight is not None and self.mode != "window":
            np.multiply(g, self._weight, out=g)
        if self._blocking and what is not None:
            # (from step(): nothing left to overlap with; see _blocking)
            with self.watchdog(what):
                comm.unguarded.Allreduce(mpi.IN_PLACE, [g, self.mpitype], op=mpi.SUM)
        elif self.mode == "allreduce":
            if b.request is None and self._persistent:
                # (MPI-4 persistent collective: set up once, in the same bucket order on
                # every rank; Start costs less than a new MPI_Iallreduce's schedule)
                b.request = comm.Allreduce_init(mpi.IN_PLACE, [g, self.mpitype], op=mpi.SUM)
            if b.request is not None:
                b.request.Start()
                self._requests.append(b.request)
            else:
                self._requests.append(comm.Iallreduce(mpi.IN_PLACE, [g, self.mpitype],
                                                      op=mpi.SUM))
        elif self.mode == "window":
            self._post(b, g)
            b.launched = True
            return
        elif self.scatter is not None:
            self._requests.append(comm.Ialltoallv(*self._exchange(b, g)))
        else:
            if self.wire == "bfloat16":
                if self.residual is not None:
                    e = self.residual[b.lo:b.hi]
                    np.add(g, e, out=g)            # v = g + e (g is this rank's: free to reuse)
                send = pack_bf16(g, self.packed[b.lo:b.hi], self._tmp[b.lo:b.hi])
                if self.residual is not None:     # e = v - bf16(v)
                    unpack_bf16(send, e)
                    np.subtract(g, e, out=e)
                mt = mpi.UINT16_T
            else:
                send, mt = g, self.mpitype
            P = self.size
            self._requests.append(comm.Ialltoallv(
                [send, (b.counts, b.displs), mt],
                [b.recv, ([b.mine] * P, [r * b.mine for r in range(P)]), mt]))
        b.launched = True
        self._mark("launched", b.lo)

    def _exchange(self, b, g):
        """ZeRO-1: the (send, receive) buffer specifications of bucket ``b``'s exchange
        (:func:`~fastopt.distributed.sharding.exchange_counts`)."""
        send, recv = exchange_counts(b.counts, b.displs, self.rank, b.mine)
        return [g, send, self.mpitype], [b.recv, recv, self.mpitype]

    def launch_all(self, what):
        """Launch the buckets not launched yet, in order (the allreduce mode's blocking):
        :meth:`finish` then only waits.  ``what``: for the watchdog's message."""
        self._launch(until_complete=False, what=what)

    def finish(self, what):
        """Launch the buckets not launched yet (in order) and wait for all: ``gbuf`` holds the
        reduced (and, unless weighted, averaged) gradient, identical on every rank."""
        self._mark("finish", None)
        self._launch(until_complete=False, what=what)
        with self.watchdog(what):
            self._mpi.Request.Waitall(self._requests)
        self._requests = []
        weighted = self._weight is not None
        if self.mode == "allreduce":
            if not weighted and self.size > 1:
                divide_by_ranks(self.gbuf, self.size)
        elif self.mode == "window":
            if self._pipe is not None:
                with self.watchdog(what):
                    self._pipe.drain()
                self.shared.release()
                self._pipe = None
        elif self.scatter is not None:
            self._scatter(weighted)
        else:
            self._gather(weighted, what)
        self._weight = None
        if self._seen is not None:
            self._relayout()
        self._reset()
        self._mark("finished", None)

    def _relayout(self):
        """After the first step: buckets made of whole layers, if every rank saw the same ones.

        A layer is the parameters of one :meth:`ready` call (a model's
        ``FlatParams.grads_ready(...)``).  When the first step's calls, in their order, cover
        ``gbuf`` from its end down to 0, each bucket becomes a run of consecutive layers,
        closed at the end of the first layer that brings it to ``bucket_bytes`` or more: a
        bucket is complete as soon as its last layer is, and no layer waits for the next
        one's gradients (the default buckets cut layers at fixed sizes).  One collective
        (an allgather of the cuts' CRC-32, every rank at its first ``finish``) makes every
        rank keep the default buckets unless all saw the same layers.  Only the buckets'
        boundaries change: the arithmetic of each element, hence the bits, do not.
        """
        seen, self._seen = self._seen, None
        cuts = _layer_cuts(seen, self.offsets, self.per) if seen else None
        crc = zlib.crc32(np.asarray(cuts, np.int64).tobytes()) if cuts else 0
        everyone = self.comm.allgather(crc)
        if crc and all(c == crc for c in everyone):
            self._cut(cuts)

    def _scatter(self, weighted):
        """Exchange mode, ZeRO-1: the owner's rank-order sums into ``scatter`` (no all-gather)."""
        lo = self.bounds[self.rank][0]
        for b in self.buckets:
            if b.mine:
                a = b.lo + b.displs[self.rank] - lo
                out = self.scatter[a:a + b.mine]
                own = self.gbuf[b.lo + b.displs[self.rank]:b.lo + b.displs[self.rank] + b.mine]
                sum_in_rank_order(out, own, b.recv, self.rank)
        if not weighted and self.size > 1:
            divide_by_ranks(self.scatter, self.size)

    def _gather(self, weighted, what):
        """Exchange mode: the owner's rank-order sums, then an all-gather of them."""
        mpi, comm = self._mpi, self.comm
        bf16 = self.wire == "bfloat16"
        buf, mt = (self.packed, mpi.UINT16_T) if bf16 else (self.gbuf, self.mpitype)
        for b in self.buckets:
            if b.mine:
                a = b.lo + b.displs[self.rank]
                if bf16:
                    s, w = self._sum[:b.mine], self._wide[:b.mine]
                    unpack_bf16(b.recv[0], s)
                    for r in range(1, self.size):
                        np.add(s, unpack_bf16(b.recv[r], w), out=s)
                    if not weighted and self.size > 1:
                        divide_by_ranks(s, self.size)
                    pack_bf16(s, buf[a:a + b.mine], self._tmp[:b.mine])
                else:
                    out = self.gbuf[a:a + b.mine]
                    np.copyto(out, b.recv[0])
                    for r in range(1, self.size):
                        np.add(out, b.recv[r], out=out)
                    if not weighted and self.size > 1:
                        divide_by_ranks(out, self.size)
            self._requests.append(comm.Iallgatherv(
                mpi.IN_PLACE, [buf[b.lo:b.hi], (b.counts, b.displs), mt]))
        with self.watchdog(what):
            mpi.Request.Waitall(self._requests)
        self._requests = []
        if bf16:
            unpack_bf16(self.packed, self.gbuf)

    @property
    def bytes_per_step(self):
        """Bytes this rank sends per step (a ring allreduce's count for the allreduce mode)."""
        P, item = self.size, (2 if self.wire == "bfloat16" else self.gbuf.itemsize)
        return int(2 * (P - 1) * self.n * item / P)


def _layer_cuts(layers, offsets, per):
    """Bucket boundaries (descending, ``n`` first, 0 last) made of whole ``layers`` (tuples of
    parameter indices into ``offsets``, in the order they were ready), each bucket closed at
    the first layer end that brings it to ``per`` elements or more; None when the layers, in
    that order, are not consecutive ranges from the buffer's end down to its start."""
    hi = offsets[-1]
    cuts, size = [hi], 0
    for layer in layers:
        lo = min(offsets[p] for p in layer)
        top = max(offsets[p + 1] for p in layer)
        if top != hi or sum(offsets[p + 1] - offsets[p] for p in layer) != top - lo:
            return None           # (not the next range down, or with a gap)
        size += top - lo
        hi = lo
        if size >= per:
            cuts.append(hi)
            size = 0
    if hi != 0:
        return None
    if cuts[-1] != 0:
        cuts.append(0)
    return cuts


