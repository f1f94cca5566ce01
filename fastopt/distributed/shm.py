"""An allreduce among the ranks of one node through an MPI-3 shared-memory window.

Why: Open MPI's ``MPI_Allreduce`` between two processes of one node moves every byte through
its shared-memory transport (copy in, copy out, fragment by fragment, each a handshake that
needs both processes on a CPU at once) and then sums, so at 16M float32 it reaches a small
fraction of the node's copy bandwidth (``fastopt bench --distributed`` measures it).  Here
the gradient buffer *is* a piece of an ``MPI.Win.Allocate_shared`` window every rank of the
node can read.  A reduction goes through a :class:`Pipeline` of pieces (the whole buffer for
:meth:`SharedAllreduce.allreduce`; each gradient bucket as the backward pass completes it
for :class:`~fastopt.distributed.buckets.BucketReducer`), each piece in two stages:

1. **arrived** (every rank's values of the piece are in its window): each rank sums *its
   share of the piece* (:func:`~fastopt.distributed.sharding.shard_bounds` of the piece)
   straight from the others' windows, **in rank order** ``((g0 + g1) + g2) + ...``
   (reproducible bits, as ``DataParallel(deterministic=True)``), into its own window;
2. **summed** (every rank's share of the piece is summed): each rank copies every share of
   the piece from its owner into the output.

Every rank sums a share of every piece, so the work is balanced whatever order the pieces
come in, and a bucket is summed while it is still in the cache.  Each stage ends with a
non-blocking barrier (``MPI_Ibarrier``, on a communicator of its own per stage, so the two
stages' barriers can never pair up wrongly), tested between pieces (one ``MPI_Testsome``)
and waited for at the end (one ``MPI_Waitall`` per stage); a final barrier says no rank reads
the others' windows any more (:meth:`SharedAllreduce.release`, waited for lazily by the next
reduction's :meth:`SharedAllreduce.acquire`).  Per rank that is reading the buffer about
once and a half and writing it once.  Synchronization is MPI's (``Win.Sync``, the memory
barrier of the unified memory model, around ``MPI_Ibarrier`` / ``MPI_Barrier``); there is
no hand-made transport.

What was measured (2 ranks, 2 vCPUs shared with other jobs, load 12-15): the allreduce of
16M float32 costs about 1.7 copies of CPU time, the copy baseline 1 (``time.process_time``);
wall time is 4-5 times the CPU time under such load, and each barrier can wait a time slice
for the other rank to be scheduled.  Cutting :meth:`SharedAllreduce.allreduce` into 1 MiB
pieces cost 50% more CPU (about 80 us per piece: a barrier, memory barriers, NumPy calls)
and was slower there, so it sums the buffer as one piece.  Open MPI yields the CPU in every
test that finds nothing new when it counts the node as oversubscribed
(``mpi_yield_when_idle``), which is why pieces are tested once per bucket, not in a loop.

Examples
--------
Under ``mpiexec -n 2`` on one node::

    red = SharedAllreduce(MPI.COMM_WORLD, n)
    red.buffer[...] = my_gradient          # or compute into it directly
    red.allreduce()                        # red.buffer: the sum, identical on every rank
"""

import time
from collections import deque

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked, fixed
from ._mpi import require_mpi, world
from .sharding import divide_by_ranks, shard_bounds

__all__ = ["SharedAllreduce", "Pipeline"]

#: The shares' granularity: 64-byte cache lines of float32, so no two ranks write one line
_ALIGN = 16



