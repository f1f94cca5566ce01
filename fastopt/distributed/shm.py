"""An allreduce among the ranks of one node through an MPI-3 shared-memory window.

Why: Open MPI's ``MPI_Allreduce`` between two processes of one node moves every byte through
its shared-memory transport (copy in, copy out, segment by segment) and then sums, so at 16M
float32 it reaches a small fraction of the node's copy bandwidth (``fastopt bench
--distributed`` measures it).  Here the gradient buffer *is* a piece of an
``MPI.Win.Allocate_shared`` window every rank of the node can read: each rank sums its slice
of the buffer straight from the others' memory, **in rank order** ``((g0 + g1) + g2) + ...``
(reproducible bits, as ``DataParallel(deterministic=True)``), writes it into its own buffer,
and then copies the other slices from their owners.  Per rank that is reading the buffer
once and a half and writing it once: about the traffic of one copy.  Synchronization is
MPI's (``Win.Sync`` and barriers of the node's communicator); there is no hand-made transport.

Examples
--------
Under ``mpiexec -n 2`` on one node::

    red = SharedAllreduce(MPI.COMM_WORLD, n)
    red.buffer[...] = my_gradient          # or compute into it directly
    red.allreduce()                        # red.buffer: the sum, identical on every rank
"""

import numpy as np

from ..kernels import _check
from ._mpi import require_mpi, world
from .sharding import shard_bounds

__all__ = ["SharedAllreduce"]

#: The slices' granularity: 64-byte cache lines of float32, so no two ranks write one line
_ALIGN = 16


class SharedAllreduce:
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
        self._mpi, self.comm, self._node = mpi, comm, node
        self.rank, self.size = node.Get_rank(), node.Get_size()
        self.n, self.dtype = n, dtype
        self._win = mpi.Win.Allocate_shared(max(n, 1) * dtype.itemsize, dtype.itemsize,
                                            comm=node)
        self._views = []
        for r in range(self.size):
            mem, _ = self._win.Shared_query(r)
            self._views.append(np.frombuffer(mem, dtype, n))
        self.buffer = self._views[self.rank]
        self.buffer[...] = 0
        self.bounds = shard_bounds(n, self.size, _ALIGN)
        lo, hi = self.bounds[self.rank]
        self._tmp = np.empty(hi - lo, dtype) if self.rank >= 2 else None
        self._win.Lock_all(mpi.MODE_NOCHECK)
        self._sync()

    def _sync(self):
        """Every rank's writes so far are visible to every rank (memory barrier + barrier)."""
        self._win.Sync()
        self._node.Barrier()
        self._win.Sync()

    def allreduce(self):
        """Replace ``buffer`` by the sum over the ranks (collective), summed in rank order;
        identical bits on every rank."""
        self._sync()                          # everyone's values are in
        lo, hi = self.bounds[self.rank]
        v = self._views
        out = v[self.rank][lo:hi]
        if self.rank >= 2:                    # ((g0 + g1) + ...) + g_rank: a scratch sum first
            t = self._tmp
            np.add(v[0][lo:hi], v[1][lo:hi], out=t)
            for r in range(2, self.rank):
                np.add(t, v[r][lo:hi], out=t)
            np.add(t, out, out=out)
        elif self.rank == 1:
            np.add(v[0][lo:hi], out, out=out)
        for r in range(1 if self.rank == 0 else self.rank + 1, self.size):
            np.add(out, v[r][lo:hi], out=out)
        self._sync()                          # every slice summed
        for r, (a, b) in enumerate(self.bounds):
            if r != self.rank:
                np.copyto(self.buffer[a:b], v[r][a:b])
        self._sync()                          # no one writes its buffer while others read it

    def reduce_into(self, out, *, divide=False):
        """The sum over the ranks of ``buffer`` into ``out`` (collective; ``buffer``
        is left partly overwritten).

        As :meth:`allreduce` (rank-order sums, the same bits on every rank), divided by the
        number of ranks when ``divide``; ``out``: an array of ``n`` elements of the dtype.
        """
        self._sync()
        lo, hi = self.bounds[self.rank]
        v = self._views
        mine = v[self.rank][lo:hi]        # only this rank reads this slice of its buffer
        if self.size == 1:
            pass
        elif self.rank == 0:
            np.add(mine, v[1][lo:hi], out=mine)
        else:
            t = self._tmp if self.rank >= 2 else None
            if t is not None:
                np.add(v[0][lo:hi], v[1][lo:hi], out=t)
                for r in range(2, self.rank):
                    np.add(t, v[r][lo:hi], out=t)
                np.add(t, mine, out=mine)
            else:
                np.add(v[0][lo:hi], mine, out=mine)
        for r in range(2 if self.rank == 0 else self.rank + 1, self.size):
            np.add(mine, v[r][lo:hi], out=mine)
        if divide and self.size > 1:
            np.divide(mine, self.size, out=mine)
        self._sync()
        for r, (a, b) in enumerate(self.bounds):
            np.copyto(out[a:b], v[r][a:b])
        self._sync()

    def free(self):
        """Release the window and the node communicator (collective)."""
        if self._win is not None:
            self._win.Unlock_all()
            self._win.Free()
            self._node.Free()
            self._win = None
            self.buffer = None
            self._views = []
