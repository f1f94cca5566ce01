"""Checkpoints of a data-parallel run: gathered and written atomically by rank 0, loadable anywhere.

The file is an ordinary :func:`fastopt.save_checkpoint` file (same format): the whole
model's parameters and the whole optimizer state (in sharded mode the slices are gathered
to rank 0 first).  So it loads into any world size: another ``mpiexec -n P`` run, sharded or
not, with :func:`load_checkpoint`, or one process with :func:`fastopt.load_checkpoint`.

Every collective runs under the DataParallel's ``timeout``: a rank that never arrives
ends the job instead of hanging the others.

Examples
--------
Under ``mpiexec -n 2``::

    opt = DataParallel(fastopt.Adam(fp, lr=1e-3), shard_state=True)
    ...
    save_checkpoint("ckpt.npz", fp, opt, epoch=3)      # every rank calls it; rank 0 writes

and later, with one process::

    fp = fastopt.FlatParams(shapes); opt = fastopt.Adam(fp, lr=1e-3)
    fastopt.load_checkpoint("ckpt.npz", fp, opt)       # the same state, unsharded
"""

import numpy as np

from ..nn.flat import FlatParams
from ..train import checkpoint as _single
from ..train.checkpoint import CheckpointError
from .errors import raise_collectively
from .parallel import DataParallel, guarded_comm, whole_like

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


def _check_args(params, dp):
    if not isinstance(params, FlatParams):
        raise TypeError(f"params must be a FlatParams, got {type(params).__name__}")
    if not isinstance(dp, DataParallel):
        raise TypeError(f"optimizer must be a fastopt.distributed.DataParallel, got "
                        f"{type(dp).__name__} (for one process use fastopt.save_checkpoint)")
    if dp.flat is not params:
        raise ValueError("params must be the FlatParams the DataParallel's optimizer was built on")


def save_checkpoint(path, params, optimizer, *, root=0, **extra):
    """Write the whole model and optimizer state to ``path`` from rank ``root`` (collective).

    Every rank calls it with the same arguments; the optimizer state is gathered to
    ``root``, which writes the file atomically (a temporary file renamed over the old one),
    as :func:`fastopt.save_checkpoint`.  ``extra`` values are taken from ``root``.  An error
    while writing (disk full, permissions) is raised on every rank.
    """
    _check_args(params, optimizer)
    comm = guarded_comm(optimizer)
    with comm.during(f"save_checkpoint({str(path)!r})"):
        # in sharded mode the slices, gathered; in plain mode root's optimizer has it all
        sd = optimizer.state_dict(root=root) if optimizer.shard_state else None
        problem = None
        if comm.Get_rank() == root:
            try:
                whole = optimizer.optimizer
                if sd is not None:      # the same class and configuration over the whole model
                    whole = whole_like(optimizer, params)
                    whole.load_state_dict(sd)
                    sd = None           # (copied: one full-size state on root at a time)
                _single.save_checkpoint(path, params, whole, **extra)
            except (OSError, TypeError, ValueError) as e:
                problem = f"{type(e).__name__}: {e}"
        raise_collectively(comm, problem, f"save_checkpoint({str(path)!r})",
                           exc=CheckpointError)


def load_checkpoint(path, params, optimizer, *, check=None, root=0):
    """Restore ``params`` and the DataParallel ``optimizer`` from ``path``; return the extras.

    Collective.  Rank ``root`` reads and checks the file (any checkpoint of
    :func:`save_checkpoint` or :func:`fastopt.save_checkpoint`, written at any world size);
    the parameters are broadcast and the optimizer state scattered (sharded) or broadcast,
    with its parameter groups and counters, in any state format.  All or nothing on every
    rank: a missing, corrupt or unfitting file raises the same error on every rank
    (FileNotFoundError or :class:`CheckpointError`) and changes nothing.

    ``check(extras)`` runs on ``root`` before anything changes, as for
    :func:`fastopt.load_checkpoint`; the extras are then returned on every rank.
    """
    _check_args(params, optimizer)
    comm = guarded_comm(optimizer)
    rank = comm.Get_rank()
    with comm.during(f"load_checkpoint({str(path)!r})"):
        problem = kind = None
        tmp = sd = extras = None
        if rank == root:
            try:
                # the file, checked by the single-process loader into an optimizer of the
                # same class and configuration over a scratch copy of the model
                tmp = FlatParams(params.shapes, dtype=params.dtype)
                whole = whole_like(optimizer, tmp)
                extras = _single.load_checkpoint(path, tmp, whole, check=check)
                sd = whole.state_dict()
                del whole
            except FileNotFoundError as e:
                problem, kind = str(e), "missing"
            except CheckpointError as e:
                problem, kind = str(e), "bad"
        kind = comm.bcast(kind, root=root)
        raise_collectively(comm, problem, "load_checkpoint",
                           exc=FileNotFoundError if kind == "missing" else CheckpointError)
        try:
            optimizer.load_state_dict(sd, root=root)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this optimizer: "
                                  f"{e}") from None
        if rank == root:
            np.copyto(params.data, tmp.data)
        del tmp
        optimizer.broadcast_parameters(root=root)
        return comm.bcast(extras, root=root)
