"""DataParallel: data-parallel training over MPI, optionally with the optimizer state sharded (ZeRO-1).

Every rank computes the gradients of its part of the global mini-batch into its own
gradient buffer; :meth:`DataParallel.step` sums them over the ranks and applies the same
update everywhere.

* **plain** (``shard_state=False``): the gradient buffer is summed in place with
  ``MPI_Allreduce`` (one collective over the whole FlatParams, or one per bucket of
  ``bucket_size`` elements, as Horovod's fusion buffer), divided by the number of ranks, and
  every rank runs the wrapped optimizer over the whole model.
* **ZeRO-1** (``shard_state=True``): the flat buffer is cut into one contiguous,
  block-aligned slice per rank (:func:`~fastopt.distributed.sharding.shard_bounds`).  The
  gradients are reduce-scattered, so each rank receives the sum of its slice only (one
  ``MPI_Alltoallv`` brings it the others' pieces of its slice, and it adds them in rank
  order: Open MPI's ``MPI_Reduce_scatter`` was about 5 times slower on one node); each rank
  holds the optimizer state of its slice only and updates that slice with the fused kernel;
  then the parameters are all-gathered.  The same bytes cross the network as with an
  allreduce (a reduce-scatter plus an all-gather *is* a ring allreduce), but the optimizer
  state and the optimizer's work per rank are 1/P of the whole.  Every optimizer feature
  works sharded: the slices are whole compiled chunks of the wrapped optimizer (at most
  16,384 elements of one array or run, so no int8 block is split), and each element keeps
  its parameter group, state format and bfloat16 rounding index (:mod:`fastopt.optim.part`);
  clipping and the non-finite guard use the whole gradient's norm and flag: each rank sums
  the squares of its chunks, one allgather brings every chunk's sum to every rank, and they
  are added in the wrapped optimizer's own order.

``deterministic=True`` replaces plain mode's ``MPI_Allreduce`` by an all-to-all exchange of
the slices (which only moves bytes), a sum in rank order ``((g0 + g1) + g2) + ...`` on the
rank that owns the slice, and an all-gather of the sums: two runs at the same world size give
the same bits, whatever algorithm the MPI library picks.  ZeRO-1 always sums that way, so it
gives those bits with or without ``deterministic``.

``overlap=True`` starts each bucket's reduction as soon as the backward pass has
produced its gradients (:meth:`DataParallel.ready`, or the FlatParams hook a model calls,
:meth:`fastopt.FlatParams.grads_ready`), non-blocking, so communication runs while the
backward pass goes on; ``wire_dtype="bfloat16"`` sends the gradients in bfloat16 (half the
bytes).  Both are :mod:`fastopt.distributed.buckets`, which says what each does to the bits.
In every mode the parameters are bit-identical on all
ranks: each element's sum is computed once, on one rank, and copied to the others (the
plain mode relies on ``MPI_Allreduce`` giving every rank the same result, which the MPI
standard recommends and Open MPI and MPICH do; :meth:`DataParallel.verify_parameters`
checks it).  An elementwise kernel gives the same bits on a slice as on the whole buffer,
so the two modes also agree with each other bit for bit in deterministic mode, with
clipping, the guard, parameter groups and any state format too (the norm's squares are
added in the same order; with ``impl="reference"`` plain mode adds them with NumPy instead).
"""

import difflib
import math
import time
import zlib
from collections.abc import Mapping

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked, checked, fixed
from ..optim import Optimizer
from ..optim import part as _part
from ..runtime import threads as _threads
from ..runtime.dispatch import ext
from ._mpi import require_mpi, world
from . import errors as _errors
from .buckets import DEFAULT_BUCKET_BYTES, WIRE_DTYPES, BucketReducer
from .errors import DistributedError, Watchdog, check_timeout, raise_collectively
from .sharding import (divide_by_ranks, exchange_counts, pieces, shard_bounds,
                       sum_in_rank_order, use_node_share)

__all__ = ["DataParallel"]

#: Bytes per MPI call when an array is broadcast as bytes (counts are C ints)
_CHUNK = 1 << 30


class _Group:
    """The parameters of one dtype, seen as one flat buffer of ``n`` elements."""

    def __init__(self, index, shapes, dtype):
        self.index = index
        self.shapes = shapes
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)]).tolist()
        self.n = self.offsets[-1]
        self.dtype = np.dtype(dtype)
        self.pbuf = self.gbuf = None        # flat parameters and gradients
        self.red = None                     # the reduced gradient of this rank's slice
        self.recv = None                    # the exchange: the others' pieces, a row per rank
        self.bounds = None
        self.buckets = None

    def split(self, buf):
        """Views of the flat ``buf`` shaped like the group's arrays."""
        return [buf[o:o + s].reshape(shape)
                for o, s, shape in zip(self.offsets, self.sizes, self.shapes)]




def _short(v, limit=200):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


