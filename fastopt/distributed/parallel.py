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
  gradients are reduce-scattered, so each rank receives the sum of its slice only; each rank
  holds the optimizer state of its slice only and updates that slice with the fused kernel;
  then the parameters are all-gathered.  The same bytes cross the network as with an
  allreduce (a reduce-scatter plus an all-gather *is* a ring allreduce), but the optimizer
  state and the optimizer's work per rank are 1/P of the whole.

``deterministic=True`` (either mode) replaces MPI's reduction by an all-to-all exchange of
the slices (which only moves bytes) and a sum in rank order ``((g0 + g1) + g2) + ...`` on the
rank that owns the slice: two runs at the same world size give the same bits, whatever
algorithm the MPI library picks.  In every mode the parameters are bit-identical on all
ranks: each element's sum is computed once, on one rank, and copied to the others (the
plain mode relies on ``MPI_Allreduce`` giving every rank the same result, which the MPI
standard recommends and Open MPI and MPICH do; :meth:`DataParallel.verify_parameters`
checks it).  An elementwise kernel gives the same bits on a slice as on the whole buffer,
so the two modes also agree with each other bit for bit in deterministic mode.
"""

import time
import zlib
from collections.abc import Mapping

import numpy as np

from ..kernels import _check
from ..nn.flat import FlatParams
from ..optim import Optimizer
from ..runtime import threads as _threads
from ..runtime.dispatch import ext
from ._mpi import require_mpi, world
from . import errors as _errors
from .errors import DistributedError, Watchdog, raise_collectively
from .sharding import shard_bounds, use_node_share

__all__ = ["DataParallel"]


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
        self.recv = None                    # deterministic mode: the slices received, by rank
        self.bounds = None
        self.buckets = None

    def split(self, buf):
        """Views of the flat ``buf`` shaped like the group's arrays."""
        return [buf[o:o + s].reshape(shape)
                for o, s, shape in zip(self.offsets, self.sizes, self.shapes)]


def _pieces(b0, b1, bounds):
    """Per rank: how many elements of bucket [b0, b1) fall in its slice, and where (from b0)."""
    counts, displs = [], []
    for lo, hi in bounds:
        a, b = max(lo, b0), min(hi, b1)
        c = max(0, b - a)
        counts.append(c)
        displs.append(a - b0 if c else 0)
    return counts, displs


def _short(v, limit=200):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


