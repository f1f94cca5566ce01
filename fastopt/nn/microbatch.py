"""Micro-batches: a batch's gradient whose bits do not depend on how many processes share it.

Why
---
Data-parallel training sums per-process partial gradients; one process computes the same
sums in another order (one matrix product over the whole batch).  The two agree to float32
rounding, but an optimizer such as Adam (``eps=1e-8``) amplifies last-bit differences, and
after a few hundred steps the two runs are different models (measured on the digits: up to
0.8 points of held-out accuracy for one seed).  Ordered reduction removes the difference at
its source instead of bounding it.

The rule
--------
A global batch of ``n`` rows is cut into *micro-batches* of ``size`` rows (the last may be
shorter): micro-batch ``m`` holds rows ``[m*size, min((m+1)*size, n))``.  Then

* every matrix product of the forward and backward pass runs per micro-batch, so no row's
  result depends on how many rows a BLAS call held;
* every reduction over rows -- batch norm's statistics and backward sums, each parameter's
  gradient -- is computed per micro-batch in float64 (a weight gradient as
  ``a.T @ dz`` of the float32 values converted to float64: the products are exact), and the
  micro-batches' results are combined **in micro-batch order**:
  ``((g_0 + g_1) + g_2) + ...`` (statistics with Chan's pairwise update, in that order);
* the float64 sum is rounded to the parameters' dtype once.

``P`` processes take contiguous runs of micro-batches (process ``r`` the micro-batches
``[r*M//P, (r+1)*M//P)`` of the ``M``); they combine the small statistics by gathering every
micro-batch's and merging them in order on every process, and the gradients by a chain in
process order (process ``r`` receives the sum of the micro-batches before its own, adds its
own in order, and sends it on: :class:`fastopt.distributed.OrderedMicroBatches`).  Every
operation of the one-process run happens, on the same operands, in the same order: **the
same bits for any number of processes** (tested for 1, 2 and 3), not a tolerance.

Cost: the per-micro-batch products and the float64 accumulation (one float64 vector of the
parameters' size per local micro-batch); see the documentation's performance page for the
figures.  Without micro-batches (the default) none of this runs.
"""

import functools

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked, checked, fixed
from .layers import BatchNormSync, merge_moments

__all__ = ["MicroBatches", "MicroBatchNorm"]


class MicroBatches(Checked):
    """Micro-batches of a global batch and their ordered reductions, in one process.

    The reference: one process holds every micro-batch.  A subclass spreads them over
    processes (:class:`fastopt.distributed.OrderedMicroBatches`), overriding
    :meth:`gather` and :meth:`sum_in_order` and the attributes ``rank`` and ``nprocs``.

    Parameters
    ----------
    size : int
        Rows per micro-batch (>= 1).

    Attributes
    ----------
    size : int
        As given.
    rank, nprocs : int
        This process and the number of processes (0 and 1 here).
    bounds : list of (int, int)
        After :meth:`plan`: this process's micro-batches, as row ranges of its rows.
    n_total : int
        After :meth:`plan`: the rows of the global batch.
    batchnorm : MicroBatchNorm
        The batch-norm synchronization that reduces per micro-batch with this object.
    seconds : float
        Time spent communicating (0 here).

    Notes
    -----
    Only ``seconds`` may be set (a float >= 0, checked); the others are fixed: ``size``,
    ``rank`` and ``nprocs`` (every process must cut the batch alike: build another object),
    ``bounds`` and ``n_total`` (set by :meth:`plan`) and ``batchnorm``.
    """

    size = fixed("size", "Rows per micro-batch.", "build another MicroBatches")
    rank = fixed("rank", "This process (0 here).", "it is the communicator's")
    nprocs = fixed("nprocs", "The number of processes (1 here).", "it is the communicator's")
    bounds = fixed("bounds", "This process's micro-batches (row ranges of its rows).",
                   "plan(n) sets it")
    n_total = fixed("n_total", "The rows of the global batch.", "plan(n) sets it")
    batchnorm = fixed("batchnorm", "The batch-norm synchronization over these micro-batches.",
                      "it is this object's")
    seconds = checked("seconds", functools.partial(_check.at_least, lo=0.0),
                      "Time spent communicating, in seconds (>= 0).")
    _rank = 0
    _nprocs = 1

    def __init__(self, size):
        self._size = _check.integer("micro_batch", size, 1)
        self._bounds = []
        self._n_total = 0
        self.seconds = 0.0
        self._batchnorm = MicroBatchNorm(self)

    @property
    def holds_sum(self):
        """Whether :meth:`sum_in_order` leaves the sum on this process (the last one)."""
        return self.rank == self.nprocs - 1

    def plan(self, n):
        """Cut a global batch of ``n`` rows; return this process's rows (a ``slice``).

        Sets ``bounds`` (this process's micro-batches, relative to its rows) and
        ``n_total``.
        """
        n = _check.integer("n", n, 0)
        m = -(-n // self.size)                  # micro-batches
        first = self.rank * m // self.nprocs
        last = (self.rank + 1) * m // self.nprocs
        lo, hi = first * self.size, min(last * self.size, n)
        self._bounds = [(a - lo, min(a + self.size, n) - lo) for a in range(lo, hi, self.size)]
        self._n_total = n
        return slice(lo, hi)

    def gather(self, parts, signature):
        """Every micro-batch's row of ``parts``, in micro-batch order.

        ``parts`` (float64, ``(len(bounds), k)``) holds this process's micro-batches;
        ``signature`` (a str) says what the call is, the same on every process.  Here:
        ``parts`` itself.
        """
        return parts

    def refuse(self, signature, error):
        """This process refused its input (``error``) where the others call :meth:`gather`:
        nothing to tell here (the caller raises)."""

    def sum_in_order(self, parts, out):
        """``out[...] = ((0 + g_0) + g_1) + ...`` over every micro-batch in order (float64).

        ``parts``: this process's micro-batches' terms (``(len(bounds),) + out.shape``).
        Returns whether ``out`` holds the sum here (with processes, only the last one's does).
        """
        out[...] = 0.0
        for p in parts:
            out += p
        return True


def _as3(x):
    """(N, C, S) view of an (N, C, *spatial) array."""
    return x.reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64)))


