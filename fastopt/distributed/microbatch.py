"""Ordered reduction over MPI ranks: data-parallel training with one process's bits.

:class:`OrderedMicroBatches` is :class:`fastopt.nn.microbatch.MicroBatches` spread over the
ranks of a communicator (the rule, and why, are in :mod:`fastopt.nn.microbatch`).  Rank
``r`` of ``P`` takes the micro-batches ``[r*M//P, (r+1)*M//P)`` of the ``M`` of each global
batch, and the two reductions cross the ranks without changing their order:

* **statistics** (batch norm's per-micro-batch counts, means and sums; ``2C + 1`` doubles
  per micro-batch): one ``allgather``; every rank merges all micro-batches in order, so
  every rank has the bits one process has.  The message carries the call's signature and a
  refusal: a rank whose input was refused still takes part, and every rank raises
  :class:`~fastopt.distributed.DistributedError` naming it (no rank is left waiting).
* **gradients** (one float64 vector of the parameters' size per micro-batch): a chain in
  rank order.  Rank 0 sums its micro-batches from 0.0 and sends the float64 sum to rank 1,
  which adds its own, in order, and sends it on; the last rank holds
  ``((g_0 + g_1) + g_2) + ...``, the one-process sum, and rounds it once.  The other ranks'
  gradients are zeros, so the data-parallel step that follows (the trainer weighs the
  last rank 1 and the others 0) hands every rank that sum exactly: ``x + 0 = x``, in any
  reduction order.

Cost: ``P - 1`` sequential float64 messages of the parameters' size per step (the chain's
latency grows with ``P``; it is meant for the few ranks of a node, or for checking a large
job against one process), then the usual allreduce.  All collectives run on a duplicate of
the communicator under a :class:`~fastopt.distributed.errors.Watchdog` (``timeout``).
"""

import time

import numpy as np

from ..kernels import _check
from ..nn.microbatch import MicroBatches
from ._mpi import require_mpi, world
from .errors import DistributedError, Watchdog

__all__ = ["OrderedMicroBatches"]

_TAG = 0x6F72        # the chain's messages ("or")


class OrderedMicroBatches(MicroBatches):
    """Micro-batches spread over MPI ranks, reduced in micro-batch order (collective).

    Parameters
    ----------
    size : int
        Rows per micro-batch (>= 1).
    comm : mpi4py intracommunicator, default ``MPI.COMM_WORLD``
    timeout : float or None, default None
        Abort the job when a collective waits longer than this many seconds.

    Attributes
    ----------
    rank, nprocs : int
        This rank and the number of ranks.
    seconds : float
        Time spent in this object's collectives so far.
    """

    def __init__(self, size, comm=None, *, timeout=None):
        super().__init__(size)
        mpi = require_mpi()
        comm = world(comm)
        if timeout is not None:
            timeout = _check.positive("timeout", timeout)
        self._rank, self._nprocs = comm.Get_rank(), comm.Get_size()
        self._double = mpi.DOUBLE
        self._watch = Watchdog(comm, timeout)
        with self._watch.guard(comm).during("OrderedMicroBatches()") as guarded:
            # its own communicator: never interleaved with DataParallel's collectives
            self._comm = self._watch.guard(guarded.Dup().unguarded)
        self._calls = 0

    def _exchange(self, parts, signature, problem):
        t0 = time.perf_counter()
        self._calls += 1
        with self._comm.during(f"micro-batch statistics {self._calls} ({signature})"):
            every = self._comm.allgather((signature, problem, parts))
        self.seconds += time.perf_counter() - t0
        refused = [(r, p) for r, (_, p, _) in enumerate(every) if p is not None]
        if refused:
            raise DistributedError(f"{signature}: " + "; ".join(
                f"rank {r} refused its input: {p}" for r, p in refused))
        if any(s != signature for s, _, _ in every):
            raise DistributedError("the ranks' micro-batched calls differ: " + "; ".join(
                f"rank {r}: {s}" for r, (s, _, _) in enumerate(every)))
        return np.concatenate([p for _, _, p in every])

    def gather(self, parts, signature):
        """Every rank's micro-batches' rows of ``parts``, in micro-batch order (every rank)."""
        return self._exchange(np.ascontiguousarray(parts, np.float64), signature, None)

    def refuse(self, signature, error):
        """Take part in the gather with a refusal: every rank raises DistributedError."""
        self._exchange(None, signature, f"{type(error).__name__}: {error}")

    def sum_in_order(self, parts, out):
        """The chain (see the module docstring); True on the last rank, which holds the sum."""
        comm = self._comm
        t0 = time.perf_counter()
        with comm.during("the ordered gradient sum (a chain in rank order)"):
            if self.rank > 0:
                comm.Recv([out, self._double], source=self.rank - 1, tag=_TAG)
            else:
                out[...] = 0.0
            for p in parts:
                out += p
            if self.rank < self.nprocs - 1:
                comm.Send([out, self._double], dest=self.rank + 1, tag=_TAG)
        self.seconds += time.perf_counter() - t0
        return self.holds_sum

    def __repr__(self):
        return f"OrderedMicroBatches(size={self.size}, rank {self.rank} of {self.nprocs})"
