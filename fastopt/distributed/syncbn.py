"""Synchronized batch norm: a batch split over MPI ranks, normalized with the whole batch's statistics.

With plain data parallelism each rank's :class:`~fastopt.nn.BatchNorm` normalizes with the
statistics of its own part of the global batch, so P ranks train another model than one
process on the same batches.  Synchronized, the layers compute what one process computes
with the whole batch, at the cost of two small collectives per layer and step:

* **forward**: each rank computes its part's count ``n_r``, mean and biased variance per
  channel with the fused kernel (double, shifted: accurate for data far from zero), and
  one ``MPI_Allgather`` of ``(n_r, mean_r, M2_r = n_r var_r)`` (2C + 3 doubles per rank)
  gives every rank all of them; every rank merges them in rank order (Chan, Golub and
  LeVeque's pairwise update), so every rank gets the same bits, run after run.  Sums of
  ``x`` and ``x**2`` would need one common shift on every rank (another collective) or lose
  the variance to cancellation when the mean is large against the spread; the merge does
  not cancel, and its result agrees with one process's (also double) to about 1e-15
  relative, far below float32's rounding of the mean and ``1/sqrt(var + eps)``.
  ``running_var`` is updated with the unbiased variance of the whole count.
* **backward**: the two sums :math:`\\sum dy` and :math:`\\sum dy\\,(x - \\mu)` (the mean is
  the whole batch's, the same on every rank, so the parts' sums add up), each rank's weighted
  by its weight in the gradient sum (default ``n_r / n``), one ``MPI_Allreduce`` (2C + 4
  doubles); with ``deterministic=True`` an ``MPI_Allgather`` and a sum in rank order
  ``((s_0 + s_1) + s_2) + ...``, as :class:`DataParallel`'s deterministic mode, so the bits
  do not depend on the MPI library's reduction algorithm.  Then the same fused ``dx`` pass.

Every message carries a 16-bit signature of the call (layer, phase, shape after N, dtype,
eps, momentum, and a call counter) and a refusal flag: a rank whose input is refused
(wrong shape, dtype...) still takes part, and every rank raises :class:`DistributedError`
naming it; ranks whose calls differ (another order, a skipped call, another shape) raise it
too.  A layer's first call checks (one small allgather) that every rank has it with the same
width and dtype.  Messages are padded to the widest layer seen, so every call has the same
size.  All collectives run on a duplicate of the communicator under a :class:`Watchdog`.
"""

import functools
import time
import zlib

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked, checked, fixed
from ..nn.layers import BatchNorm, BatchNormSync, merge_moments
from ._mpi import require_mpi, world
from . import errors as _errors
from .errors import DistributedError, Watchdog

__all__ = ["SyncStats", "SyncBatchNorm", "sync_batchnorm"]


def _timeout(timeout):
    if timeout is None:
        return None
    return _check.positive("timeout", timeout)