class DataParallel:
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
        Sum the gradients in rank order (reproducible bits from run to run).
    bucket_size : int or None, default None
        Elements per collective; None: one collective per dtype for the whole buffer.
        (Bounds the deterministic mode's receive buffer too.)
    align : int or None
        The slices' granularity in elements; default the kernels' block
        (``16384``), so no slice splits a block.
    broadcast : bool, default True
        Start every rank from rank 0's parameters (:meth:`broadcast_parameters`).
    num_threads : "auto", int or None, default "auto"
        "auto": unless a thread count was set (``fastopt.set_num_threads``,
        ``OMP_NUM_THREADS``), use this rank's share of its node's cores
        (:func:`~fastopt.distributed.sharding.node_threads`), so the ranks of a node do not
        oversubscribe it.  An int sets it; None leaves it alone.
    check_every : int, default 1
        Every this many steps, check (one 16-byte allreduce) that all ranks have the same
        step count, epoch and hyperparameters; a mismatch is a DistributedError on every
        rank.  0: only at construction and on loading.
    timeout : float or None, default None
        Abort the job when one of this object's collectives waits longer than this many
        seconds (a rank died, skipped a step, or is stuck): a message and a non-zero exit
        instead of a hang.
    abort_on_exception : bool, default True
        Install :func:`~fastopt.distributed.errors.abort_on_exception`: an uncaught exception
        on any rank ends the whole job instead of leaving the others waiting.

    Raises
    ------
    DistributedError
        On every rank, when the ranks' models (layout, dtypes), optimizers (type,
        hyperparameters, step count, epoch, schedule) or DataParallel settings differ.

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

    def __init__(self, optimizer, comm=None, *, shard_state=False, deterministic=False,
                 bucket_size=None, align=None, broadcast=True, num_threads="auto",
                 check_every=1, timeout=None, abort_on_exception=True):
        mpi = require_mpi()
        comm = world(comm)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastopt optimizer (fastopt.Adam(...), ...), "
                            f"got {type(optimizer).__name__}")
        self._mpi = mpi
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.shard_state = bool(shard_state)
        self.deterministic = bool(deterministic)
        if bucket_size is not None:
            bucket_size = _check.integer("bucket_size", bucket_size, 1)
        self.bucket_size = bucket_size
        block = ext._optim.block_size()
        self.align = block if align is None else _check.integer("align", align, 1)
        self.check_every = _check.integer("check_every", check_every, 0)
        self._watch = Watchdog(comm, timeout)
        if abort_on_exception:
            _errors.abort_on_exception(comm)
        self.timings = {"communication": 0.0, "optimizer": 0.0, "steps": 0}

        self._wrapped = optimizer
        self.flat = optimizer.flat
        self._describe_and_compare(optimizer)

        if num_threads == "auto":
            use_node_share(comm)
        elif num_threads is not None:
            _threads.set_num_threads(num_threads)

        self._setup_groups(optimizer)
        if broadcast:
            self.broadcast_parameters()
        if self.shard_state:
            self._opt = self._shard_optimizer(optimizer)
            self._wrapped = None     # its full-size state is no longer ours to keep
        else:
            self._opt = optimizer
        self._check_sig = np.zeros(2, np.int64)

    # ------------------------------------------------------------ construction
    def _layout(self, opt):
        if opt.flat is not None:
            return ("FlatParams", str(opt.flat.dtype),
                    [(k, tuple(s)) for k, s in opt.flat.shapes.items()])
        params = opt._params
        keys = opt._keys
        kind = "dict" if keys is not None else "list"
        names = keys if keys is not None else list(range(len(params)))
        return (kind, [(k, str(p.dtype), p.shape) for k, p in zip(names, params)])

    def _describe_and_compare(self, opt):
        desc = {
            "layout": self._layout(opt),
            "optimizer": f"{type(opt).__name__}(impl={opt.impl!r})",
            "hyperparameters": opt.hyper(),
            "schedule": repr(opt.schedule),
            "step count": opt.step_count,
            "epoch": opt.epoch,
            "settings": dict(shard_state=self.shard_state, deterministic=self.deterministic,
                             bucket_size=self.bucket_size, align=self.align,
                             check_every=self.check_every),
        }
        everyone = self.comm.allgather(desc)
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

    def _setup_groups(self, opt):
        if opt.flat is not None:
            fp = opt.flat
            g = _Group([0], [fp.data.shape], fp.dtype)
            g.pbuf, g.gbuf = fp.data, fp.grad
            self._groups = [g]
            self._arrays = [fp.data]
        else:
            arrays = list(opt._params)
            self._arrays = arrays
            self._groups = []
            for dt in (np.float32, np.float64):
                index = [i for i, p in enumerate(arrays) if p.dtype == dt]
                if index:
                    g = _Group(index, [arrays[i].shape for i in index], dt)
                    g.gbuf = np.zeros(g.n, dt)
                    if self.shard_state:
                        g.pbuf = np.zeros(g.n, dt)
                    self._groups.append(g)
            # the wrapped optimizer (plain mode) steps on views of the flat gradient buffers
            views = [None] * len(arrays)
            for g in self._groups:
                for i, v in zip(g.index, g.split(g.gbuf)):
                    views[i] = v
            keys = opt._keys
            self._keys = keys
            self._grad_views = dict(zip(keys, views)) if keys is not None else views
        if opt.flat is not None:
            self._keys = None
        for g in self._groups:
            g.bounds = shard_bounds(g.n, self.size, self.align)
            lo, hi = g.bounds[self.rank]
            step = self.bucket_size or max(g.n, 1)
            g.buckets = [(b, min(b + step, g.n)) for b in range(0, g.n, step)]
            if self.shard_state or self.deterministic:
                g.red = np.zeros(hi - lo, g.dtype)
            if self.deterministic:
                widest = max((max(_pieces(b0, b1, g.bounds)[0]) for b0, b1 in g.buckets),
                             default=0)
                g.recv = np.zeros((self.size, widest), g.dtype)

    def _shard_optimizer(self, opt):
        """An optimizer of ``opt``'s class and hyperparameters over this rank's slices."""
        unsupported = [what for what, on in (
            ("max_grad_norm", opt.max_grad_norm is not None),
            ("skip_nonfinite", opt.skip_nonfinite),
            ("parameter groups", len(opt.param_groups) > 1 or len(opt.param_groups[0]) > 1),
            (f"state_dtype={opt.state_dtype!r}", opt.state_dtype != "float32"))
            if on]
        if unsupported:
            # each rank would see only its slice's norm / its slice of the groups
            raise ValueError(f"shard_state=True does not support {', '.join(unsupported)} yet: "
                             "use shard_state=False (the full averaged gradient is clipped and "
                             "checked on every rank)")
        cls = type(opt)
        shard = cls.__new__(cls)
        hyper = opt.hyper()
        lr = hyper.pop("lr")
        views = [g.pbuf[slice(*g.bounds[self.rank])] for g in self._groups]
        Optimizer.__init__(shard, views, opt.schedule if opt.schedule is not None else lr,
                           impl=opt.impl, **hyper)
        shard.set_epoch(opt.epoch)
        if opt.step_count or any(np.any(b) for bufs in opt._states.values() for b in bufs):
            # wrapping an optimizer that has stepped (or was loaded): keep its state, sliced
            sd = opt.state_dict()
            state = {name: [self._flat_state(bufs, g)[slice(*g.bounds[self.rank])].copy()
                            for g in self._groups]
                     for name, bufs in sd["state"].items()}
            shard.load_state_dict({**sd, "state": state})
        return shard

    def _flat_state(self, bufs, g):
        """A state name's buffers (a list, or dict keyed like params) for group ``g``, flat."""
        if isinstance(bufs, Mapping):
            bufs = [bufs[k] for k in self._keys]
        if self.flat is not None:
            return np.asarray(bufs[0]).reshape(-1)
        return np.concatenate([np.asarray(bufs[i]).reshape(-1) for i in g.index]) \
            if g.index else np.zeros(0, g.dtype)

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
        object.__setattr__(self, name, value)

    @property
    def shard(self):
        """This rank's slice ``(lo, hi)`` of each dtype's flat buffer (a list, one per dtype)."""
        return [g.bounds[self.rank] for g in self._groups]

    def state_bytes(self):
        """Bytes of optimizer state this rank holds."""
        return sum(b.nbytes for bufs in self._opt.state.values()
                   for b in (bufs.values() if isinstance(bufs, Mapping) else bufs))

    # ------------------------------------------------------------ collectives
    def _mpitype(self, dtype):
        return self._mpi.FLOAT if dtype == np.float32 else self._mpi.DOUBLE

    def broadcast_parameters(self, root=0):
        """Copy rank ``root``'s parameters to every rank (collective)."""
        root = _check.integer("root", root, 0, self.size - 1)
        with self._watch("broadcast_parameters"):
            for p in self._arrays:
                self.comm.Bcast([p.reshape(-1), self._mpitype(p.dtype)], root=root)

    def _reduce_slices(self, g, weighted):
        """Reduce-scatter: ``g.red`` = this rank's slice of the sum (divided by P unless weighted)."""
        comm, mt = self.comm, self._mpitype(g.dtype)
        lo, _ = g.bounds[self.rank]
        for b0, b1 in g.buckets:
            counts, displs = _pieces(b0, b1, g.bounds)
            mine = counts[self.rank]
            a = displs[self.rank] + b0 - lo
            out = g.red[a:a + mine] if mine else g.red[:0]
            if self.deterministic:
                recv = g.recv[:, :mine]
                comm.Alltoallv([g.gbuf[b0:b1], (counts, displs), mt],
                               [g.recv, ([mine] * self.size,
                                         [r * g.recv.shape[1] for r in range(self.size)]), mt])
                if mine:
                    np.copyto(out, recv[0])
                    for r in range(1, self.size):
                        np.add(out, recv[r], out=out)
            else:
                comm.Reduce_scatter([g.gbuf[b0:b1], mt], [out, mt], recvcounts=counts,
                                    op=self._mpi.SUM)
        if not weighted and self.size > 1:
            np.divide(g.red, self.size, out=g.red)

    def _allgather(self, g, buf):
        """Every rank's slice of ``buf`` to every rank (in place)."""
        mt = self._mpitype(g.dtype)
        for b0, b1 in g.buckets:
            counts, displs = _pieces(b0, b1, g.bounds)
            self.comm.Allgatherv(self._mpi.IN_PLACE, [buf[b0:b1], (counts, displs), mt])

    def _gather_grads(self, grads):
        """Lists and dicts: the gradients, checked, into the flat gradient buffers."""
        if grads is None:
            raise TypeError("step(grads) needs the gradients matching params (the optimizer "
                            "is over a list or dict of arrays)")
        if self._keys is not None:
            if not isinstance(grads, Mapping) or set(grads) != set(self._keys):
                raise ValueError(f"grads must be a dict with the keys of params {self._keys}")
            grads = [grads[k] for k in self._keys]
        elif not isinstance(grads, (list, tuple)) or len(grads) != len(self._arrays):
            raise ValueError(f"grads must be a list of {len(self._arrays)} arrays like params")
        for g in self._groups:
            for i, v in zip(g.index, g.split(g.gbuf)):
                src = grads[i]
                if not isinstance(src, np.ndarray) or src.shape != v.shape or src.dtype != v.dtype:
                    got = (f"{src.dtype} of shape {src.shape}" if isinstance(src, np.ndarray)
                           else type(src).__name__)
                    raise ValueError(f"grads[{self._keys[i] if self._keys else i}] is {got}, "
                                     f"expected {v.dtype} of shape {v.shape} like its parameter")
                np.copyto(v, src)

    def _check_consistent(self):
        """One small allreduce: do all ranks have the same step count, epoch and hyperparameters?"""
        opt = self._opt
        key = repr((opt.step_count, opt.epoch, sorted(opt.hyper().items())))
        h = zlib.crc32(key.encode())
        sig = self._check_sig
        sig[0], sig[1] = h, -h
        with self._watch(f"the consistency check before step {opt.step_count + 1}"):
            self.comm.Allreduce(self._mpi.IN_PLACE, sig, op=self._mpi.MAX)
        if sig[0] != -sig[1]:
            keys = self.comm.allgather(key)
            raise DistributedError(
                "the ranks disagree on (step count, epoch, hyperparameters) before step "
                f"{opt.step_count + 1}, e.g. one rank changed lr or skipped a step: "
                + "; ".join(f"rank {r}: {_short(k, 300)}" for r, k in enumerate(keys)
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
            global batch's mean gradient exactly.

        After the step, in plain mode the gradient buffer holds the averaged gradient; in
        sharded mode only this rank's slice of it was reduced (into a separate buffer) and
        the gradient buffer is left as this rank's local, possibly scaled, gradient.
        """
        opt = self._opt
        if self.check_every and opt.step_count % self.check_every == 0 and self.size > 1:
            self._check_consistent()
        if self.flat is not None:
            if grads is not None:
                raise TypeError("this DataParallel reads the FlatParams' grad buffer: call "
                                "step() with no argument")
        else:
            self._gather_grads(grads)
        weighted = weight is not None
        if weighted:
            w = _check.at_least("weight", weight, 0.0, float32=any(
                g.dtype == np.float32 for g in self._groups))
            for g in self._groups:
                np.multiply(g.gbuf, w, out=g.gbuf)
        t0 = time.perf_counter()
        t = opt.step_count + 1
        comm_time = 0.0
        if not self.shard_state:
            with self._watch(f"the gradient reduction of step {t}"):
                for g in self._groups:
                    if self.deterministic:
                        self._reduce_slices(g, weighted)
                        lo, hi = g.bounds[self.rank]
                        np.copyto(g.gbuf[lo:hi], g.red)
                        self._allgather(g, g.gbuf)
                    else:
                        mt = self._mpitype(g.dtype)
                        for b0, b1 in g.buckets:
                            self.comm.Allreduce(self._mpi.IN_PLACE, [g.gbuf[b0:b1], mt],
                                                op=self._mpi.SUM)
                        if not weighted and self.size > 1:
                            np.divide(g.gbuf, self.size, out=g.gbuf)
            t1 = time.perf_counter()
            comm_time += t1 - t0
            if self.flat is not None:
                opt.step()
            else:
                opt.step(self._grad_views)
            t2 = time.perf_counter()
            opt_time = t2 - t1
        else:
            with self._watch(f"the gradient reduce-scatter of step {t}"):
                for g in self._groups:
                    self._reduce_slices(g, weighted)
            t1 = time.perf_counter()
            if self.flat is None:      # this rank's slice of the parameters, fresh
                for g in self._groups:
                    self._copy_params_in(g)
            opt.step([g.red for g in self._groups])
            t2 = time.perf_counter()
            with self._watch(f"the parameter all-gather of step {t}"):
                for g in self._groups:
                    self._allgather(g, g.pbuf)
            if self.flat is None:
                for g in self._groups:
                    for i, v in zip(g.index, g.split(g.pbuf)):
                        np.copyto(self._arrays[i], v)
            t3 = time.perf_counter()
            comm_time += (t1 - t0) + (t3 - t2)
            opt_time = t2 - t1
        tm = self.timings
        tm["communication"] += comm_time
        tm["optimizer"] += opt_time
        tm["steps"] += 1

    def _copy_params_in(self, g):
        lo, hi = g.bounds[self.rank]
        for k, i in enumerate(g.index):
            o0, o1 = g.offsets[k], g.offsets[k + 1]
            a, b = max(lo, o0), min(hi, o1)
            if a < b:
                g.pbuf[a:b] = self._arrays[i].reshape(-1)[a - o0:b - o0]

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
        for p in self._arrays:
            crc = zlib.crc32(np.ascontiguousarray(p).view(np.uint8).reshape(-1), crc)
        crcs = self.comm.allgather(crc)
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
        for a in arrays:
            flat = np.ascontiguousarray(a).reshape(-1)
            parts = self.comm.gather(flat, root=0)
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
            total = self.comm.bcast(total, root=0)
            if total is None:
                raise DistributedError("average_buffers: the ranks' arrays have different shapes")
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
        full = {}
        for name, bufs in local["state"].items():
            per_group = []
            for g, mine in zip(self._groups, bufs):
                counts = [hi - lo for lo, hi in g.bounds]
                displs = [lo for lo, _ in g.bounds]
                out = np.empty(g.n, g.dtype) if (everyone or self.rank == root) else None
                mt = self._mpitype(g.dtype)
                with self._watch("state_dict"):
                    if everyone:
                        self.comm.Allgatherv([mine, mt], [out, (counts, displs), mt])
                    else:
                        self.comm.Gatherv([mine, mt], [out, (counts, displs), mt] if out is not None
                                          else None, root=root)
                per_group.append(out)
            full[name] = per_group
        if not (everyone or self.rank == root):
            return None
        state = {}
        for name, per_group in full.items():
            if self.flat is not None:
                state[name] = [per_group[0]]
                continue
            arrays = [None] * len(self._arrays)
            for g, buf in zip(self._groups, per_group):
                for i, v in zip(g.index, g.split(buf)):
                    arrays[i] = v
            state[name] = dict(zip(self._keys, arrays)) if self._keys is not None else arrays
        return {**local, "state": state}

    def load_state_dict(self, state_dict, root=0):
        """Load a whole-model state_dict held by rank ``root`` (others may pass None); collective.

        The state_dict is one from :meth:`state_dict`, or from a single optimizer over the
        same model (any world size wrote it).  All or nothing on every rank: a bad one
        raises on every rank and changes nothing.
        """
        root = _check.integer("root", root, 0, self.size - 1)
        flat_state, meta, problem = None, None, None
        if self.rank == root:
            try:
                flat_state, meta = self._normalize(state_dict)
            except (TypeError, ValueError, KeyError) as e:
                problem = f"{type(e).__name__}: {e}"
        raise_collectively(self.comm, problem, "load_state_dict", exc=ValueError)
        meta = self.comm.bcast(meta, root=root)
        local_state = {}
        for name in meta["names"]:
            per_group = []
            for gi, g in enumerate(self._groups):
                mt = self._mpitype(g.dtype)
                src = flat_state[name][gi] if self.rank == root else None
                if self.shard_state:
                    lo, hi = g.bounds[self.rank]
                    mine = np.empty(hi - lo, g.dtype)
                    counts = [b - a for a, b in g.bounds]
                    displs = [a for a, _ in g.bounds]
                    self.comm.Scatterv([src, (counts, displs), mt] if src is not None else None,
                                       [mine, mt], root=root)
                else:
                    mine = src if src is not None else np.empty(g.n, g.dtype)
                    self.comm.Bcast([mine, mt], root=root)
                per_group.append(mine)
            if self.shard_state:
                local_state[name] = per_group
            else:
                arrays = [None] * len(self._arrays)
                for g, buf in zip(self._groups, per_group):
                    for i, v in zip(g.index, g.split(buf)):
                        arrays[i] = v.reshape(self._arrays[i].shape)
                local_state[name] = dict(zip(self._keys, arrays)) if self._keys is not None \
                    else arrays
        sd = {"type": meta["type"], "step": meta["step"], "epoch": meta["epoch"],
              "hyper": meta["hyper"], "state": local_state}
        backup = self._opt.state_dict()
        problem = None
        try:
            self._opt.load_state_dict(sd)
        except (TypeError, ValueError) as e:
            problem = f"{type(e).__name__}: {e}"
        try:
            raise_collectively(self.comm, problem, "load_state_dict", exc=ValueError)
        except ValueError:
            if problem is None:
                self._opt.load_state_dict(backup)
            raise

    def _normalize(self, sd):
        """(per state name, per group: the flat full state; meta) from a whole-model state_dict."""
        if not isinstance(sd, dict) or not {"type", "step", "hyper", "state"} <= set(sd):
            raise ValueError("state_dict must be a dict from Optimizer.state_dict() or "
                             "DataParallel.state_dict()")
        if sd["type"] != type(self._opt).__name__:
            raise ValueError(f"state_dict is for {sd['type']}, not {type(self._opt).__name__}")
        names = list(self._opt._states)
        state = sd["state"]
        if not isinstance(state, dict) or set(state) != set(names):
            raise ValueError(f"state_dict has state {sorted(state) if isinstance(state, dict) else state!r}, "
                             f"expected {sorted(names)}")
        flat = {}
        for name in names:
            bufs = state[name]
            if self._keys is not None:
                if not isinstance(bufs, Mapping) or set(bufs) != set(self._keys):
                    raise ValueError(f"state {name!r} must be a dict with the keys of params")
                bufs = [bufs[k] for k in self._keys]
            if not isinstance(bufs, (list, tuple)) or len(bufs) != len(self._arrays):
                raise ValueError(f"state {name!r} must be a list of {len(self._arrays)} arrays")
            for i, (b, p) in enumerate(zip(bufs, self._arrays)):
                b = np.asarray(b)
                if b.shape != p.shape or b.dtype != p.dtype:
                    raise ValueError(f"state {name}[{i}] has shape {b.shape} and dtype {b.dtype}, "
                                     f"expected {p.shape} and {p.dtype}")
            flat[name] = [np.ascontiguousarray(self._flat_state(bufs, g)) for g in self._groups]
        meta = {"type": sd["type"], "step": sd["step"], "epoch": sd.get("epoch", 1),
                "hyper": sd["hyper"], "names": names}
        return flat, meta

    def __repr__(self):
        mode = "ZeRO-1" if self.shard_state else "allreduce"
        det = ", deterministic" if self.deterministic else ""
        return (f"DataParallel({self._opt!r}, rank {self.rank} of {self.size}, {mode}{det})")
