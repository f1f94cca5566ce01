"""The trainer's data-parallel strategy: :class:`fastopt.train.Trainer` on every MPI rank.

Every rank builds the same trainer (same arguments and seed: the same model, data and
shuffling); each trains on its rows of every global batch (:func:`batch_part`), and
:class:`DataParallel` averages the gradients, so ``P`` ranks train on the same batches as one
process.  With ``sync_bn=True`` (the default) the model's batch-norm layers are synchronized
(:func:`~fastopt.distributed.sync_batchnorm`): they normalize with the whole global batch's
statistics, so the ranks train the model one process trains (to float32 rounding).  Under
``mpiexec -n 2``::

    from fastopt.distributed import DataParallelStrategy
    from fastopt.train import Trainer
    trainer = Trainer(optimizer="adam", epochs=5, strategy=DataParallelStrategy(shard_state=True))
    trainer.fit()
    trainer.save("ckpt.npz")        # collective: rank 0 writes the whole state
"""

from ..kernels import _check
from ..kernels._attrs import Checked, fixed
from .checkpoint import load_checkpoint, save_checkpoint
from .microbatch import OrderedMicroBatches
from .parallel import DataParallel
from .sharding import batch_part
from .syncbn import sync_batchnorm

__all__ = ["DataParallelStrategy"]