class SyncStats(Checked, BatchNormSync):
    """The synchronization of :class:`~fastopt.nn.BatchNorm` layers over MPI ranks.

    Give it to layers as their ``sync`` (``bn.sync = stats``, :class:`SyncBatchNorm`,
    :func:`sync_batchnorm`); one object serves any number of layers.  Building it is
    collective (it duplicates ``comm``), and so is every training forward and backward pass of
    a layer using it: every rank calls its layers in the same order.  See the module
    docstring for what crosses the network.

    Parameters
    ----------
    comm : mpi4py intracommunicator, default ``MPI.COMM_WORLD``
    deterministic : bool, default False
        Sum the backward sums in rank order (the same bits run after run; the statistics
        always are).
    timeout : float or None, default None
        Abort the job when a collective waits longer than this many seconds (a rank died,
        skipped a layer, or is stuck): a message and a non-zero exit instead of a hang.
    abort_on_exception : bool, default True
        Install :func:`~fastopt.distributed.abort_on_exception`.

    Attributes
    ----------
    rank, size : int
    seconds : float
        Time spent in this object's collectives so far (may be reset to a number >= 0).
    """

    comm = fixed("comm", "The communicator (the object works on a duplicate of it).",
                 "build another SyncStats")
    deterministic = fixed("deterministic", "Backward sums in rank order.", "build another SyncStats")
    timeout = fixed("timeout", "Seconds a collective may wait, or None.", "build another SyncStats")
    rank = fixed("rank", "This rank.", "it is the communicator's")
    size = fixed("size", "The number of ranks.", "it is the communicator's")
    seconds = checked("seconds", functools.partial(_check.at_least, lo=0.0),
                      "Time spent in this object's collectives so far (s, >= 0).")
    ordered = fixed("ordered", "False: the statistics are reduced per rank, not per "
                    "micro-batch.", "it is what this synchronization does")
    _ordered = False

    def __init__(self, comm=None, *, deterministic=False, timeout=None, abort_on_exception=True):
        require_mpi()
        comm = world(comm)
        self._deterministic = _check.flag("deterministic", deterministic)
        self._timeout = _timeout(timeout)
        abort = _check.flag("abort_on_exception", abort_on_exception)
        self._comm = comm
        self._rank, self._size = comm.Get_rank(), comm.Get_size()
        if abort:
            _errors.abort_on_exception(comm)
        self._watch = Watchdog(comm, self._timeout)
        with self._watch.guard(comm).during("SyncStats()") as guarded:
            # its own communicator: these collectives never interleave with DataParallel's
            self._gcomm = self._watch.guard(guarded.Dup().unguarded)
        self._mpi = require_mpi()
        self._calls = 0
        self._widths = {}         # layer name -> (C, dtype), agreed by every rank
        self._width = 0           # channels of every message: the widest layer so far
        self.seconds = 0.0

    def __repr__(self):
        det = ", deterministic" if self.deterministic else ""
        return f"SyncStats(rank {self.rank} of {self.size}{det})"

    # ------------------------------------------------------------ the calls
    def register(self, layers):
        """Check (collectively) that every rank has ``layers`` (BatchNorm) with the same names,
        widths and dtypes; raises DistributedError on every rank otherwise.

        :func:`sync_batchnorm` and :class:`SyncBatchNorm` do it; a layer given this object
        as its ``sync`` otherwise is registered at its first call.  (Registered layers make
        every call the same size, so ranks that call them in another order get a
        DistributedError; a first call made where another rank calls a registered layer is a
        collective mismatch, which MPI reports as an error on a rank: the job then aborts.)
        """
        layers = list(layers)
        for i, bn in enumerate(layers):
            if not isinstance(bn, BatchNorm):
                raise TypeError(f"layers[{i}] must be a BatchNorm, got {type(bn).__name__}")
        keys = [(bn.name, bn.num_features, str(bn.gamma.dtype)) for bn in layers]
        with self._gcomm.during("SyncStats.register"):
            everyone = self._gcomm.allgather(keys)
        differ = [(r, k) for r, k in enumerate(everyone) if k != keys]
        if differ:
            def show(ks):
                return ", ".join(f"{k[0]} with C = {k[1]}, {k[2]}" for k in ks) or "none"
            raise DistributedError(
                "synchronized batch norm: the ranks' layers differ (names, widths or dtypes, "
                "or their order): " + "; ".join(f"rank {r}: {show(k)}"
                                                 for r, k in enumerate(everyone)))
        for bn, key in zip(layers, keys):
            self._widths[bn.name] = key[1:]
            self._width = max(self._width, bn.num_features)

    def _register(self, layer, signature):
        """At a layer's first call: every rank has it, with the same width and dtype."""
        if self._widths.get(layer.name) != (layer.num_features, str(layer.gamma.dtype)):
            with self._gcomm.during(f"{signature}: the layer's first call"):
                self.register([layer])

    def _signature_hash(self, signature):
        """16 bits of the call's signature and number (exact in double, squared and summed)."""
        return float(zlib.crc32(f"{signature}#{self._calls}".encode()) & 0xFFFF)

    def _explain(self, signature, error):
        """Every rank: something is wrong (a refusal or differing calls); raise on every rank."""
        mine = None if error is None else f"{type(error).__name__}: {error}"
        with self._gcomm.during(f"{signature}: reporting a fault"):
            everyone = self._gcomm.allgather((f"{signature} call #{self._calls}", mine))
        self._calls += 1
        refused = [(r, m) for r, (_, m) in enumerate(everyone) if m is not None]
        if refused:
            text = (f"synchronized batch norm, {everyone[refused[0][0]][0]}: refused on "
                    + "; ".join(f"rank {r}: {m}" for r, m in refused))
        else:
            text = ("synchronized batch norm: the ranks' calls differ (called in another order, "
                    "a call skipped, or other shapes or hyperparameters): "
                    + "; ".join(f"rank {r}: {s}" for r, (s, _) in enumerate(everyone)))
        raise DistributedError(text) from error

    def _stats_message(self, signature, flag, n, mean, var):
        C, W = mean.size, self._width
        buf = np.zeros(3 + 2 * W)
        buf[0] = self._signature_hash(signature)
        buf[1] = flag
        buf[2] = n
        buf[3:3 + C] = mean
        buf[3 + W:3 + W + C] = var * n          # M2 of the part
        return buf

    def _gather_stats(self, signature, buf):
        out = np.empty((self.size, buf.size))
        t = time.perf_counter()
        with self._gcomm.during(f"{signature}: the statistics allgather"):
            self._gcomm.Allgather(buf, out)
        self.seconds += time.perf_counter() - t
        return out

    def stats(self, layer, signature, n, mean, var):
        """The whole batch's ``(n, mean, var)`` (biased) from every rank's part (collective)."""
        self._register(layer, signature)
        parts = self._gather_stats(signature, self._stats_message(signature, 0.0, n, mean, var))
        if parts[:, 1].any() or (parts[:, 0] != parts[0, 0]).any():
            self._explain(signature, None)
        self._calls += 1
        C, W = layer.num_features, self._width
        # rank order: the same bits on every rank
        return merge_moments(((row[2], row[3:3 + C], row[3 + W:3 + W + C]) for row in parts), C)

    def sums(self, layer, signature, n, sum_dy, sum_dy_xmu, weight):
        """The whole batch's count and weighted backward sums over ``weight`` (collective)."""
        self._register(layer, signature)
        C, W = layer.num_features, self._width
        buf = np.zeros(4 + 2 * W)
        h = self._signature_hash(signature)
        buf[0], buf[1], buf[3] = h, h * h, n
        np.multiply(sum_dy, weight, out=buf[4:4 + C])
        np.multiply(sum_dy_xmu, weight, out=buf[4 + W:4 + W + C])
        total = self._sum(signature, buf)
        # every signature equal <=> P * sum(h^2) == sum(h)^2 (exact: h < 2^16)
        if total[2] != 0 or self.size * total[1] != total[0] * total[0]:
            self._explain(signature, None)
        self._calls += 1
        s1, s2 = total[4:4 + C], total[4 + W:4 + W + C]
        if weight > 0:
            s1, s2 = s1 / weight, s2 / weight
        return int(total[3]), s1, s2

    def _sum(self, signature, buf):
        """``buf`` summed over the ranks: one allreduce, or (deterministic) in rank order."""
        t = time.perf_counter()
        with self._gcomm.during(f"{signature}: the backward-sums reduction"):
            if self.deterministic:
                parts = np.empty((self.size, buf.size))
                self._gcomm.Allgather(buf, parts)
                total = parts[0].copy()
                for row in parts[1:]:
                    total += row
            else:
                total = buf
                self._gcomm.Allreduce(self._mpi.IN_PLACE, total, op=self._mpi.SUM)
        self.seconds += time.perf_counter() - t
        return total

    def refuse(self, layer, phase, signature, error):
        """This rank refused its input: take part in the others' collective, raise everywhere."""
        self._register(layer, signature)
        W = self._width
        if phase == "forward":
            self._gather_stats(signature, self._stats_message(signature, 1.0, 0, np.zeros(0),
                                                              np.zeros(0)))
        else:
            buf = np.zeros(4 + 2 * W)
            buf[2] = 1.0
            self._sum(signature, buf)
        self._explain(signature, error)