class _Slot:
    """Where the ``index``-th array of a broadcast structure was (see :func:`_hollow`)."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __getstate__(self):
        return self.index

    def __setstate__(self, index):
        self.index = index


def _hollow(obj, arrays):
    """``obj`` (dicts, lists, tuples) with each numeric ndarray replaced by a :class:`_Slot`,
    the arrays appended to ``arrays``."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        # (C-contiguous and writable, as MPI takes a buffer)
        ok = obj.flags.c_contiguous and obj.flags.writeable
        arrays.append(obj if ok else np.array(obj, order="C"))
        return _Slot(len(arrays) - 1)
    if isinstance(obj, dict):
        return {k: _hollow(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_hollow(v, arrays) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    return obj


def _fill(obj, arrays):
    """The inverse of :func:`_hollow`."""
    if isinstance(obj, _Slot):
        return arrays[obj.index]
    if isinstance(obj, dict):
        return {k: _fill(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_fill(v, arrays) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    return obj


#: Why an option of DataParallel cannot be set after construction
_BUILT = ("the communicators, slices, buckets and optimizer state were built from it at "
          "construction; construct a new DataParallel")


def _option(name, doc, private=None):
    """A construction option of DataParallel, read-only afterwards."""
    return fixed(name, doc, _BUILT, private)


def _check_every(name, value):
    return _check.integer(name, value, 0)


class DataParallel(Checked):
    """Data-parallel training of a fastopt optimizer's model over MPI ranks.

    Wrap the optimizer once on every rank; then each step, write this rank's gradient (of
    its part of the global batch) into the gradient buffer and call :meth:`step`.  After
    wrapping, use the DataParallel as the optimizer (``dp.step()``, ``dp.lr``,
    ``dp.set_epoch(e)``, ``dp.state_dict()``, its hyperparameters as attributes): in
    sharded mode the wrapped optimizer is no longer used (let it go, and its full-size state
    is freed).

    Parameters
    ----------
    optimizer : fastopt.optim.Optimizer
        Over a :class:`fastopt.FlatParams` (no copies: the collectives run on its ``grad``
        and ``data`` buffers), or over a list or dict of arrays (``step(grads)``; the
        gradients are copied into a flat buffer per dtype, and in sharded mode the parameters
        through one too).  Built identically on every rank.
    comm : mpi4py intracommunicator, default ``MPI.COMM_WORLD``
    shard_state : bool, default False
        ZeRO stage 1: each rank keeps the optimizer state of its slice only.
    deterministic : bool, default False
        Sum the gradients in rank order (reproducible bits from run to run).  ZeRO-1 always
        does (its reduce-scatter is that exchange), so there it changes nothing.
    bucket_size : int or None, default None
        Elements per collective; None: one collective per dtype for the whole buffer.
        (Bounds the receive buffer of ZeRO-1 and of the deterministic mode too.)
    align : int or None
        The slices' granularity in elements; default the kernels' block
        (``16384``), so no slice splits a block.  In sharded mode a cut inside one of the
        optimizer's compiled chunks (16,384 elements from the start of each array, or run of
        a FlatParams) moves back to the chunk's start.
    broadcast : bool, default True
        Start every rank from rank 0's parameters (:meth:`broadcast_parameters`).
    num_threads : "auto", int or None, default "auto"
        "auto": unless a thread count was set (``fastopt.set_num_threads``,
        ``OMP_NUM_THREADS``), use this rank's share of its node's cores
        (:func:`~fastopt.distributed.sharding.node_threads`), so the ranks of a node do not
        oversubscribe it.  An int sets it; None leaves it alone.  The process-wide count
        (:func:`fastopt.set_num_threads`) is given back by :meth:`close` or at the end of a
        ``with DataParallel(...) as dp:`` block; a constructor that raises leaves it unchanged.
    check_every : int, default 1
        Every this many steps, check (one 16-byte allreduce) that all ranks have the same
        step count, epoch and hyperparameters; a mismatch is a DistributedError on every
        rank.  0: only at construction and on loading.  With the bucketed reduction
        (``overlap``, a bfloat16 wire, the shared window) the check is non-blocking, started
        once every bucket is launched and waited for with them (still before the update).
    timeout : float or None, default None
        Abort the job when one of this object's collectives waits longer than this many
        seconds (a rank died, skipped a step, or is stuck): a message and a non-zero exit
        instead of a hang.
    abort_on_exception : bool, default True
        Install :func:`~fastopt.distributed.errors.abort_on_exception`: an uncaught exception
        on any rank ends the whole job instead of leaving the others waiting.
    overlap : bool, default False
        Reduce the gradients in buckets, each started (non-blocking: through the shared
        window on one node, see ``transport``; else ``MPI_Iallreduce``) as soon as
        :meth:`ready` has been called for every parameter in it, while the backward pass
        goes on; :meth:`step` waits for the rest.  Over a FlatParams, installs a hook
        (:meth:`fastopt.FlatParams.add_grad_hook`): a model that calls
        ``params.grads_ready(names)`` in its backward pass (:class:`fastopt.nn.models.MLP`
        does) overlaps with no further code.  With ``shard_state=True`` (ZeRO-1) each
        bucket is reduce-scattered (``MPI_Ialltoallv`` to the slices' owners, summed there in
        rank order): the bits of ZeRO-1 without overlap.  In plain mode with
        ``deterministic=True`` the overlapped exchange keeps the rank-order sums: the same
        bits as without overlap.  Without it, the same bits with 2 ranks, within float32
        rounding with 3 or more (see :mod:`fastopt.distributed.buckets`).
    bucket_bytes : int or None, default None
        Bytes of gradient per non-blocking collective (``overlap`` and ``wire_dtype``);
        None: 1 MiB.  After the first step of a backward pass that marks whole layers
        ready (``FlatParams.grads_ready``), the buckets become runs of whole layers of at
        least this many bytes (see :mod:`fastopt.distributed.buckets`).
    wire_dtype : {"native", "bfloat16"}, default "native"
        "bfloat16": send float32 gradients rounded to bfloat16 (to nearest even) and sum them
        in float32, half the bytes (plain mode, float32 gradients; the rounding and its bound
        are in :mod:`fastopt.distributed.buckets`).  Sums in rank order: reproducible.
    error_feedback : bool, default False
        With ``wire_dtype="bfloat16"``: keep each rank's rounding residual and add it to its
        next gradient (:attr:`residuals`).
    transport : {"auto", "mpi", "shared_window"}, default "auto"
        "shared_window" (plain mode, every rank on one node, native wire): the gradient
        buckets go into an MPI-3 shared-memory window as they are complete, and each rank
        sums its share of each bucket straight from the others' windows, in rank order, as
        soon as every rank has posted it (with ``overlap=True``, during the backward pass;
        :class:`~fastopt.distributed.shm.SharedAllreduce`): the bits of
        ``deterministic=True``, at several times the speed of Open MPI's on-node allreduce.
        The window holds one more copy of the gradient per rank.  "mpi": MPI's collectives
        (``MPI_Allreduce``; overlapped, ``MPI_Iallreduce``).  "auto": the shared window for
        an overlapped plain-mode step with a native wire when every rank is on one node
        (where Open MPI's non-blocking allreduce costs about twice its blocking one, and
        neither hides behind the backward pass: no core is idle to move the bytes), MPI
        otherwise.  The results are those of the sequential step either way: bit for bit
        with 2 ranks and in deterministic mode, within float32 rounding of a reordered sum
        with 3 or more.  After construction ``transport`` is the one chosen.

    Attributes
    ----------
    comm, rank, size, flat : read-only
        The communicator given, this rank and the number of ranks in it, the wrapped
        optimizer's FlatParams (or None).
    shard_state, deterministic, bucket_size, align, overlap, bucket_bytes, wire_dtype, error_feedback, transport, broadcast, num_threads, abort_on_exception : read-only
        The options as given (``align``: the default resolved; ``transport``: the one
        chosen).  Setting one raises AttributeError: the communicators, slices, buckets and
        state were built from them; construct a new DataParallel.
    check_every : int
        Settable between steps (an int >= 0, checked as the constructor checks it; read at
        each step).  Set it alike on every rank: ranks that disagree on it do not meet in
        the check.
    timeout : float or None
        Settable between steps (None, or a number of seconds > 0, checked as the
        constructor checks it); the next collective gets the new limit.
    timings : dict, read-only
        Seconds in communication and in the optimizer, and steps, so far (the dict cannot be
        replaced; its entries may be reset).
    lr, hyperparameters
        The wrapped optimizer's (``dp.lr``, ``dp.betas``, ...), set through to it and
        checked by it.

    Raises
    ------
    DistributedError
        On every rank, when the ranks' models (layout, dtypes), optimizers (type,
        hyperparameters, step count, epoch, schedule) or DataParallel settings differ.

    Notes
    -----
    Every attribute is checked when set.  The construction options are read-only (above);
    ``check_every`` and ``timeout`` may be set between steps, checked as the constructor
    checks them; setting any other public name raises AttributeError with the close match (a
    misspelled ``dp.overlapp = True`` is not ignored).

    Examples
    --------
    Run with ``mpiexec -n 2 python train.py``::

        import numpy as np, fastopt
        from fastopt.distributed import DataParallel, batch_part

        fp = fastopt.FlatParams({"W": (20, 1), "b": (1,)})
        opt = DataParallel(fastopt.Adam(fp, lr=0.05), shard_state=True)
        part = batch_part(len(X), opt.rank, opt.size)        # this rank's rows
        for epoch in range(200):
            Xr, yr = X[part], y[part]
            ...                                              # gradients into fp.grads[...]
            opt.step()                                       # averaged, updated, identical everywhere
    """

    comm = _option("comm", "The communicator given (its collectives run on duplicates, under "
                   "the watchdog).", "_user_comm")
    rank = _option("rank", "This rank in ``comm``.")
    size = _option("size", "The number of ranks of ``comm``.")
    flat = _option("flat", "The wrapped optimizer's FlatParams, or None (lists and dicts).")
    shard_state = _option("shard_state", "ZeRO-1: each rank holds its slice of the state.")
    deterministic = _option("deterministic", "Gradients summed in rank order.")
    bucket_size = _option("bucket_size", "Elements per collective, or None.")
    align = _option("align", "The slices' granularity in elements.")
    overlap = _option("overlap", "Buckets reduced during the backward pass.")
    bucket_bytes = _option("bucket_bytes", "Bytes per non-blocking bucket, or None (1 MiB).")
    wire_dtype = _option("wire_dtype", "The gradients' dtype on the wire.")
    error_feedback = _option("error_feedback", "bfloat16 rounding residuals fed back.")
    transport = _option("transport", "The transport chosen ('mpi' or 'shared_window').")
    broadcast = _option("broadcast", "Whether rank 0's parameters were broadcast at "
                        "construction.")
    num_threads = _option("num_threads", "The ``num_threads`` given.")
    abort_on_exception = _option("abort_on_exception", "Whether the abort hook was installed.")
    timings = fixed("timings", "Seconds in communication and in the optimizer, and steps, "
                    "so far (read-only; a dict whose entries may be reset).",
                    "it is this object's running total (reset its entries instead)")
    check_every = checked("check_every", _check_every,
                          "Steps between consistency checks (an int >= 0; 0: none), settable "
                          "between steps (checked; alike on every rank).")

    @property
    def timeout(self):
        """Seconds a collective may wait before the job is aborted, or None; settable (checked).

        May be set between steps (None, or a number > 0, checked as the constructor checks
        it); the next collective gets the new limit."""
        return self._watch.timeout

    @timeout.setter
    def timeout(self, value):
        self._watch.timeout = check_timeout(value)

    def __init__(self, optimizer, comm=None, *, shard_state=False, deterministic=False,
                 bucket_size=None, align=None, broadcast=True, num_threads="auto",
                 check_every=1, timeout=None, abort_on_exception=True, overlap=False,
                 bucket_bytes=None, wire_dtype="native", error_feedback=False,
                 transport="auto"):
        mpi = require_mpi()
        comm = world(comm)
        if isinstance(num_threads, str) and num_threads != "auto":
            raise ValueError(f"num_threads must be 'auto', an int >= 1 or None, "
                             f"got {num_threads!r}")
        if not isinstance(num_threads, str) and num_threads is not None:
            num_threads = _check.integer("num_threads", num_threads, 1, _threads.MAX_THREADS)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastopt optimizer (fastopt.Adam(...), ...), "
                            f"got {type(optimizer).__name__}")
        self._mpi = mpi
        self._user_comm = comm
        self._rank, self._size = comm.Get_rank(), comm.Get_size()
        self._shard_state = _check.flag("shard_state", shard_state)
        self._deterministic = _check.flag("deterministic", deterministic)
        self._broadcast = _check.flag("broadcast", broadcast)
        self._abort_on_exception = _check.flag("abort_on_exception", abort_on_exception)
        self._num_threads = num_threads
        if bucket_size is not None:
            bucket_size = _check.integer("bucket_size", bucket_size, 1)
        self._bucket_size = bucket_size
        block = ext._optim.block_size()
        self._align = block if align is None else _check.integer("align", align, 1)
        self.check_every = check_every             # (checked by its property)
        timeout = check_timeout(timeout)
        self._check_overlap(optimizer, overlap, bucket_bytes, wire_dtype, error_feedback,
                            transport)
        if self.shard_state:
            _part.check(optimizer)
        self._watch = Watchdog(comm, timeout)
        # every collective of this object (and of the distributed checkpoints) goes through
        # this communicator: none can wait longer than the timeout
        self._comm = self._watch.guard(comm)
        if self._abort_on_exception:
            _errors.abort_on_exception(comm)
        self._timings = {"communication": 0.0, "optimizer": 0.0, "steps": 0}

        self._params = optimizer.params
        self._flat = optimizer.flat
        # ZeRO-1: the optimizer's tensors on the flat buffers, and its compiled chunks (the
        # slices are whole chunks: the norm is added as one optimizer adds it, no int8 block
        # is split)
        if self.shard_state:
            self._extents = _part.extents(optimizer)
            self._norm = _part.NormOrder(optimizer)
        # the arguments are checked; the process-wide thread count is set last, and a failure
        # on the way removes the FlatParams hook: a refused constructor leaves both as they were
        with self._comm.during("DataParallel()"):
            self._describe_and_compare(optimizer)
            self._setup_groups()
            self._setup_reducers()
            try:
                if self._broadcast:
                    self.broadcast_parameters()
                self._opt = self._shard_optimizer(optimizer) if self.shard_state else optimizer
                # the process's thread count before and after (close() gives it back)
                before = _threads.num_threads_setting()
                if num_threads == "auto":
                    use_node_share(self._comm)
                elif num_threads is not None:
                    _threads.set_num_threads(num_threads)
                self._threads_saved = (before, _threads.num_threads_setting())
            except BaseException:
                self.detach()
                raise
        # the steps since the last consistency check: how many, how many weighted, in what
        # order (a CRC), so a rank that weighted differently is found at the next check
        self._weighting = (0, 0, 0)
        self._check_sig = np.zeros(2, np.int64)

    # ------------------------------------------------------------ construction
    @staticmethod
    def _config(opt):
        """What must be equal on every rank besides the layout (collectively compared)."""
        return {
            "optimizer": f"{type(opt).__name__}(impl={opt.impl!r})",
            "hyperparameters": opt.hyper(),
            "parameter groups": [{k: v for k, v in g.items() if k != "params"}
                                 for g in opt.param_groups],
            "options": dict(max_grad_norm=opt.max_grad_norm, skip_nonfinite=opt.skip_nonfinite,
                            state_dtype=opt.state_dtype, min_lowbit_size=opt.min_lowbit_size,
                            seed=opt.seed),
            "schedule": repr(opt.schedule),
            "step count": opt.step_count,
            "epoch": opt.epoch,
        }

    def _describe_and_compare(self, opt):
        desc = {
            "layout": self._params.layout(),
            **self._config(opt),
            "settings": dict(shard_state=self.shard_state, deterministic=self.deterministic,
                             bucket_size=self.bucket_size, align=self.align,
                             check_every=self.check_every, overlap=self.overlap,
                             bucket_bytes=self.bucket_bytes, wire_dtype=self.wire_dtype,
                             error_feedback=self.error_feedback, transport=self.transport),
        }
        everyone = self._comm.allgather(desc)
        problems = []
        for r, d in enumerate(everyone[1:], 1):
            for key, v0 in everyone[0].items():
                if d.get(key) != v0:
                    problems.append(f"{key}: rank 0 has {self._diff(v0, d.get(key))[0]}, "
                                    f"rank {r} has {self._diff(v0, d.get(key))[1]}")
        if problems:
            shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more differences"
                                               if len(problems) > 6 else "")
            raise DistributedError(f"the ranks' models or optimizers differ, so they cannot "
                                   f"train together: {shown}")

    @staticmethod
    def _diff(a, b):
        """The first entries where two layouts differ, or the two values."""
        if (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and a[:-1] == b[:-1] and isinstance(a[-1], list) and isinstance(b[-1], list)):
            la, lb = a[-1], b[-1]
            for i in range(max(len(la), len(lb))):
                x = la[i] if i < len(la) else "(nothing)"
                y = lb[i] if i < len(lb) else "(nothing)"
                if x != y:
                    return f"entry {i} = {_short(x)} of {len(la)}", f"{_short(y)} of {len(lb)}"
        return _short(a), _short(b)

    def _setup_groups(self):
        ps = self._params
        if ps.flat is not None:
            fp = ps.flat
            g = _Group([0], [fp.data.shape], fp.dtype)
            g.pbuf, g.gbuf = fp.data, fp.grad
            self._groups = [g]
        else:
            self._groups = []
            for dt in (np.float32, np.float64):
                index = [i for i, p in enumerate(ps) if p.dtype == dt]
                if index:
                    g = _Group(index, [ps[i].shape for i in index], dt)
                    g.gbuf = np.zeros(g.n, dt)
                    if self.shard_state:
                        g.pbuf = np.zeros(g.n, dt)
                    self._groups.append(g)
            # the wrapped optimizer (plain mode) steps on views of the flat gradient buffers
            self._grad_views = ps.pack(self._unflatten([g.gbuf for g in self._groups]))
        for g in self._groups:
            g.bounds = shard_bounds(g.n, self.size, self.align)
            if self.shard_state:
                cuts = self._norm.cuts(g.dtype)
                edges = [0] + [_part.snap(cuts, hi) for _, hi in g.bounds[:-1]] + [g.n]
                g.bounds = list(zip(edges[:-1], edges[1:]))
            lo, hi = g.bounds[self.rank]
            step = self.bucket_size or max(g.n, 1)
            g.buckets = [(b, min(b + step, g.n)) for b in range(0, g.n, step)]
            if self.shard_state or self.deterministic:
                g.red = np.zeros(hi - lo, g.dtype)
            if self.deterministic or (self.shard_state and not self.overlap):
                # (the exchange of _reduce_slices: a row per other rank)
                widest = max((max(pieces(b0, b1, g.bounds)[0]) for b0, b1 in g.buckets),
                             default=0)
                g.recv = np.zeros((self.size - 1, widest), g.dtype)

    def _check_overlap(self, optimizer, overlap, bucket_bytes, wire_dtype, error_feedback,
                       transport):
        """The overlap and wire options, checked (before anything is communicated)."""
        self._overlap = _check.flag("overlap", overlap)
        self._error_feedback = _check.flag("error_feedback", error_feedback)
        if bucket_bytes is not None:
            bucket_bytes = _check.integer("bucket_bytes", bucket_bytes, 1)
        self._bucket_bytes = bucket_bytes
        if not isinstance(wire_dtype, str):
            raise TypeError(f"wire_dtype must be a str, one of {WIRE_DTYPES}, "
                            f"got {type(wire_dtype).__name__}")
        if wire_dtype not in WIRE_DTYPES:
            raise ValueError(f"wire_dtype must be one of {WIRE_DTYPES}, got {wire_dtype!r}")
        self._wire_dtype = wire_dtype
        if self.shard_state and wire_dtype != "native":
            raise ValueError("wire_dtype='bfloat16' needs shard_state=False (ZeRO-1 keeps its "
                             "float32 reduce-scatter)")
        if self.error_feedback and wire_dtype != "bfloat16":
            raise ValueError("error_feedback=True needs wire_dtype='bfloat16' (there is no "
                             "rounding to feed back otherwise)")
        if not isinstance(transport, str):
            raise TypeError(f"transport must be a str, 'auto', 'mpi' or 'shared_window', "
                            f"got {type(transport).__name__}")
        if transport not in ("auto", "mpi", "shared_window"):
            raise ValueError(f"transport must be 'auto', 'mpi' or 'shared_window', "
                             f"got {transport!r}")
        self._transport = transport
        if transport == "shared_window" and (self.shard_state or wire_dtype != "native"):
            raise ValueError("transport='shared_window' needs shard_state=False and "
                             "wire_dtype='native'")
        if wire_dtype == "bfloat16" and any(p.dtype != np.float32 for p in optimizer.params):
            raise ValueError("wire_dtype='bfloat16' needs float32 parameters (a float64 "
                             "gradient would lose 45 of its 53 bits)")

    def _setup_reducers(self):
        """The non-blocking bucketed reduction (overlap / bfloat16 wire), on a communicator
        of its own so that no other collective can interleave with its buckets."""
        self._reducers = []
        self._unhook = None
        if self.transport == "auto":
            window = (self.overlap and not self.shard_state and self.wire_dtype == "native"
                      and self.size > 1 and self._one_node())
            self._transport = "shared_window" if window else "mpi"
        if not (self.overlap or self.wire_dtype != "native" or self.transport != "mpi"):
            return
        comm = self._watch.guard(self._comm.unguarded.Dup())
        mode = "exchange" if (self.deterministic or self.wire_dtype != "native") else "allreduce"
        if self.transport == "shared_window":
            mode = "window"
        if self.shard_state:           # ZeRO-1, overlapped: a reduce-scatter per bucket
            mode = "exchange"
        # where each parameter starts in its group's flat buffer (FlatParams: its entries)
        self._where = {}
        for gi, g in enumerate(self._groups):
            if self.flat is not None:
                names = list(self.flat.shapes)
                offsets = [self.flat.slice(k).start for k in names] + [g.n]
                self._where = {k: (0, j) for j, k in enumerate(names)}
            else:
                offsets = g.offsets
                keys = self._params.keys
                for j, i in enumerate(g.index):
                    self._where[keys[i] if keys is not None else i] = (gi, j)
            self._reducers.append(BucketReducer(
                comm, self._watch, g.gbuf, offsets, mode=mode, wire_dtype=self.wire_dtype,
                bucket_bytes=self.bucket_bytes or DEFAULT_BUCKET_BYTES,
                error_feedback=self.error_feedback, align=self.align,
                bounds=g.bounds if self.shard_state else None,
                scatter_into=g.red if self.shard_state else None))
        if self.overlap and self.flat is not None:
            self._unhook = self.flat.add_grad_hook(self._on_grads_ready)

    def _one_node(self):
        """Every rank of the communicator on one node (collective; the same answer on every
        rank: on several nodes, every rank's node group is smaller than the communicator)."""
        node = self._comm.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)
        try:
            return node.Get_size() == self.size
        finally:
            node.Free()

    def _on_grads_ready(self, names):
        """The FlatParams hook: ``names`` (a layer's parameters) checked, then handed to the
        reducer in one call."""
        if len(names) == 1:
            self.ready(names[0])
            return
        js = []
        for name in names:
            gi, j = self._locate(name)
            if j in js:
                raise ValueError(f"grads_ready(): {name!r} is named twice")
            js.append(j)
        self._reducers[0].ready(*js)

    def _unflatten(self, per_group):
        """One flat buffer per dtype group -> views shaped like params, in their order."""
        out = [None] * len(self._params)
        for g, buf in zip(self._groups, per_group):
            for i, v in zip(g.index, g.split(buf)):
                out[i] = v
        return out

    def _shard_optimizer(self, opt):
        """An optimizer of ``opt``'s class and configuration over this rank's slices: each
        element in its group, state format, int8 block and bfloat16 rounding index
        (:func:`fastopt.optim.part.part`)."""
        views, grads, sizes = [], [], [{} for _ in range(self.size)]
        for g in self._groups:
            for r, (lo, hi) in enumerate(g.bounds):
                mine = _part.pieces(self._extents, g.dtype, lo, hi)
                for e, a, b in mine:
                    for kind, (dt, n) in _part.piece_sizes(e, b - a).items():
                        sizes[r][kind] = sizes[r].get(kind, 0) + n
                if r != self.rank:
                    continue
                if not mine:          # (an empty piece keeps the dtype present)
                    views.append((None, lo, g.pbuf[lo:lo]))
                    grads.append(g.red[:0])
                for e, a, b in mine:
                    views.append((e, a, g.pbuf[a:b]))
                    grads.append(g.red[a - lo:b - lo])
        shard = _part.part(opt, views)
        self._shard_grads = shard.params.pack(grads)
        # the state dicts' streams: the whole optimizer's layout, this rank's, every rank's lengths
        self._whole_layout = _part.StateLayout(opt)
        self._layout = _part.StateLayout(shard)
        self._stream_counts = {kind: [sizes[r].get(kind, 0) for r in range(self.size)]
                               for kind in self._whole_layout.sizes()}
        # the whole optimizer's groups (to rebuild it over the whole model: checkpoints)
        ps = opt.params
        self._whole_members = (None if ps.kind == "list"
                               else [list(g["params"]) for g in opt.param_groups])
        self._whole_entry_groups = list(ps.entry_groups)
        self._setup_norm()
        fresh = (opt.step_count == 0 and opt.skipped_steps == 0
                 and not any(np.any(b) for bufs in opt.state.values()
                             for b in (bufs.values() if isinstance(bufs, Mapping) else bufs)))
        if fresh:
            shard.set_epoch(opt.epoch)
        else:
            # wrapping an optimizer that has stepped (or was loaded): keep its state, sliced
            sd = opt.state_dict()
            streams = self._whole_layout.streams(sd["state"])
            shard.load_state_dict({**sd, "state": self._layout.state(
                {name: {kind: self._my_range(kind, s) for kind, s in per.items()}
                 for name, per in streams.items()})})
        return shard

    def _setup_norm(self):
        """ZeRO-1's clipping norm: this rank's chunks of the reduced gradient, and where each
        chunk's sum lands in the gathered buffer (each rank's sums, then its finiteness flag)."""
        by_dtype = {g.dtype: g for g in self._groups}
        owned = [[] for _ in range(self.size)]
        self._norm_views = []
        for c, (dt, a, b) in enumerate(self._norm.chunks):
            g = by_dtype[dt]
            r = next(r for r, (lo, hi) in enumerate(g.bounds) if lo <= a and b <= hi)
            owned[r].append(c)
            if r == self.rank:
                lo = g.bounds[r][0]
                self._norm_views.append(g.red[a - lo:b - lo])
        self._norm_counts = [len(o) + 1 for o in owned]
        self._norm_displs = np.concatenate([[0], np.cumsum(self._norm_counts[:-1])]).tolist()
        self._norm_take = np.empty(len(self._norm.chunks), np.int64)
        for r, o in enumerate(owned):
            self._norm_take[o] = self._norm_displs[r] + np.arange(len(o))
        self._norm_flags = np.array([d + n - 1 for d, n in zip(self._norm_displs,
                                                                  self._norm_counts)])
        self._norm_send = np.zeros(len(self._norm_views) + 1)
        self._norm_recv = np.zeros(sum(self._norm_counts))

    def _my_range(self, kind, stream):
        """This rank's range of a whole state stream of ``kind``."""
        counts = self._stream_counts[kind]
        a = sum(counts[:self.rank])
        return stream[a:a + counts[self.rank]]

    def _like_whole(self, params):
        """An optimizer like the wrapped one (class, configuration, groups with their current
        values) over the whole model ``params``, fresh."""
        opt = self._opt
        if not self.shard_state:
            return opt.like(params)
        ov = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        if self._whole_members is None:       # a list: PyTorch-style groups, by position
            where = self._whole_entry_groups
            spec = [{"params": [p for p, k in zip(params, where) if k == j], **o}
                    for j, o in enumerate(ov)]
            return opt.like(spec if len(spec) > 1 or ov[0] else list(params), groups=None)
        new = opt.like(params, groups=[{**o, "params": list(m)}
                                       for o, m in zip(ov[1:], self._whole_members[1:])])
        if ov[0]:
            new.param_groups[0].update(ov[0])
        return new

    # ------------------------------------------------------------ the optimizer's face
    @property
    def optimizer(self):
        """The optimizer that runs: the wrapped one (plain), or the one over this rank's slices."""
        return self._opt

    @property
    def lr(self):
        return self._opt.lr

    @lr.setter
    def lr(self, value):
        self._opt.lr = value

    @property
    def step_count(self):
        return self._opt.step_count

    @property
    def epoch(self):
        return self._opt.epoch

    @property
    def schedule(self):
        return self._opt.schedule

    def set_epoch(self, epoch):
        """As :meth:`fastopt.optim.Optimizer.set_epoch` (every rank must call it alike)."""
        self._opt.set_epoch(epoch)

    def hyper(self):
        return self._opt.hyper()

    def __getattr__(self, name):
        # hyperparameters (dp.betas, dp.eps, ...) read through to the optimizer
        if name.startswith("_") or "_opt" not in self.__dict__:
            raise AttributeError(name)
        if name in self._opt.hyper():
            return getattr(self._opt, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        opt = self.__dict__.get("_opt")
        if opt is not None and name != "lr" and name in opt.hyper():
            setattr(opt, name, value)     # checked as the optimizer checks it
            return
        if not name.startswith("_") and not hasattr(type(self), name):
            # (Checked would refuse it too; the hint looks among the hyperparameters as well)
            names = {n for n in dir(type(self)) if not n.startswith("_")}
            names.update(opt.hyper() if opt is not None else ())
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} to set{hint}")
        super().__setattr__(name, value)

    @property
    def shard(self):
        """This rank's slice ``(lo, hi)`` of each dtype's flat buffer (a list, one per dtype)."""
        return [g.bounds[self.rank] for g in self._groups]

    def state_bytes(self):
        """Bytes of optimizer state this rank holds."""
        return self._opt.state_nbytes

    # ------------------------------------------------------------ overlap
    @property
    def bucketed(self):
        """True when the gradients go through :mod:`fastopt.distributed.buckets` (``overlap``,
        a bfloat16 wire or the shared window): :meth:`begin_step` then applies."""
        return bool(self._reducers)

    def begin_step(self, weight=None):
        """Announce this rank's ``weight`` for the coming step, before :meth:`ready`.

        With ``overlap=True`` the buckets are scaled and sent during the backward pass, before
        :meth:`step` sees its ``weight``: a weighted step must announce it here, and then
        pass the same value to :meth:`step` (checked).  Without a call, :meth:`ready` assumes
        the mean (``step()`` with no weight).
        """
        if not self._reducers:
            raise ValueError("begin_step() needs overlap=True, wire_dtype='bfloat16' or "
                             "transport='shared_window'")
        if any(r.started for r in self._reducers):
            raise ValueError("begin_step() after ready() or begin_step() in the same step: "
                             "call it once, before the first ready()")
        w = None if weight is None else self._checked_weight(weight)
        for r in self._reducers:
            r.begin(w)

    def ready(self, name, grad=None):
        """The gradient of parameter ``name`` is final for this step: start reducing its buckets.

        Parameters
        ----------
        name : str or int
            A FlatParams entry name, a dict key, or a list index.
        grad : ndarray, optional
            Lists and dicts: the gradient (copied now; :meth:`step` then needs no gradient
            for it).  FlatParams: nothing (it is in the ``grad`` buffer; do not write it
            again before :meth:`step`).

        Buckets start in a fixed order on every rank (see :mod:`fastopt.distributed.buckets`);
        a parameter not marked ready by :meth:`step` is reduced there.  Marking one twice in a
        step is a ValueError.
        """
        gi, j = self._locate(name)
        r = self._reducers[gi]
        if self.flat is not None:
            if grad is not None:
                raise TypeError("ready(name) over a FlatParams takes no gradient (it reads "
                                "the grad buffer)")
        else:
            g = self._groups[gi]
            v = g.split(g.gbuf)[j]
            if not isinstance(grad, np.ndarray) or grad.shape != v.shape or grad.dtype != v.dtype:
                got = (f"{grad.dtype} of shape {grad.shape}" if isinstance(grad, np.ndarray)
                       else type(grad).__name__)
                raise ValueError(f"ready({name!r}, grad): grad is {got}, expected {v.dtype} "
                                 f"of shape {v.shape} like its parameter")
            np.copyto(v, grad)
        r.ready(j)

    def _locate(self, name):
        """``(dtype group, index in it)`` of parameter ``name``, not yet ready this step."""
        if not (self._reducers and self.overlap):
            raise ValueError("ready() needs DataParallel(..., overlap=True)")
        try:
            gi, j = self._where[name]
        except (KeyError, TypeError):
            raise ValueError(f"ready(): {name!r} is not a parameter of this model "
                             f"({', '.join(map(repr, list(self._where)[:8]))}, ...)") from None
        if self._reducers[gi].is_ready(j):
            raise ValueError(f"ready({name!r}) was already called in this step")
        return gi, j

    def detach(self):
        """Remove the FlatParams hook of ``overlap=True`` (the model's backward pass then no
        longer starts reductions; :meth:`ready` still does).  Idempotent."""
        if self._unhook is not None:
            self._unhook()
            self._unhook = None

    def attach(self):
        """Install the FlatParams hook again after :meth:`detach` (``overlap=True`` over a
        FlatParams does at construction).  Idempotent."""
        if not (self.overlap and self._reducers and self.flat is not None):
            raise ValueError("attach() needs overlap=True over a FlatParams")
        if self._unhook is None:
            self._unhook = self.flat.add_grad_hook(self._on_grads_ready)

    @property
    def residuals(self):
        """The bfloat16 rounding residuals kept by ``error_feedback=True`` (one float32 array
        per dtype group, read-only views), or None."""
        if not self.error_feedback:
            return None
        out = []
        for r in self._reducers:
            v = r.residual.view()
            v.flags.writeable = False
            out.append(v)
        return out

    def _checked_weight(self, weight):
        return _check.at_least("weight", weight, 0.0, float32=any(
            g.dtype == np.float32 for g in self._groups))

    # ------------------------------------------------------------ collectives
    def _mpitype(self, dtype):
        dtype = np.dtype(dtype)
        return {"float32": self._mpi.FLOAT, "float64": self._mpi.DOUBLE,
                "uint16": self._mpi.UNSIGNED_SHORT, "uint8": self._mpi.UNSIGNED_CHAR}[dtype.name]

    def broadcast_parameters(self, root=0):
        """Copy rank ``root``'s parameters to every rank (collective)."""
        root = _check.integer("root", root, 0, self.size - 1)
        with self._comm.during("broadcast_parameters"):
            for p in self._params:
                self._comm.Bcast([p.reshape(-1), self._mpitype(p.dtype)], root=root)

    def _bcast_arrays(self, obj, root):
        """``obj`` (rank ``root``'s; dicts, lists and arrays) on every rank: the structure
        pickled, each array sent as bytes (collective)."""
        arrays = []
        skeleton = _hollow(obj, arrays) if self.rank == root else None
        kinds = [(a.shape, a.dtype.str) for a in arrays] if self.rank == root else None
        skeleton, kinds = self._comm.bcast((skeleton, kinds), root=root)
        if self.rank != root:
            arrays = [np.empty(shape, dtype) for shape, dtype in kinds]
        for a in arrays:
            raw = a.reshape(-1).view(np.uint8)
            for b0 in range(0, raw.size, _CHUNK):
                self._comm.Bcast([raw[b0:b0 + _CHUNK], self._mpi.BYTE], root=root)
        return _fill(skeleton, arrays)

    def _reduce_slices(self, g, weighted):
        """Reduce-scatter: ``g.red`` = this rank's slice of the sum, added in rank order
        ``((g0 + g1) + g2) + ...`` (divided by P unless weighted).

        Per bucket, one ``MPI_Alltoallv`` brings this rank the others' pieces of its slice
        (its own piece is read where it is, not sent to itself), and the sum is taken here.
        The exchange only moves bytes, so the bits do not depend on the MPI library's
        algorithms; and on one node Open MPI moves them several times faster than its
        ``MPI_Reduce_scatter`` (16M float32, 2 ranks: about 5x; ``fastopt bench
        --distributed``), and not slower on small buffers, so ZeRO-1 reduces this way with
        or without ``deterministic``.
        """
        comm, mt = self._comm, self._mpitype(g.dtype)
        P, me = self.size, self.rank
        lo, _ = g.bounds[me]
        width = g.recv.shape[1] if g.recv is not None else 0
        for b0, b1 in g.buckets:
            counts, displs = pieces(b0, b1, g.bounds)
            mine = counts[me]
            a = displs[me] + b0 - lo
            out = g.red[a:a + mine] if mine else g.red[:0]
            own = g.gbuf[b0 + displs[me]:b0 + displs[me] + mine]
            if P > 1:
                send, recv = exchange_counts(counts, displs, me, width)
                comm.Alltoallv([g.gbuf[b0:b1], send, mt], [g.recv, recv, mt])
            if mine:
                sum_in_rank_order(out, own, g.recv[:, :mine] if P > 1 else (), me)
        if not weighted and P > 1:
            divide_by_ranks(g.red, P)

    def _allgather(self, g, buf):
        """Every rank's slice of ``buf`` to every rank (in place)."""
        mt = self._mpitype(g.dtype)
        for b0, b1 in g.buckets:
            counts, displs = pieces(b0, b1, g.bounds)
            self._comm.Allgatherv(self._mpi.IN_PLACE, [buf[b0:b1], (counts, displs), mt])

    def _gather_grads(self, grads, skip=()):
        """Lists and dicts: the gradients, checked, into the flat gradient buffers (but for
        the indices in ``skip``, handed over by :meth:`ready`)."""
        ps = self._params
        if grads is None:
            raise TypeError("step(grads) needs the gradients matching params (the optimizer "
                            "is over a list or dict of arrays)")
        if ps.keys is not None:
            if not isinstance(grads, Mapping) or set(grads) != set(ps.keys):
                raise ValueError(f"grads must be a dict with the keys of params {ps.keys}")
            grads = [grads[k] for k in ps.keys]
        elif not isinstance(grads, (list, tuple)) or len(grads) != len(ps):
            raise ValueError(f"grads must be a list of {len(ps)} arrays like params")
        for g in self._groups:
            for i, v in zip(g.index, g.split(g.gbuf)):
                if i in skip:
                    continue
                src = grads[i]
                if not isinstance(src, np.ndarray) or src.shape != v.shape or src.dtype != v.dtype:
                    got = (f"{src.dtype} of shape {src.shape}" if isinstance(src, np.ndarray)
                           else type(src).__name__)
                    raise ValueError(f"grads[{ps.keys[i] if ps.keys else i}] is {got}, "
                                     f"expected {v.dtype} of shape {v.shape} like its parameter")
                np.copyto(v, src)

    def _check_consistent(self, weighting):
        """One small allreduce: do all ranks have the same step count, epoch, hyperparameters,
        options, group values, and weighting (``step(weight=...)`` or not, ``weighting``:
        since the last check, this step included)?"""
        key, sig = self._check_key(weighting)
        with self._comm.during(self._check_what()):
            self._comm.Allreduce(self._mpi.IN_PLACE, sig, op=self._mpi.MAX)
            self._check_verdict(key, sig)

    def _check_start(self, weighting):
        """:meth:`_check_consistent` started non-blocking (``MPI_Iallreduce``): the bucketed
        step computes it while the last buckets are in flight, and waits for it with them
        (:meth:`_check_end`); one synchronization of the ranks fewer than checking first."""
        key, sig = self._check_key(weighting)
        self._reducers[0]._mark("check", None)
        with self._comm.during(self._check_what()):
            request = self._comm.Iallreduce(self._mpi.IN_PLACE, sig, op=self._mpi.MAX)
        return request, key, sig

    def _check_end(self, request, key, sig):
        """Wait for :meth:`_check_start`'s allreduce; DistributedError on every rank if the
        ranks disagree (before the optimizer step: nothing updated)."""
        what = self._check_what()
        with self._watch(what):
            request.Wait()
        with self._comm.during(what):
            self._check_verdict(key, sig)

    def _check_what(self):
        return f"the consistency check before step {self._opt.step_count + 1}"

    def _check_key(self, weighting):
        """This rank's description for the check, and its 16-byte message ``(h, -h)``."""
        opt = self._opt
        steps, weighted, order = weighting
        key = repr((opt.step_count, opt.epoch, sorted(opt.hyper().items()),
                    [sorted((k, v) for k, v in g.items() if k != "params")
                     for g in opt.param_groups],
                    opt.max_grad_norm, opt.skip_nonfinite,
                    f"step(weight=...) in {weighted} of {steps} steps ({order:08x})"))
        h = zlib.crc32(key.encode())
        sig = self._check_sig
        sig[0], sig[1] = h, -h
        return key, sig

    def _check_verdict(self, key, sig):
        """After the MAX-allreduce of every rank's ``(h, -h)``: all equal iff max h = min h
        (the same verdict on every rank); else every rank raises, naming the differences."""
        if sig[0] != -sig[1]:
            keys = self._comm.allgather(key)
            raise DistributedError(
                "the ranks disagree on (step count, epoch, hyperparameters, parameter groups, "
                "max_grad_norm, skip_nonfinite, weighting) before step "
                f"{self._opt.step_count + 1}: e.g. one rank changed lr, skipped a step, or called "
                "step(weight=...) where another called step(): "
                + "; ".join(f"rank {r}: {_short(k, 400)}" for r, k in enumerate(keys)
                            if k != keys[0] or r == 0))

    def step(self, grads=None, *, weight=None):
        """Sum this step's gradients over the ranks and update the parameters, identically everywhere.

        Parameters
        ----------
        grads : list or dict of arrays, optional
            For an optimizer over lists or dicts: this rank's gradients (not modified).
            With a FlatParams: nothing (its ``grad`` buffer is read, and overwritten).
        weight : float, optional
            This rank's weight in the sum.  Default: every rank ``1/P`` (the mean, right when
            every rank's gradient is the mean over the same number of samples).  With uneven
            parts of a global batch of ``n`` samples, pass ``n_rank / n`` so the sum is the
            global batch's mean gradient exactly.  Every rank must pass a weight, or none:
            the consistency check (``check_every``) raises DistributedError on every rank
            otherwise.

        After the step, in plain mode the gradient buffer holds the averaged gradient; in
        sharded mode only this rank's slice of it was reduced (into a separate buffer) and
        the gradient buffer is left as this rank's local, possibly scaled, gradient.
        """
        opt = self._opt
        weighted = weight is not None
        steps, nweighted, order = self._weighting
        weighting = (steps + 1, nweighted + weighted,
                     zlib.crc32(b"w" if weighted else b"m", order))
        check = (self.check_every and opt.step_count % self.check_every == 0
                 and self.size > 1)
        if self._reducers and not self.shard_state:
            # (the check, non-blocking, once the buckets are all launched: see _step_buckets)
            self._step_buckets(grads, weight, weighting if check else None)
            self._weighting = (0, 0, 0) if check else weighting
            return
        t = opt.step_count + 1
        if self._reducers:             # ZeRO-1, overlapped: the buckets' reduce-scatter
            # (the check non-blocking, once every bucket is launched, as in _step_buckets)
            t0 = time.perf_counter()
            self._finish_buckets(grads, weight, t, weighting if check else None)
        else:
            if check:
                self._check_consistent(weighting)
            if self.flat is not None:
                if grads is not None:
                    raise TypeError("this DataParallel reads the FlatParams' grad buffer: call "
                                    "step() with no argument")
            else:
                self._gather_grads(grads)
            if weighted:
                w = self._checked_weight(weight)
                for g in self._groups:
                    np.multiply(g.gbuf, w, out=g.gbuf)
            t0 = time.perf_counter()
        if check:
            weighting = (0, 0, 0)
        comm_time = 0.0
        comm = self._comm
        if not self.shard_state:
            with comm.during(f"the gradient reduction of step {t}"):
                for g in self._groups:
                    if self.deterministic:
                        self._reduce_slices(g, weighted)
                        lo, hi = g.bounds[self.rank]
                        np.copyto(g.gbuf[lo:hi], g.red)
                        self._allgather(g, g.gbuf)
                    else:
                        mt = self._mpitype(g.dtype)
                        for b0, b1 in g.buckets:
                            comm.Allreduce(self._mpi.IN_PLACE, [g.gbuf[b0:b1], mt],
                                           op=self._mpi.SUM)
                        if not weighted and self.size > 1:
                            divide_by_ranks(g.gbuf, self.size)
            t1 = time.perf_counter()
            comm_time += t1 - t0
            if self.flat is not None:
                opt.step()
            else:
                opt.step(self._grad_views)
            t2 = time.perf_counter()
            opt_time = t2 - t1
        else:
            if not self._reducers:
                with comm.during(f"the gradient reduce-scatter of step {t}"):
                    for g in self._groups:
                        self._reduce_slices(g, weighted)
            t1 = time.perf_counter()
            stats = None
            if opt.max_grad_norm is not None or opt.skip_nonfinite:
                with comm.during(f"the gradient norm of step {t}"):
                    stats = self._grad_stats()
            t1b = time.perf_counter()
            if self.flat is None:      # this rank's slice of the parameters, fresh
                for g in self._groups:
                    self._copy_params_in(g)
            opt.step(self._shard_grads, grad_stats=stats)
            t2 = time.perf_counter()
            updated = opt.step_count == t        # (a skipped step is skipped on every rank)
            if updated:
                with comm.during(f"the parameter all-gather of step {t}"):
                    for g in self._groups:
                        self._allgather(g, g.pbuf)
            if self.flat is None and updated:
                for g in self._groups:
                    for i, v in zip(g.index, g.split(g.pbuf)):
                        np.copyto(self._params[i], v)
            t3 = time.perf_counter()
            comm_time += (t1b - t0) + (t3 - t2)
            opt_time = t2 - t1b
        self._weighting = weighting
        tm = self.timings
        tm["communication"] += comm_time
        tm["optimizer"] += opt_time
        tm["steps"] += 1

    def _step_buckets(self, grads, weight, check=None):
        """:meth:`step` with the bucketed reduction (overlap / bfloat16 wire / shared window),
        plain mode; ``check``: the weighting to run the consistency check with, or None.

        The check is started (non-blocking) after every bucket is launched and waited for
        with them: its key is computed while the other ranks' last buckets are in flight, and
        the ranks meet once instead of twice.  A disagreement still raises before the update,
        on every rank (the gradients are reduced by then, as ``overlap=True`` reduces them
        during the backward pass anyway).
        """
        opt = self._opt
        t = opt.step_count + 1
        t0 = time.perf_counter()
        self._finish_buckets(grads, weight, t, check)
        t1 = time.perf_counter()
        self.timings["communication"] += t1 - t0
        if self.flat is not None:
            opt.step()
        else:
            opt.step(self._grad_views)
        self.timings["optimizer"] += time.perf_counter() - t1
        self.timings["steps"] += 1

    def _finish_buckets(self, grads, weight, t, check=None):
        """The gradients of step ``t`` not handed over by :meth:`ready` into the buckets, and
        every bucket reduced (waited for); with ``check`` (a weighting), the consistency
        check started once every bucket is launched and waited for after them."""
        reducers = self._reducers
        started = any(r.started for r in reducers)
        w = None if weight is None else self._checked_weight(weight)
        announced = reducers[0].weight if started else w
        if self.flat is not None:
            if grads is not None:
                raise TypeError("this DataParallel reads the FlatParams' grad buffer: call "
                                "step() with no argument")
        elif grads is not None or not all(r.is_ready(j) for r in reducers
                                          for j in range(len(r.offsets) - 1)):
            self._gather_grads(grads, skip=self._where_ready())
        if not started:
            for r in reducers:
                r.begin(w)
        pending = None
        with self._comm.during(f"the gradient reduction of step {t}"):
            if check is not None:
                for r in reducers:
                    r.launch_all(f"the gradient reduction of step {t} (its last buckets)")
                pending = self._check_start(check)
            for r in reducers:
                r.finish(f"the gradient reduction of step {t} (waiting for its buckets)")
        if pending is not None:
            self._check_end(*pending)
        if announced != w:
            # (the collectives are complete on every rank: refusing leaves no one waiting)
            raise ValueError(f"step(weight={weight!r}) after begin_step(weight={announced!r}): "
                             "the buckets were sent with the announced weight; pass the same")

    def _where_ready(self):
        """Lists and dicts: the indices into params whose gradients ready() copied this step."""
        out = set()
        for gi, (g, r) in enumerate(zip(self._groups, self._reducers)):
            out.update(i for j, i in enumerate(g.index) if r.is_ready(j))
        return out

    def _grad_stats(self):
        """ZeRO-1: (sum of squares, all finite) of the whole reduced gradient, the bits one
        optimizer over the whole model computes: each rank sums the squares of its compiled
        chunks (in double, as the fused step does), one allgather brings every chunk's sum to
        every rank, and they are added in the whole optimizer's order
        (:class:`fastopt.optim.part.NormOrder`)."""
        send = self._norm_send
        for i, v in enumerate(self._norm_views):
            send[i] = ext._optim.sum_of_squares(v, 1)
        # (a finite chunk sum has finite values; else, float64 squares may have overflowed)
        ok = bool(np.isfinite(send[:-1]).all()) or all(bool(np.isfinite(g.red).all())
                                                       for g in self._groups)
        send[-1] = 1.0 if ok else 0.0
        recv = self._norm_recv
        self._comm.Allgatherv([send, self._mpi.DOUBLE],
                              [recv, (self._norm_counts, self._norm_displs), self._mpi.DOUBLE])
        total = self._norm.total(recv[self._norm_take])
        finite = math.isfinite(total) or (self._norm.wide and bool(recv[self._norm_flags].all()))
        return total, finite

    def _copy_params_in(self, g):
        lo, hi = g.bounds[self.rank]
        for k, i in enumerate(g.index):
            o0, o1 = g.offsets[k], g.offsets[k + 1]
            a, b = max(lo, o0), min(hi, o1)
            if a < b:
                g.pbuf[a:b] = self._params[i].reshape(-1)[a - o0:b - o0]

    def zero_grad(self):
        """Zero the gradient buffer (FlatParams only, as the optimizers' ``zero_grad``)."""
        if self.flat is None:
            raise TypeError("zero_grad() needs an optimizer built on a FlatParams")
        self.flat.grad.fill(0.0)

    # ------------------------------------------------------------ checks
    def verify_parameters(self):
        """Check (collectively) that every rank holds bit-identical parameters.

        Returns the CRC-32 of the parameters' bytes; raises DistributedError on every rank
        when they differ, naming the ranks.
        """
        crc = 0
        for p in self._params:
            crc = zlib.crc32(np.ascontiguousarray(p).view(np.uint8).reshape(-1), crc)
        with self._comm.during("verify_parameters"):
            crcs = self._comm.allgather(crc)
        if len(set(crcs)) > 1:
            raise DistributedError("the ranks' parameters differ: CRC-32 by rank "
                                   + ", ".join(f"{r}: {c:08x}" for r, c in enumerate(crcs)))
        return crc

    def average_buffers(self, arrays):
        """Replace each array by its mean over the ranks, summed in rank order, identical everywhere.

        For model state that is not trained by the optimizer, e.g. batch-norm running
        statistics computed from each rank's part of the batch.  Collective; arrays of the
        same shapes and dtypes on every rank.
        """
        arrays = list(arrays)
        comm = self._comm
        with comm.during("average_buffers"):
            for a in arrays:
                flat = np.ascontiguousarray(a).reshape(-1)
                parts = comm.gather(flat, root=0)
                if self.rank == 0:
                    total = parts[0].astype(flat.dtype, copy=True)
                    for p in parts[1:]:
                        if p.shape != flat.shape:
                            total = None
                            break
                        total += p
                    if total is not None:
                        total /= self.size
                else:
                    total = None
                total = comm.bcast(total, root=0)
                if total is None:
                    raise DistributedError("average_buffers: the ranks' arrays have different "
                                           "shapes")
                a[...] = total.reshape(a.shape)

    # ------------------------------------------------------------ state
    def state_dict(self, root=0):
        """The whole optimizer's state_dict, as the wrapped optimizer's would be (collective).

        In sharded mode the slices are gathered.  Returned on rank ``root`` (``None`` on the
        others), or on every rank with ``root=None``.
        """
        everyone = root is None
        root = 0 if everyone else _check.integer("root", root, 0, self.size - 1)
        opt = self._opt
        if not self.shard_state:
            sd = opt.state_dict() if (everyone or self.rank == root) else None
            return sd
        local = opt.state_dict()
        mine = self._layout.streams(local["state"])
        here = everyone or self.rank == root
        full = {}
        with self._comm.during("state_dict"):
            for name in self._whole_layout.names:
                full[name] = {}
                for kind, (dt, total) in self._whole_layout.sizes().items():
                    counts = self._stream_counts[kind]
                    displs = np.concatenate([[0], np.cumsum(counts[:-1])]).tolist()
                    out = np.empty(total, dt) if here else None
                    mt = self._mpitype(dt)
                    send = [mine[name].get(kind, np.zeros(0, dt)), mt]
                    if everyone:
                        self._comm.Allgatherv(send, [out, (counts, displs), mt])
                    else:
                        self._comm.Gatherv(send, [out, (counts, displs), mt] if here else None,
                                           root=root)
                    full[name][kind] = out
        if not here:
            return None
        return {**local, "state": self._whole_layout.state(full)}

    def load_state_dict(self, state_dict, root=0):
        """Load a whole-model state_dict held by rank ``root`` (others may pass None); collective.

        The state_dict is one from :meth:`state_dict`, or from a single optimizer over the
        same model (any world size wrote it), in any state format the optimizer keeps, with
        its parameter groups and counters.  All or nothing on every rank: a bad one raises
        ValueError on every rank and changes nothing.
        """
        root = _check.integer("root", root, 0, self.size - 1)
        with self._comm.during("load_state_dict"):
            problem = sd = streams = None
            if self.rank == root:
                if not isinstance(state_dict, dict) or "state" not in state_dict:
                    problem = ("ValueError: state_dict must be a dict from Optimizer.state_dict() "
                               "or DataParallel.state_dict()")
                elif self.shard_state:
                    try:      # the whole state as streams, to be cut into the slices
                        kind = type(self._opt).__name__
                        if state_dict.get("type") != kind:     # (the optimizer's message)
                            raise ValueError(f"state_dict is for {state_dict.get('type')}, "
                                             f"not {kind}")
                        streams = self._whole_layout.streams(state_dict["state"])
                        sd = {**state_dict, "state": None}
                    except (TypeError, ValueError) as e:
                        problem = f"{type(e).__name__}: {e}"
                else:
                    sd = state_dict
            raise_collectively(self._comm, problem, "load_state_dict", exc=ValueError)
            sd = self._bcast_arrays(sd, root)     # plain: everything; sharded: all but the state
            if self.shard_state:
                sd["state"] = self._layout.state(
                    {name: {kind: self._scatter(streams[name][kind] if streams else None,
                                                kind, dt, root)
                            for kind, (dt, _) in self._whole_layout.sizes().items()}
                     for name in self._whole_layout.names})
            backup = self._opt.state_dict()
            problem = None
            try:
                self._opt.load_state_dict(sd)     # the optimizer's own checks, on every rank
            except (TypeError, ValueError) as e:
                problem = f"{type(e).__name__}: {e}"
            try:
                raise_collectively(self._comm, problem, "load_state_dict", exc=ValueError)
            except ValueError:
                if problem is None:
                    self._opt.load_state_dict(backup)
                raise

    def _scatter(self, full, kind, dtype, root):
        """Rank ``root``'s whole state stream ``full`` of ``kind``: this rank's range (a copy)."""
        counts = self._stream_counts[kind]
        displs = np.concatenate([[0], np.cumsum(counts[:-1])]).tolist()
        mine = np.empty(counts[self.rank], dtype)
        mt = self._mpitype(dtype)
        self._comm.Scatterv([full, (counts, displs), mt] if self.rank == root else None,
                            [mine, mt], root=root)
        return mine

    def close(self):
        """Give the process back the thread count it had before this object (``num_threads``).

        Not collective.  A count set since the constructor is kept; calling it again does
        nothing.  The object stays usable (its steps then run with the restored count).
        ``with DataParallel(...) as dp:`` calls it at the end of the block.
        """
        before, after = self.__dict__.pop("_threads_saved", (None, None))
        if before != after and _threads.num_threads_setting() == after:
            _threads.set_num_threads(before)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        mode = "ZeRO-1" if self.shard_state else "allreduce"
        det = ", deterministic" if self.deterministic else ""
        det += ", overlapped" if self.overlap else ""
        det += f", {self.wire_dtype} wire" if self.wire_dtype != "native" else ""
        det += ", shared window" if self.transport != "mpi" else ""
        return (f"DataParallel({self._opt!r}, rank {self.rank} of {self.size}, {mode}{det})")


def guarded_comm(dp):
    """The communicator ``dp`` makes its collectives through (under its timeout), for the
    distributed checkpoints (package-internal)."""
    return dp._comm


def whole_like(dp, params):
    """An optimizer like ``dp``'s whole one (class, configuration, parameter groups) over the
    whole model ``params``, fresh (package-internal: the distributed checkpoints)."""
    return dp._like_whole(params)
