"""How work is split across ranks: slices of the flat buffer, of each mini-batch, of the cores.

Examples
--------
>>> from fastopt.distributed.sharding import shard_bounds, batch_part
>>> shard_bounds(100_000, 3, align=16_384)          # whole blocks, the last rank takes the tail
[(0, 32768), (32768, 65536), (65536, 100000)]
>>> shard_bounds(10, 3, align=4)
[(0, 4), (4, 8), (8, 10)]
>>> [batch_part(10, r, 3) for r in range(3)]         # rows of a 10-sample global batch
[slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
"""

import os

import numpy as np

from ..kernels import _check

__all__ = ["shard_bounds", "batch_part", "node_threads", "use_node_share"]


def shard_bounds(n, size, align=1):
    """Split ``range(n)`` into ``size`` contiguous parts made of whole blocks of ``align``.

    Part ``r`` is ``[lo, hi)``; the blocks (``ceil(n / align)`` of them, the last one maybe
    short) are dealt as evenly as possible, in order, so no two ranks' parts differ by more
    than one block.  A part can be empty when there are fewer blocks than ranks.
    """
    n = _check.integer("n", n, 0)
    size = _check.integer("size", size, 1)
    align = _check.integer("align", align, 1)
    blocks = -(-n // align)
    out = []
    for r in range(size):
        lo = min(n, (r * blocks // size) * align)
        hi = min(n, ((r + 1) * blocks // size) * align)
        out.append((lo, hi))
    return out


def divide_by_ranks(buf, size):
    """``buf /= size`` in place (the mean of a sum over ``size`` ranks), the same bits.

    When ``size`` is a power of two, ``1 / size`` is exact and ``x * (1 / size)`` and
    ``x / size`` are the correctly rounded value of the same real number (subnormals
    included): the multiplication gives the division's bits at about half its cost (a
    vector division's throughput is several times a multiplication's).  Otherwise it divides.
    """
    if size & (size - 1) == 0:
        np.multiply(buf, buf.dtype.type(1.0 / size), out=buf)
    else:
        np.divide(buf, size, out=buf)
    return buf


def pieces(b0, b1, bounds):
    """Per rank: how many elements of bucket ``[b0, b1)`` fall in its slice of ``bounds``,
    and where (from ``b0``): ``(counts, displs)``."""
    counts, displs = [], []
    for lo, hi in bounds:
        a, b = max(lo, b0), min(hi, b1)
        c = max(0, b - a)
        counts.append(c)
        displs.append(a - b0 if c else 0)
    return counts, displs


def exchange_counts(counts, displs, rank, width):
    """The ``MPI_Alltoallv`` of a reduce-scatter by exchange, for rank ``rank``: every other
    rank's piece of this rank's slice into its row (``width`` elements apart, rank order,
    this rank skipped) of a ``(P - 1, width)`` receive buffer; nothing sent to itself.
    ``counts, displs``: :func:`pieces` of the bucket.  Returns ``((send counts, send
    displs), (receive counts, receive displs))``."""
    mine = counts[rank]
    send = list(counts)
    send[rank] = 0
    recv = [0 if r == rank else mine for r in range(len(counts))]
    rdispls = [0 if r == rank else (r - (r > rank)) * width for r in range(len(counts))]
    return (send, displs), (recv, rdispls)


def sum_in_rank_order(out, own, others, rank):
    """``out`` = ``((g0 + g1) + g2) + ...`` where ``g_rank`` is ``own`` and the other ranks'
    terms are the rows of ``others`` in rank order (this rank skipped), as
    :func:`exchange_counts` receives them: the same bits whatever the MPI library."""
    terms = [own if r == rank else others[r - (r > rank)] for r in range(len(others) + 1)]
    if len(terms) == 1:
        np.copyto(out, own)
        return out
    np.add(terms[0], terms[1], out=out)
    for t in terms[2:]:
        np.add(out, t, out=out)
    return out


def batch_part(n, rank, size):
    """The rows of a global mini-batch of ``n`` samples that rank ``rank`` of ``size`` takes.

    Contiguous, in rank order, sizes differing by at most one: every rank together covers
    the global batch exactly once, so ``size`` processes train on the same batches as one.
    """
    n = _check.integer("n", n, 0)
    size = _check.integer("size", size, 1)
    rank = _check.integer("rank", rank, 0, size - 1)
    return slice(rank * n // size, (rank + 1) * n // size)


def _affinity():
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def node_threads(comm):
    """This rank's share of its node's cores: the thread count that does not oversubscribe.

    The ranks on this node are found with ``comm.Split_type(MPI.COMM_TYPE_SHARED)``.  The
    node's CPUs are the union of those ranks' affinity masks (capped by the cgroup's CPU
    quota, as for one process); they are dealt evenly over the node's ranks, at least one
    each, and never more than this rank's own default (:func:`fastopt.default_num_threads`).
    Collective over ``comm``.
    """
    from ._mpi import require_mpi
    from ..runtime import threads

    mpi = require_mpi()
    node = comm.Split_type(mpi.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        masks = node.allgather(sorted(_affinity()))
        local_rank, local_size = node.Get_rank(), node.Get_size()
    finally:
        node.Free()
    cpus = len(set().union(*map(set, masks)))
    quota = threads.cgroup_cpu_quota()
    if quota:
        cpus = min(cpus, quota)
    share = cpus // local_size + (1 if local_rank < cpus % local_size else 0)
    return max(1, min(share, threads.default_num_threads()))



def use_node_share(comm):
    """Set the kernels' thread count to :func:`node_threads`, unless one was chosen.

    A count set with :func:`fastopt.set_num_threads` or ``OMP_NUM_THREADS`` is kept.
    Collective.  Returns the thread count in use.
    """
    from ..runtime import threads

    n = node_threads(comm)
    if not threads.num_threads_set_explicitly() and "OMP_NUM_THREADS" not in os.environ:
        threads.set_num_threads(n)
    return threads.get_num_threads()