class SyncBatchNorm(BatchNorm):
    """A :class:`~fastopt.nn.BatchNorm` synchronized over MPI ranks (collective to build).

    ``SyncBatchNorm(C, comm=..., **options)`` is ``BatchNorm(C, sync=SyncStats(comm, ...),
    **options)``; pass ``sync=`` to share one :class:`SyncStats` between layers (then
    ``comm``, ``deterministic`` and ``timeout`` are its own).

    Parameters
    ----------
    num_features : int
    comm, deterministic, timeout
        :class:`SyncStats`'s.
    sync : SyncStats, optional
    **options
        :class:`~fastopt.nn.BatchNorm`'s (``eps``, ``momentum``, ``params``, ``name``,
        ``impl``).
    """

    def __init__(self, num_features, *, comm=None, deterministic=False, timeout=None,
                 sync=None, **options):
        if sync is None:
            sync = SyncStats(comm, deterministic=deterministic, timeout=timeout)
        elif comm is not None or deterministic is not False or timeout is not None:
            raise TypeError("pass comm, deterministic and timeout to the SyncStats given as "
                            "sync, not to SyncBatchNorm")
        super().__init__(num_features, sync=sync, **options)
        sync.register([self])


def sync_batchnorm(layers, comm=None, *, deterministic=False, timeout=None):
    """Synchronize batch-norm layers over MPI ranks: each gets one new :class:`SyncStats`.

    Parameters
    ----------
    layers : a model with a ``bns`` list (:class:`fastopt.nn.models.MLP`) or an iterable of
        :class:`~fastopt.nn.BatchNorm`
    comm, deterministic, timeout
        :class:`SyncStats`'s.

    Returns
    -------
    SyncStats
        The layers' ``sync`` (collective to build: every rank calls this).
    """
    bns = getattr(layers, "bns", layers)
    try:
        bns = list(bns)
    except TypeError:
        raise TypeError(f"layers must be a model with .bns or an iterable of BatchNorm, got "
                        f"{type(layers).__name__}") from None
    for i, bn in enumerate(bns):
        if not isinstance(bn, BatchNorm):
            raise TypeError(f"layers[{i}] must be a BatchNorm, got {type(bn).__name__}")
    stats = SyncStats(comm, deterministic=deterministic, timeout=timeout)
    stats.register(bns)
    for bn in bns:
        bn.sync = stats
    return stats