class DataParallelStrategy(Checked):
    """How :class:`fastopt.train.Trainer` trains over MPI ranks (see the module docstring).

    Parameters
    ----------
    sync_bn : bool, default True
        Synchronized batch norm (see the module docstring).  False: each rank's batch norm
        normalizes with its own rows (PyTorch's ``DistributedDataParallel`` without
        ``SyncBatchNorm``), and the running statistics are averaged after each epoch.
    **options
        :class:`DataParallel`'s keyword arguments (``comm``, ``shard_state``,
        ``deterministic``, ``timeout``, ...), checked by it when the trainer wraps its
        optimizer; the batch-norm synchronization uses the same ``comm``, ``deterministic``
        and ``timeout``.

    Attributes
    ----------
    data_parallel : DataParallel or None
        The wrapper of the trainer's optimizer (None until a trainer uses this strategy).
    sync_bn : bool
        As given.
    sync_stats : SyncStats or None
        The model's batch-norm synchronization (None until a trainer's model is prepared,
        or without ``sync_bn``).
    rank, size : int
        This rank and the number of ranks.
    options : dict
        The keyword arguments for :class:`DataParallel`, as given (a copy).

    None of them can be set (AttributeError: a trainer's wrapper and synchronization are
    built from them; construct a new DataParallelStrategy), nor any other name.
    """

    sync_bn = fixed("sync_bn", "Synchronized batch norm.",
                    "the model's batch norm is set up from it; construct a new "
                    "DataParallelStrategy")
    sync_stats = fixed("sync_stats", "The batch-norm synchronization, or None.",
                       "it is built by prepare_model()", "_sync")
    data_parallel = fixed("data_parallel", "The wrapper of the trainer's optimizer, or None.",
                          "it is built by wrap()", "_dp")

    @property
    def options(self):
        """:class:`DataParallel`'s keyword arguments, as given (a copy: they cannot be set)."""
        return dict(self._options)

    @options.setter
    def options(self, value):
        raise AttributeError("DataParallelStrategy.options cannot be set: the trainer's "
                             "DataParallel is built from them; construct a new "
                             "DataParallelStrategy")

    def __init__(self, *, sync_bn=True, **options):
        self._sync_bn = _check.flag("sync_bn", sync_bn)
        self._options = options
        self._dp = None
        self._sync = None
        self._micro = None

    def _wrapped(self):
        if self._dp is None:
            raise RuntimeError("this DataParallelStrategy serves no trainer yet")
        return self._dp

    @property
    def rank(self):
        return self._wrapped().rank

    @rank.setter
    def rank(self, value):
        raise AttributeError("DataParallelStrategy.rank cannot be set: it is the communicator's")

    @property
    def size(self):
        return self._wrapped().size

    @size.setter
    def size(self, value):
        raise AttributeError("DataParallelStrategy.size cannot be set: it is the communicator's")

    def wrap(self, optimizer):
        """A :class:`DataParallel` around ``optimizer`` (collective), which the trainer steps."""
        if self._dp is not None:
            raise RuntimeError("a DataParallelStrategy serves one trainer: make one per trainer")
        self._dp = DataParallel(optimizer, **self._options)
        return self._dp

    def prepare_model(self, model):
        """Synchronize ``model``'s batch-norm layers (``model.bns``) with ``sync_bn`` (collective)."""
        dp = self._wrapped()
        if self._sync_bn:
            self._sync = sync_batchnorm(model.bns, dp.comm, deterministic=dp.deterministic,
                                        timeout=self._options.get("timeout"))

    def micro_batches(self, size):
        """The trainer's ordered reduction for ``Trainer(micro_batch=size)`` (collective):
        an :class:`OrderedMicroBatches` on the wrapper's communicator and timeout.  Not
        with a bfloat16 wire (its rounding is not one process's)."""
        dp = self._wrapped()
        if dp.wire_dtype != "native":
            raise ValueError(f"micro_batch (ordered reduction) needs the native wire, not "
                             f"wire_dtype={dp.wire_dtype!r}: bfloat16 rounding would change "
                             "the bits one process computes")
        if self._micro is not None:
            raise RuntimeError("a DataParallelStrategy serves one trainer: make one per trainer")
        self._micro = OrderedMicroBatches(size, dp.comm, timeout=self._options.get("timeout"))
        return self._micro

    def trains(self, n):
        """Whether a global batch of ``n`` samples is trained: batch norm needs 2 samples, on
        every rank unless synchronized (then in the whole batch, and a row on every rank)."""
        dp = self._wrapped()
        if self._sync_bn:
            return n >= max(2, dp.size)
        return n // dp.size >= 2

    def local_rows(self, n):
        """This rank's rows of a global batch of ``n`` samples (:func:`batch_part`)."""
        dp = self._wrapped()
        return batch_part(n, dp.rank, dp.size)

    def begin_step(self, optimizer, n_local, n_global):
        """Before the backward pass: with ``overlap=True`` or a bfloat16 wire, announce this
        rank's weight ``n_local / n_global`` (:meth:`DataParallel.begin_step`), so the
        buckets the backward pass starts are scaled as :meth:`step` will ask."""
        dp = self._wrapped()
        if dp.bucketed:
            dp.begin_step(weight=n_local / n_global)

    def step(self, optimizer, n_local, n_global):
        """Step with this rank's gradient weighted ``n_local / n_global``: the sum over the
        ranks is the global batch's mean gradient."""
        optimizer.step(weight=n_local / n_global)

    def average(self, arrays):
        """Each array replaced by its mean over the ranks (:meth:`DataParallel.average_buffers`)."""
        self._wrapped().average_buffers(arrays)

    def communication_time(self):
        """Seconds the wrapper (and the batch-norm synchronization) spent in collectives so far."""
        extra = self._sync.seconds if self._sync is not None else 0.0
        extra += self._micro.seconds if self._micro is not None else 0.0
        return self._wrapped().timings["communication"] + extra

    def save_checkpoint(self, path, params, optimizer, **extras):
        """:func:`fastopt.distributed.save_checkpoint` (collective; rank 0 writes)."""
        save_checkpoint(path, params, optimizer, **extras)

    def load_checkpoint(self, path, params, optimizer, *, check):
        """:func:`fastopt.distributed.load_checkpoint` (collective): rank 0 reads and runs
        ``check(extras)`` before anything changes; every rank returns the extras."""
        return load_checkpoint(path, params, optimizer, check=check)
