"""The trainer's data-parallel strategy: :class:`fastopt.train.Trainer` on every MPI rank.

Every rank builds the same trainer (same arguments and seed: the same model, data and
shuffling); each trains on its rows of every global batch (:func:`batch_part`), and
:class:`DataParallel` averages the gradients, so ``P`` ranks train on the same batches as one
process.  Under ``mpiexec -n 2``::

    from fastopt.distributed import DataParallelStrategy
    from fastopt.train import Trainer
    trainer = Trainer(optimizer="adam", epochs=5, strategy=DataParallelStrategy(shard_state=True))
    trainer.fit()
    trainer.save("ckpt.npz")        # collective: rank 0 writes the whole state
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .parallel import DataParallel
from .sharding import batch_part

__all__ = ["DataParallelStrategy"]


class DataParallelStrategy:
    """How :class:`fastopt.train.Trainer` trains over MPI ranks (see the module docstring).

    Parameters
    ----------
    **options
        :class:`DataParallel`'s keyword arguments (``comm``, ``shard_state``,
        ``deterministic``, ``timeout``, ...), checked by it when the trainer wraps its
        optimizer.

    Attributes
    ----------
    data_parallel : DataParallel or None
        The wrapper of the trainer's optimizer (None until a trainer uses this strategy).
    rank, size : int
        This rank and the number of ranks.
    """

    def __init__(self, **options):
        self._options = options
        self._dp = None

    @property
    def data_parallel(self):
        return self._dp

    def _wrapped(self):
        if self._dp is None:
            raise RuntimeError("this DataParallelStrategy serves no trainer yet")
        return self._dp

    @property
    def rank(self):
        return self._wrapped().rank

    @property
    def size(self):
        return self._wrapped().size

    def wrap(self, optimizer):
        """A :class:`DataParallel` around ``optimizer`` (collective), which the trainer steps."""
        if self._dp is not None:
            raise RuntimeError("a DataParallelStrategy serves one trainer: make one per trainer")
        self._dp = DataParallel(optimizer, **self._options)
        return self._dp

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
        """Seconds the wrapper has spent in collectives so far."""
        return self._wrapped().timings["communication"]

    def save_checkpoint(self, path, params, optimizer, **extras):
        """:func:`fastopt.distributed.save_checkpoint` (collective; rank 0 writes)."""
        save_checkpoint(path, params, optimizer, **extras)

    def load_checkpoint(self, path, params, optimizer, *, check):
        """:func:`fastopt.distributed.load_checkpoint` (collective): rank 0 reads and runs
        ``check(extras)`` before anything changes; every rank returns the extras."""
        return load_checkpoint(path, params, optimizer, check=check)