def _per_micro(a, bounds, size):
    """``(len(bounds),) + a.shape[1:]``: each micro-batch's sum of the rows of ``a``, the rows
    added in order (``out[m] = ((a_0 + a_1) + a_2) + ...``: a reduction over a middle axis is
    elementwise additions, one row after another)."""
    k = len(bounds)
    out = np.empty((k,) + a.shape[1:])
    full = k if k and bounds[-1][1] - bounds[-1][0] == size else max(k - 1, 0)
    if full:
        a[:full * size].reshape((full, size) + a.shape[1:]).sum(axis=1, out=out[:full])
    if full < k:
        lo, hi = bounds[-1]
        a[lo:hi].sum(axis=0, out=out[full])
    return out


class MicroBatchNorm(Checked, BatchNormSync):
    """Batch norm over a global batch, reduced per micro-batch in their order.

    The ``sync`` of :class:`~fastopt.nn.BatchNorm` layers in a micro-batched pass
    (:meth:`fastopt.nn.models.MLP.loss_and_grad` with ``micro=``): the statistics are the
    micro-batches' counts, means and sums of squared deviations (float64, two passes), merged
    in micro-batch order (Chan, Golub and LeVeque); the backward sums are the micro-batches'
    ``sum dy`` and ``sum dy (x - mean)``, summed in micro-batch order; and the layer's
    ``dgamma``, ``dbeta`` become the whole batch's (the same on every process).
    """

    ordered = fixed("ordered", "True: BatchNorm passes its input (and ``dy``, ``mean``) to "
                    "stats() and sums(), and takes the returned sums as the whole batch's "
                    "parameter gradients.", "it is what this synchronization does")
    batches = fixed("batches", "The MicroBatches it reduces with.",
                    "it is its MicroBatches' (MicroBatches.batchnorm)")
    _ordered = True

    def __init__(self, batches):
        self._batches = batches

    def _gather(self, layer, signature, parts):
        return self.batches.gather(parts, f"{layer.name}: {signature}")

    def stats(self, layer, signature, n, mean, var, *, x):
        x3 = _as3(x)
        C, S = x3.shape[1], x3.shape[2]
        bounds, size = self.batches.bounds, self.batches.size
        rows = np.array([hi - lo for lo, hi in bounds], np.int64)
        v = x3.astype(np.float64)
        parts = np.empty((len(bounds), 2 * C + 1))
        parts[:, 0] = rows * S
        mu = _per_micro(v, bounds, size).sum(axis=2) / parts[:, :1]
        d = v - np.repeat(mu, rows, axis=0)[:, :, None]
        parts[:, 1:C + 1] = mu
        parts[:, C + 1:] = _per_micro(d * d, bounds, size).sum(axis=2)
        every = self._gather(layer, signature, parts)
        # in micro-batch order: the same bits for any number of processes
        return merge_moments(((row[0], row[1:C + 1], row[C + 1:]) for row in every), C)

    def sums(self, layer, signature, n, sum_dy, sum_dy_xmu, weight, *, dy, x, mean):
        x3, dy3 = _as3(x), _as3(dy)
        C, S = x3.shape[1], x3.shape[2]
        bounds, size = self.batches.bounds, self.batches.size
        d = dy3.astype(np.float64)
        xmu = x3.astype(np.float64) - mean.astype(np.float64)[None, :, None]
        parts = np.empty((len(bounds), 2 * C + 1))
        parts[:, 0] = [(hi - lo) * S for lo, hi in bounds]
        parts[:, 1:C + 1] = _per_micro(d, bounds, size).sum(axis=2)
        parts[:, C + 1:] = _per_micro(d * xmu, bounds, size).sum(axis=2)
        every = self._gather(layer, signature, parts)
        total = np.zeros(2 * C + 1)
        for row in every:
            total += row
        return int(total[0]), total[1:C + 1], total[C + 1:]

    def refuse(self, layer, phase, signature, error):
        self.batches.refuse(f"{layer.name}: {signature}", error)

    def __repr__(self):
        return f"MicroBatchNorm(size={self.batches.size})"