class SharedAllreduce(Checked):
    """A sum over the ranks of ``comm``, which must all share one node, in a shared window.

    Parameters
    ----------
    comm : mpi4py intracommunicator, default ``MPI.COMM_WORLD``
        Every rank on the same node (checked: ValueError on every rank otherwise).
    n : int
        Elements per rank.
    dtype : numpy.float32 (default) or numpy.float64

    Attributes
    ----------
    buffer : ndarray
        This rank's ``n`` elements, in the window: write the values here, then call
        :meth:`allreduce`.
    """

    _why = "it is fixed at construction (the window is allocated for it)"
    comm = fixed("comm", "The communicator.", _why)
    rank = fixed("rank", "This rank on the node.", _why)
    size = fixed("size", "The ranks on the node.", _why)
    n = fixed("n", "Elements per rank.", _why)
    dtype = fixed("dtype", "float32 or float64.", _why)
    del _why
    buffer: object

    def __init__(self, comm, n, dtype=np.float32):
        mpi = require_mpi()
        comm = world(comm)
        n = _check.integer("n", n, 0)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        node = comm.Split_type(mpi.COMM_TYPE_SHARED, key=comm.Get_rank())
        if node.Get_size() != comm.Get_size():
            sizes = comm.allgather(node.Get_size())
            node.Free()
            raise ValueError(f"SharedAllreduce needs every rank of comm on one node: the "
                             f"node-local group sizes are {sizes}")
        self._mpi, self._comm, self._node = mpi, comm, node
        self._rank, self._size = node.Get_rank(), node.Get_size()
        self._n, self._dtype = n, dtype
        # the pipeline's barriers, one communicator per stage (see the module docstring)
        self._stages = (node.Dup(), node.Dup())
        self._release = None           # the pending "nobody reads my window" barrier
        self._win = mpi.Win.Allocate_shared(max(n, 1) * dtype.itemsize, dtype.itemsize,
                                            comm=node)
        self._views = []
        for r in range(self.size):
            mem, _ = self._win.Shared_query(r)
            self._views.append(np.frombuffer(mem, dtype, n))
        self.buffer = self._views[self.rank]
        self.buffer[...] = 0
        self._tmp = np.empty(0, dtype)
        self._shares = {}              # (lo, hi) -> every rank's share of the piece
        self._win.Lock_all(mpi.MODE_NOCHECK)
        self._sync()

    def _sync(self):
        """Every rank's writes so far are visible to every rank (memory barrier + barrier)."""
        self._win.Sync()
        self._node.Barrier()
        self._win.Sync()

    # ------------------------------------------------------------ the pieces
    def share(self, lo, hi, rank=None):
        """``rank``'s (default this rank's) share ``(a, b)`` of the piece ``[lo, hi)``."""
        shares = self._shares.get((lo, hi))
        if shares is None:
            shares = [(lo + a, lo + b) for a, b in shard_bounds(hi - lo, self.size, _ALIGN)]
            self._shares[(lo, hi)] = shares
        return shares[self.rank if rank is None else rank]

    def _sum_share(self, lo, hi, divide):
        """This rank's share of ``[lo, hi)``: the rank-order sum, into its window (/ P if
        ``divide``)."""
        a, b = self.share(lo, hi)
        if a == b or self.size == 1:
            return
        v = self._views
        mine = v[self.rank][a:b]          # only this rank reads this share of its window now
        if self.rank == 0:
            np.add(mine, v[1][a:b], out=mine)
        elif self.rank == 1:
            np.add(v[0][a:b], mine, out=mine)
        else:                             # ((g0 + g1) + ...) + g_rank: a scratch sum first
            if self._tmp.size < b - a:
                self._tmp = np.empty(b - a, self.dtype)
            t = self._tmp[:b - a]
            np.add(v[0][a:b], v[1][a:b], out=t)
            for r in range(2, self.rank):
                np.add(t, v[r][a:b], out=t)
            np.add(t, mine, out=mine)
        for r in range(2 if self.rank == 0 else self.rank + 1, self.size):
            np.add(mine, v[r][a:b], out=mine)
        if divide:
            divide_by_ranks(mine, self.size)

    def _copy_shares(self, out, lo, hi):
        """Every rank's summed share of ``[lo, hi)`` into ``out`` (this rank's too, unless
        ``out`` is its window)."""
        own = out is self.buffer
        for r in range(self.size):
            if r == self.rank and own:
                continue
            a, b = self.share(lo, hi, r)
            if a < b:
                np.copyto(out[a:b], self._views[r][a:b])

    def pipeline(self, out, *, divide=False, trace=None):
        """A :class:`Pipeline` that leaves the sums of the pieces posted to it in ``out``."""
        return Pipeline(self, out, divide, trace)

    def acquire(self):
        """Wait until no rank reads this rank's window any more (the previous reduction's
        :meth:`release`), before writing into ``buffer``."""
        if self._release is not None:
            self._release.Wait()
            self._release = None
            self._win.Sync()

    def release(self):
        """This rank has read what it needs of the others' windows (non-blocking; the next
        :meth:`acquire` waits for every rank's)."""
        self._win.Sync()
        self._release = self._stages[0].Ibarrier()

    # ------------------------------------------------------------ whole buffers
    def _whole(self, out, divide):
        self.acquire()
        self._sync()                          # everyone's values are in
        pipe = self.pipeline(out, divide=divide)
        pipe.arrived(0, self.n)               # (one piece: see the module docstring)
        pipe.drain()
        self._sync()                          # no one writes its buffer while others read it

    def allreduce(self):
        """Replace ``buffer`` by the sum over the ranks (collective), summed in rank order;
        identical bits on every rank."""
        self._whole(self.buffer, False)

    def reduce_into(self, out, *, divide=False):
        """The sum over the ranks of ``buffer`` into ``out`` (collective; ``buffer``
        is left partly overwritten).

        As :meth:`allreduce` (rank-order sums, the same bits on every rank), divided by the
        number of ranks when ``divide``; ``out``: an array of ``n`` elements of the dtype.
        """
        self._whole(out, divide)

    def free(self):
        """Release the window and the node communicators (collective)."""
        if self._win is not None:
            self.acquire()
            self._win.Unlock_all()
            self._win.Free()
            for c in self._stages:
                c.Free()
            self._node.Free()
            self._win = None
            self.buffer = None
            self._views = []


