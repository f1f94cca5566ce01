"""Data-parallel training over MPI (mpi4py), with the optimizer state optionally sharded (ZeRO-1).

Install with ``pip install 'fastopt[mpi]'`` and run under ``mpiexec``::

    mpiexec -n 2 fastopt train --distributed
    mpiexec -n 2 python my_training_script.py

In a script, wrap the optimizer; every rank writes the gradient of its part of the global
mini-batch (:func:`batch_part`) and calls ``step()``::

    from fastopt.distributed import DataParallel, batch_part
    opt = DataParallel(fastopt.Adam(fp, lr=1e-3), shard_state=True)

Importing this package does not import mpi4py; using it does (an ImportError then says what
to install).

``fastopt.train.Trainer(..., strategy=DataParallelStrategy(...))`` runs the library's training
loop this way (what ``fastopt train --distributed`` does), with synchronized batch norm
(:class:`SyncBatchNorm`, :func:`sync_batchnorm`): the ranks train the model one process trains.
With ``micro_batch=k`` (:class:`OrderedMicroBatches`, the default of ``fastopt train
--distributed``) they train it bit for bit: the same bits as one process with ``micro_batch=k``.
"""

from .errors import DistributedError, Watchdog, abort_on_exception, raise_collectively
from .sharding import batch_part, node_threads, shard_bounds, use_node_share
from .parallel import DataParallel
from .checkpoint import load_checkpoint, save_checkpoint
from .syncbn import SyncBatchNorm, SyncStats, sync_batchnorm
from .microbatch import OrderedMicroBatches
from .training import DataParallelStrategy

__all__ = ["DataParallel", "DistributedError", "batch_part", "shard_bounds", "node_threads", "use_node_share",
           "abort_on_exception", "raise_collectively", "Watchdog", "save_checkpoint",
           "load_checkpoint", "DataParallelStrategy", "SyncBatchNorm", "SyncStats",
           "sync_batchnorm", "OrderedMicroBatches"]