class Pipeline(Checked):
    """One reduction through a :class:`SharedAllreduce`'s window, piece by piece.

    :meth:`post` a piece when this rank's values of it are in its window (``buffer``);
    :meth:`progress` (never waits) sums what every rank has posted and copies what every
    rank has summed; :meth:`drain` waits for the rest.  Pieces must be posted in the same
    order on every rank.  ``trace``: a list that gets ``(time, event, lo)`` per stage
    (``"posted"``, ``"summed"``, ``"copied"``), for measurements.
    """

    _why = "it is fixed when the pipeline starts"
    red = fixed("red", "The SharedAllreduce.", _why)
    out = fixed("out", "Where the sums go.", _why)
    divide = fixed("divide", "Whether the sums are divided by the ranks.", _why)
    del _why
    trace: object

    def __init__(self, red, out, divide, trace=None):
        self._red, self._out, self._divide = red, out, divide
        self.trace = trace
        self._arriving = deque()      # (lo, hi, barrier): posted, not known to be in everywhere
        self._summing = deque()       # (lo, hi, barrier): summed here, maybe not everywhere

    def _mark(self, event, lo):
        if self.trace is not None:
            self.trace.append((time.perf_counter(), event, lo))

    @property
    def pending(self):
        """Pieces posted and not yet in ``out``."""
        return len(self._arriving) + len(self._summing)

    def post(self, lo, hi):
        """This rank's values of ``[lo, hi)`` are in its window."""
        red = self.red
        red._win.Sync()
        self._arriving.append((lo, hi, red._stages[0].Ibarrier()))
        self._mark("posted", lo)

    def arrived(self, lo, hi):
        """Every rank's values of ``[lo, hi)`` are known to be in (after a full barrier): sum
        this rank's share now."""
        red = self.red
        red._sum_share(lo, hi, self.divide)
        red._win.Sync()
        self._summing.append((lo, hi, red._stages[1].Ibarrier()))
        self._mark("summed", lo)

    def _copy(self, lo, hi):
        self.red._win.Sync()
        self.red._copy_shares(self.out, lo, hi)
        self._mark("copied", lo)

    def progress(self):
        """Do the work whose barriers have completed, in order; never waits.

        One MPI call (``MPI_Testsome`` over everything pending): under oversubscription Open
        MPI yields the CPU in every call that finds nothing new, so calls are kept few.
        """
        arriving, summing = self._arriving, self._summing
        if not (arriving or summing):
            return
        mpi = self.red._mpi
        mpi.Request.Testsome([req for _, _, req in arriving] + [req for _, _, req in summing])
        null = mpi.REQUEST_NULL
        while arriving and arriving[0][2] == null:
            lo, hi, _ = arriving.popleft()
            self.red._win.Sync()
            self.arrived(lo, hi)          # (its own barrier is tested at the next call)
        while summing and summing[0][2] == null:
            lo, hi, _ = summing.popleft()
            self._copy(lo, hi)

    def _copy_summed(self):
        null = self.red._mpi.REQUEST_NULL
        while self._summing and self._summing[0][2] == null:
            self._copy(*self._summing.popleft()[:2])

    def drain(self):
        """Wait for every posted piece's sum in ``out`` (call under a watchdog).

        Two waits at most, for everything left of each stage: on a loaded machine every
        wait may hand the CPU to another process for a whole time slice, so waiting piece by
        piece would cost a time slice per piece.
        """
        mpi = self.red._mpi
        if self._arriving:
            mpi.Request.Waitall([req for _, _, req in self._arriving])
            self.red._win.Sync()
            while self._arriving:
                lo, hi, _ = self._arriving.popleft()
                self.arrived(lo, hi)
        if self._summing:
            mpi.Request.Waitall([req for _, _, req in self._summing])
            while self._summing:
                lo, hi, _ = self._summing.popleft()
                self._copy(lo, hi)
