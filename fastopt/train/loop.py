"""The training loop: data, model, optimizer, epochs, evaluation and checkpoints in one object.

:class:`Trainer` is what ``fastopt train`` and ``fastopt tune`` run, as a library class: it
splits nothing and prints nothing, so a script, the benchmark or a test drives it directly::

    from fastopt.train import Trainer
    trainer = Trainer(optimizer="adam", lr=1e-2, epochs=5, seed=0)
    history = trainer.fit()              # one record per epoch: loss, accuracy, times
    trainer.save("ckpt.npz")             # and later: Trainer(...same arguments...).resume(...)

How the epochs run across processes is the trainer's *strategy*: :class:`SingleProcess` (the
default) trains here; :class:`fastopt.distributed.DataParallelStrategy` trains on every MPI
rank, each on its rows of every global batch.  The trainer calls only the strategy's methods,
so this layer does not import the distributed one (it sits below it).

The same arguments and seed give the same numbers, bit for bit, on every run; a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.

Checkpoints
-----------
:meth:`Trainer.save` writes a :func:`fastopt.save_checkpoint` file whose extras are the
trainer's own state, each under a fixed name:

========================  =====================================================================
``epoch``                 epochs completed
``rng_state``             the shuffling generator's ``bit_generator.state`` (a JSON dict)
``history``               the records of :meth:`Trainer.train_epoch` so far (a JSON list)
``model/<name>``          each entry of the model's ``state_dict()`` under its own name, e.g.
                          ``model/bn1.running_mean``
========================  =====================================================================

Checkpoints of earlier versions of ``fastopt train`` name the model's entries with ``__`` for
``.`` (``bn1__running_mean``); :meth:`Trainer.resume` reads those too.
"""

import math
import numbers
import time

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked, fixed
from ..optim import formats as _formats
from ..optim.registry import SPECS
from . import schedules
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["Trainer", "SingleProcess", "make_optimizer", "HISTORY_KEYS", "REGRESSION_KEYS",
           "TASKS"]

#: The fields of every record of :attr:`Trainer.history` (a distributed run adds ``comm_time``).
HISTORY_KEYS = ("epoch", "lr", "loss", "acc", "test_loss", "test_acc", "time", "kernel_time")
#: The fields of a regression's records: the loss is the MSE, the score R².
REGRESSION_KEYS = ("epoch", "lr", "loss", "r2", "test_loss", "test_r2", "time", "kernel_time")
#: The tasks a Trainer trains for.
TASKS = ("classification", "regression")

_MODEL = "model/"     # the prefix of the model's state entries among a checkpoint's extras
_STRATEGY_METHODS = ("wrap", "local_rows", "step", "average", "communication_time",
                     "save_checkpoint", "load_checkpoint")


def make_optimizer(name, params, lr, *, beta=0.9, impl="fused", **options):
    """The optimizer ``name`` of :data:`fastopt.optim.SPECS` over ``params``.

    Parameters
    ----------
    name : str
        A key of :data:`fastopt.optim.SPECS` ("sgd", "momentum", "rmsprop", "adam", ...).
    params : FlatParams, list or dict of arrays
    lr : float or schedule
    beta : float, default 0.9
        The optimizer's momentum β, Adam's β1 or RMSprop's α (the spec says which).
    impl : {"fused", "reference"}
    **options
        The optimizers' common options (``max_grad_norm``, ``state_dtype``, ``seed``, ...).
    """
    if name not in SPECS:
        raise ValueError(f"optimizer must be one of {', '.join(SPECS)}, got {name!r}")
    return SPECS[name].make(params, lr, beta=beta, impl=impl, **options)


#: Why an attribute of Trainer cannot be set
_BUILT = "the model, optimizer and schedule were built from it; construct a new Trainer"


def _refuse(name, why):
    """A property setter that refuses: AttributeError naming the attribute and ``why``."""
    def set_(self, value):
        raise AttributeError(f"{type(self).__name__}.{name} cannot be set: {why}")
    return set_


def _constant(name, value, doc):
    """A class-level constant of SingleProcess, read-only on its instances."""
    def set_(self, new):
        raise AttributeError(f"{type(self).__name__}.{name} cannot be set: it is this "
                             f"strategy's ({value!r} for one process)")
    return property(lambda self: value, set_, doc=doc)


class SingleProcess(Checked):
    """The trainer's strategy for one process (the default): every batch trains here.

    A strategy is the seam through which :class:`Trainer` runs data-parallel: it wraps the
    optimizer, says which rows of each global batch this process trains on, steps, averages
    the epoch's sums and the model's buffers over the processes, and saves and loads
    checkpoints.  Another strategy (:class:`fastopt.distributed.DataParallelStrategy`)
    provides the same attributes and methods.

    Attributes
    ----------
    rank : int
        This process's index among the :attr:`size` processes (0 here).
    size : int
        How many processes train together (1 here).

    None can be set, nor any other public name (a misspelled ``strategy.sync_nb = True``
    raises AttributeError); a subclass declares its own public attributes as class
    annotations (``calls: list``) or properties.
    """

    rank = _constant("rank", 0, "This process (0).")
    size = _constant("size", 1, "The number of processes (1).")

    def wrap(self, optimizer):
        """The optimizer the trainer steps: here ``optimizer`` itself."""
        return optimizer

    #: Whether batch norm normalizes with the global batch's statistics on every process
    #: (synchronized): then the running statistics are the same everywhere, not averaged.
    sync_bn = _constant("sync_bn", False, "Batch norm is not synchronized (one process).")

    def prepare_model(self, model):
        """Set ``model`` up for this strategy, after :meth:`wrap`: nothing to do here."""

    def trains(self, n):
        """Whether a global batch of ``n`` samples is trained (batch norm needs 2)."""
        return n >= 2

    def local_rows(self, n):
        """The rows of a global batch of ``n`` samples this process trains on: all of them."""
        return slice(0, n)

    def begin_step(self, optimizer, n_local, n_global):
        """Before the backward pass of a step on ``n_local`` of ``n_global`` samples (a
        strategy that overlaps communication with it announces the weight here): nothing.

        Optional for a strategy: the trainer calls it when the strategy has it."""

    def step(self, optimizer, n_local, n_global):
        """One step of ``optimizer`` on a gradient of ``n_local`` of ``n_global`` samples."""
        optimizer.step()

    def average(self, arrays):
        """Replace each array by its mean over the processes: nothing to do here."""

    def communication_time(self):
        """Seconds spent communicating so far, or None (no communication here)."""
        return None

    def save_checkpoint(self, path, params, optimizer, **extras):
        """:func:`fastopt.save_checkpoint`."""
        save_checkpoint(path, params, optimizer, **extras)

    def load_checkpoint(self, path, params, optimizer, *, check):
        """:func:`fastopt.load_checkpoint`: the extras, after ``check(extras)`` passed."""
        return load_checkpoint(path, params, optimizer, check=check)


def _checked_data(data, task="classification"):
    """``data`` as (X_train, y_train, X_test, y_test), checked; and the number of outputs
    (classes, or 1 for a regression)."""
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise TypeError("data must be a tuple (X_train, y_train, X_test, y_test), got "
                        + (f"{len(data)} items" if isinstance(data, (tuple, list))
                           else type(data).__name__))
    out = []
    for name, a in zip(("X_train", "y_train", "X_test", "y_test"), data):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"data: {name} must be a numpy array, got {type(a).__name__}")
        out.append(a)
    Xtr, ytr, Xte, yte = out
    for name, X in (("X_train", Xtr), ("X_test", Xte)):
        if X.dtype != np.float32 or X.ndim != 2:
            raise TypeError(f"data: {name} must be a 2-D float32 array (samples x features), "
                            f"got {X.dtype} of shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError(f"data: {name} has non-finite values")
    for name, y in (("y_train", ytr), ("y_test", yte)):
        if task == "regression":
            if y.dtype.kind != "f" or y.ndim != 1:
                raise TypeError(f"data: {name} must be a 1-D float array of targets (a "
                                f"regression), got {y.dtype} of shape {y.shape}")
            if not np.isfinite(y).all():
                raise ValueError(f"data: {name} has non-finite values")
            continue
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise TypeError(f"data: {name} must be a 1-D array of integer class labels, "
                            f"got {y.dtype} of shape {y.shape}")
        if y.size and y.min() < 0:
            raise ValueError(f"data: {name} has a negative class label {y.min()}")
    for X, y, names in ((Xtr, ytr, "X_train, y_train"), (Xte, yte, "X_test, y_test")):
        if len(X) != len(y):
            raise ValueError(f"data: {names} have {len(X)} and {len(y)} samples")
    if Xtr.shape[1] != Xte.shape[1] or Xtr.shape[1] == 0:
        raise ValueError(f"data: X_train and X_test must have the same number (>= 1) of "
                         f"features, got {Xtr.shape[1]} and {Xte.shape[1]}")
    if len(ytr) < 2 or len(yte) < 1:
        raise ValueError(f"data: needs at least 2 training and 1 test samples, got {len(ytr)} "
                         f"and {len(yte)}")
    if task == "regression":
        return (Xtr, ytr, Xte, yte), 1
    n_classes = int(max(ytr.max(), yte.max())) + 1
    return (Xtr, ytr, Xte, yte), n_classes


def _choice(name, value, choices):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


class Trainer(Checked):
    """Train an MLP classifier or regressor with a fastopt optimizer: the loop of ``fastopt train``.

    The model is a :class:`fastopt.nn.models.MLP` ``features -> hidden -> hidden -> classes``
    (BatchNorm + ReLU; one output and the squared error for a regression), its parameters in
    one FlatParams; each epoch shuffles the training samples into mini-batches, steps the
    optimizer once per batch, and evaluates on the test samples.  The learning rate follows
    ``schedule`` over ``epochs`` epochs.  A regression trains on the targets standardized
    with the training targets' mean and standard deviation, and reports its losses (mean
    squared errors) in the targets' own units.

    Parameters
    ----------
    optimizer : str, default "adam"
        A key of :data:`fastopt.optim.SPECS`.
    lr : float, default 1e-2
        The initial learning rate (> 0).
    schedule : str, default "cosine"
        A name of :func:`fastopt.schedules.by_name` (``constant``, ``inverse_time``,
        ``exponential``, ``inverse_sqrt``, ``step``, ``cosine``).
    epochs : int, default 20
        The run's length: the schedule spans it and :meth:`fit` trains up to it.
    batch_size : int, default 64
        Samples per global mini-batch (>= 2: batch norm needs 2 samples).  A batch the
        strategy does not train (``strategy.trains(n)``: fewer than 2 samples; per process
        unless batch norm is synchronized) is skipped (the last one of an epoch).
    seed : int, default 0
        Seeds the data split (with ``data=None``), the initialization and the shuffling.
    hidden : int, default 256
        Units per hidden layer.
    beta : float, default 0.9
        The optimizer's momentum β, Adam's β1 or RMSprop's α, in [0, 1).
    impl : {"fused", "reference"}, default "fused"
        fastopt's compiled kernels or the NumPy reference (model and optimizer).
    data : tuple (X_train, y_train, X_test, y_test), optional
        float32 samples x features, and integer labels (float targets for a regression);
        default the UCI digits of :func:`fastopt.data.datasets.prepare_data` split with
        ``seed``.  :func:`fastopt.data.tabular.load_table` and
        :func:`~fastopt.data.tabular.split_table` read a user's file into one.
    task : {"classification", "regression"}, default "classification"
        Softmax cross-entropy and accuracy, or the mean squared error and R²
        (``data`` is then required).
    max_grad_norm : float or None, default None
        Clip the gradients to this global norm inside each step.
    state_dtype : {"float32", "bfloat16", "int8", "float8"}, default "float32"
        How the optimizer stores its state.
    strategy : SingleProcess or fastopt.distributed.DataParallelStrategy, optional
        How the epochs run over processes; default :class:`SingleProcess`.  A strategy serves
        one trainer.
    micro_batch : int or None, default None
        Ordered reduction (:mod:`fastopt.nn.microbatch`): cut every global batch into
        micro-batches of this many rows, compute each one's gradient terms and batch-norm
        sums alone (float64), and combine them in micro-batch order.  The run then has the
        same bits with any number of processes: one process with ``micro_batch=k`` is the
        reference a data-parallel run with ``micro_batch=k`` equals.  Batch norm then always
        normalizes with the whole batch (whatever the strategy's ``sync_bn``).  About 3 times
        the CPU time per epoch of None for k=8 on the digits MLP (the documentation's
        distributed guide has the figures); None: one product per layer over the batch.

    Attributes
    ----------
    model : fastopt.nn.models.MLP
    opt : Optimizer or fastopt.distributed.DataParallel
        What each batch steps (the strategy's wrapper around the optimizer).
    strategy : the strategy in use
    data : tuple (X_train, y_train, X_test, y_test)
    epochs, batch_size : int
        As given.
    rng : numpy.random.Generator
        The shuffling generator (seeded with ``seed + 1``).
    micro_batch : int or None
        As given.
    epochs_done : int
        Epochs trained (restored by :meth:`resume`).
    task : str
        As given.
    history : list of dict
        One record per epoch trained (:data:`HISTORY_KEYS`, or :data:`REGRESSION_KEYS` for a
        regression, and ``comm_time`` with a strategy that communicates).

    All are read-only (AttributeError: the model, optimizer and schedule were built from
    them; construct a new Trainer), and setting any other public name raises
    AttributeError (a misspelled ``trainer.epocs = 5`` is not ignored).

    Raises
    ------
    TypeError, ValueError
        A bad argument, named, before anything is built.

    Examples
    --------
    >>> from fastopt.train import Trainer
    >>> t = Trainer(optimizer="adam", lr=0.01, epochs=2, hidden=32, seed=0)
    >>> history = t.fit()
    >>> len(history), t.epochs_done, history[-1]["test_acc"] > 0.9
    (2, 2, True)
    """

    def __init__(self, *, optimizer="adam", lr=1e-2, schedule="cosine", epochs=20, batch_size=64,
                 seed=0, hidden=256, beta=0.9, impl="fused", data=None, max_grad_norm=None,
                 state_dtype="float32", strategy=None, task="classification",
                 micro_batch=None):
        from ..data.datasets import prepare_data
        from ..nn.microbatch import MicroBatches
        from ..nn.models import MLP

        _choice("optimizer", optimizer, tuple(SPECS))
        _check.positive("lr", lr, float32=True)
        _choice("schedule", schedule, schedules.NAMES)
        epochs = _check.integer("epochs", epochs, 1, _check.C_LLONG_MAX)
        batch_size = _check.integer("batch_size", batch_size, 2)
        seed = _check.integer("seed", seed, 0)
        hidden = _check.integer("hidden", hidden, 1)
        _check.unit_interval("beta", beta, float32=True)
        _choice("impl", impl, ("fused", "reference"))
        if max_grad_norm is not None:
            _check.positive("max_grad_norm", max_grad_norm, float32=True)
        _choice("state_dtype", state_dtype, tuple(_formats.FORMATS))
        if strategy is None:
            strategy = SingleProcess()
        missing = [m for m in _STRATEGY_METHODS if not callable(getattr(strategy, m, None))]
        if missing:
            raise TypeError(f"strategy must provide {', '.join(_STRATEGY_METHODS)} (as "
                            f"SingleProcess does); {type(strategy).__name__} lacks "
                            f"{', '.join(missing)}")
        _choice("task", task, TASKS)
        if micro_batch is not None:
            micro_batch = _check.integer("micro_batch", micro_batch, 1)
        if task == "regression" and data is None:
            raise ValueError("task 'regression' needs data (the digits are a classification)")
        data, n_outputs = _checked_data(prepare_data(seed)[:4] if data is None else data, task)
        self._data = data
        self._task = task
        # a regression trains on standardized targets: (y - mean) / scale
        self._y_mean, self._y_scale = 0.0, 1.0
        if task == "regression":
            self._y_mean = float(data[1].mean(dtype=np.float64))
            std = float(data[1].std(dtype=np.float64))
            self._y_scale = std if std > 0 else 1.0
        self._model = MLP((data[0].shape[1], hidden, hidden, n_outputs), rng=seed, impl=impl,
                          loss="mse" if task == "regression" else "cross_entropy")
        sched = schedules.by_name(schedule, lr, epochs)
        opt = make_optimizer(optimizer, self._model.params, sched, beta=beta, impl=impl,
                             max_grad_norm=max_grad_norm, state_dtype=state_dtype, seed=seed)
        # (a data-parallel strategy's wrapper takes the optimizer's place; in sharded mode
        # the full-size optimizer is dropped here)
        self._opt = strategy.wrap(opt)
        if callable(getattr(strategy, "prepare_model", None)):
            strategy.prepare_model(self._model)
        self._strategy = strategy
        self._micro = None
        if micro_batch is not None:
            make = getattr(strategy, "micro_batches", None)
            self._micro = make(micro_batch) if callable(make) else MicroBatches(micro_batch)
        self._epochs = epochs
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed + 1)
        self._epochs_done = 0
        self._history = []

    # -------------------------------------------------------------- read-only attributes
    model = fixed("model", "The MLP (its parameters in ``model.params``).", _BUILT)
    opt = fixed("opt", "What each batch steps.", _BUILT)
    strategy = fixed("strategy", "The strategy in use.", _BUILT)
    data = fixed("data", "(X_train, y_train, X_test, y_test).", _BUILT)
    epochs = fixed("epochs", "The run's length in epochs.", _BUILT)
    batch_size = fixed("batch_size", "Samples per global batch.", _BUILT)
    micro_batch = property(lambda self: None if self._micro is None else self._micro.size,
                           _refuse("micro_batch", _BUILT),
                           doc="Rows per micro-batch (ordered reduction), or None.")
    rng = fixed("rng", "The shuffling generator.", _BUILT)
    epochs_done = fixed("epochs_done", "Epochs trained.", "train_epoch(), fit() and resume() "
                        "count them")
    task = fixed("task", '"classification" or "regression".', _BUILT)

    @property
    def history_keys(self):
        """The fields of this trainer's records (:data:`HISTORY_KEYS` or
        :data:`REGRESSION_KEYS`)."""
        return REGRESSION_KEYS if self._task == "regression" else HISTORY_KEYS

    history_keys = history_keys.setter(_refuse("history_keys", "they follow the task"))

    def _targets(self, y):
        """The model's targets for ``y``: standardized for a regression."""
        if self._task == "regression":
            return ((y.astype(np.float64) - self._y_mean) / self._y_scale)
        return y

    @property
    def history(self):
        """One record per epoch trained (a new list; the records are the trainer's)."""
        return list(self._history)

    history = history.setter(_refuse("history", "train_epoch() appends to it"))

    # -------------------------------------------------------------- training
    def train_epoch(self, progress=None):
        """Train one epoch, evaluate, and return its record (also appended to :attr:`history`).

        Parameters
        ----------
        progress : callable(epoch, batches_done, batches_total), optional
            Called after each batch (e.g. a progress bar).

        Returns
        -------
        dict
            ``epoch``, ``lr`` (at the epoch's end), ``loss`` and ``acc`` (training batches,
            weighted by their sizes, over every process), ``test_loss``, ``test_acc``,
            ``time`` (seconds for the batches), ``kernel_time`` (of it, in fastopt's
            batch-norm and optimizer calls), and ``comm_time`` with a strategy that
            communicates.
        """
        from ..data import minibatches

        epoch = self._epochs_done + 1
        model, opt, strategy = self._model, self._opt, self._strategy
        Xtr, ytr, Xte, yte = self._data
        opt.set_epoch(epoch)
        model.kernel_time = 0.0
        opt_time = 0.0
        losses, accs, sizes = [], [], []
        n_batches = math.ceil(len(ytr) / self._batch_size)
        t0 = time.perf_counter()
        comm_before = strategy.communication_time()
        for b, (Xb, yb) in enumerate(minibatches(Xtr, ytr, batch_size=self._batch_size,
                                                 rng=self._rng)):
            done = self._train_batch(Xb, yb)
            if done is None:
                continue
            loss, acc, size, seconds = done
            opt_time += seconds
            losses.append(loss)
            accs.append(acc)
            sizes.append(size)
            if progress is not None:
                progress(epoch, b + 1, n_batches)
        elapsed = time.perf_counter() - t0
        kernel_time = model.kernel_time + opt_time   # (before the evaluation's batch norm)
        sizes = np.asarray(sizes, np.float64)
        totals = np.array([np.dot(losses, sizes), np.dot(accs, sizes), sizes.sum()])
        # the epoch's loss and accuracy over every process's samples, and the batch-norm
        # running statistics averaged, so every process evaluates one model
        strategy.average([totals])
        # (micro-batched, the running statistics are the whole batch's on every process)
        if self._micro is None and not getattr(strategy, "sync_bn", False):
            strategy.average([a for bn in model.bns for a in (bn.running_mean, bn.running_var)])
        test_loss, test_acc = model.evaluate(Xte, self._targets(yte))
        self._epochs_done = epoch
        loss, acc = float(totals[0] / totals[2]), float(totals[1] / totals[2])
        if self._task == "regression":
            # the losses in the targets' units; R² = 1 - MSE / variance (1 on the training
            # targets, which are standardized)
            scale2 = self._y_scale ** 2
            rec = dict(epoch=epoch, lr=opt.lr, loss=loss * scale2, r2=1.0 - loss,
                       test_loss=test_loss * scale2, test_r2=test_acc, time=elapsed,
                       kernel_time=kernel_time)
        else:
            rec = dict(epoch=epoch, lr=opt.lr, loss=loss, acc=acc, test_loss=test_loss,
                       test_acc=test_acc, time=elapsed,
                       kernel_time=kernel_time)
        if comm_before is not None:
            rec["comm_time"] = strategy.communication_time() - comm_before
        self._history.append(rec)
        return rec

    def _train_batch(self, Xb, yb):
        """One step on the global batch ``(Xb, yb)`` (this process takes its rows): returns
        (loss, score, rows here, seconds in the step), or None for a batch not trained."""
        model, opt, strategy, micro = self._model, self._opt, self._strategy, self._micro
        # every process shuffles alike (same seed) and takes its rows of the global batch;
        # batch norm needs 2 samples (on every process, unless it is synchronized)
        n_global = len(yb)
        if micro is not None:
            # micro-batched: batch norm reduces over the whole batch, as in one process; the
            # process holding the ordered sum has the whole gradient, the others zeros
            if n_global < 2:
                return None
            rows = micro.plan(n_global)
            weight = n_global if micro.holds_sum else 0
        else:
            trains = getattr(strategy, "trains", None)
            if not (trains(n_global) if callable(trains) else n_global // strategy.size >= 2):
                return None
            rows = strategy.local_rows(n_global)
        Xb, yb = Xb[rows], self._targets(yb[rows])
        if micro is None:
            weight = len(yb)
        begin_step = getattr(strategy, "begin_step", None)
        if begin_step is not None:
            begin_step(opt, weight, n_global)
        loss, acc = model.loss_and_grad(Xb, yb, micro=micro)
        t = time.perf_counter()
        strategy.step(opt, weight, n_global)
        return loss, acc, len(yb), time.perf_counter() - t

    def fit(self, progress=None, on_epoch=None):
        """Train the epochs from :attr:`epochs_done` up to :attr:`epochs`; return :attr:`history`.

        Parameters
        ----------
        progress : callable(epoch, batches_done, batches_total), optional
            As for :meth:`train_epoch`.
        on_epoch : callable(record), optional
            Called after each epoch with its record (e.g. to print it or :meth:`save`).
        """
        while self._epochs_done < self._epochs:
            rec = self.train_epoch(progress)
            if on_epoch is not None:
                on_epoch(rec)
        return self.history

    def evaluate(self, X=None, y=None):
        """(loss, accuracy) of the model in inference mode, or (MSE in the targets' units,
        R²) for a regression; default on the test samples."""
        if (X is None) != (y is None):
            raise TypeError("evaluate needs both X and y, or neither (the test samples)")
        if X is None:
            X, y = self._data[2], self._data[3]
        loss, score = self._model.evaluate(X, self._targets(y))
        return loss * self._y_scale ** 2, score

    # -------------------------------------------------------------- checkpoints
    def save(self, path):
        """Write a checkpoint of the run to ``path`` (atomically; see the module docstring).

        With a data-parallel strategy, collective: every process calls it, one writes.
        """
        extras = {"epoch": self._epochs_done, "rng_state": self._rng.bit_generator.state,
                  "history": self._history,
                  **{_MODEL + k: v for k, v in self._model.state_dict().items()}}
        self._strategy.save_checkpoint(path, self._model.params, self._opt, **extras)

    def resume(self, path):
        """Continue from a checkpoint of :meth:`save`, all checked before anything changes.

        Restores the parameters, the optimizer (its epoch and learning rate included), the
        model's state, the shuffling generator, :attr:`epochs_done` and :attr:`history`.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        fastopt.train.CheckpointError
            The file is corrupt or does not fit this trainer; nothing has changed.
        """
        extras = self._strategy.load_checkpoint(path, self._model.params, self._opt,
                                                check=self._checked_extras)
        checked = self._checked_extras(extras)  # (for every process: it received the extras)
        for bn, values in checked["model"]:
            for k, v in values.items():
                getattr(bn, k)[...] = v
        self._rng.bit_generator.state = checked["rng"]
        self._epochs_done = checked["epoch"]
        self._history = checked["history"]

    def _checked_extras(self, extras):
        """What :meth:`resume` restores from a checkpoint's extras, checked; changes nothing.

        Raises ValueError, TypeError or KeyError (a CheckpointError when loading).
        """
        names = set(self._model.state_dict())
        state = {k[len(_MODEL):]: v for k, v in extras.items() if k.startswith(_MODEL)}
        unknown = sorted(set(state) - names)
        if unknown:
            raise ValueError(f"model state has unknown entries {unknown}")
        # the names of earlier versions: bn1__running_mean for model/bn1.running_mean
        legacy = {k.replace("__", "."): v for k, v in extras.items()
                  if "__" in k and k.replace("__", ".") in names}
        model = self._model.checked_state({**state, **legacy})
        for k in sorted(state.keys() & legacy.keys()):
            if not np.array_equal(state[k], legacy[k]):
                raise ValueError(f"model state {k!r} is stored twice ({_MODEL}{k} and "
                                 f"{k.replace('.', '__')}) with different values")
        probe = type(self._rng.bit_generator)()
        probe.state = extras["rng_state"]  # a bad state raises here, not on self.rng
        epoch = _check.integer("epoch", extras["epoch"], 0, _check.C_LLONG_MAX)
        history = extras.get("history", [])
        keys = self.history_keys
        if not (isinstance(history, list) and all(
                isinstance(h, dict) and all(isinstance(h.get(k), numbers.Real)
                                            and not isinstance(h.get(k), bool)
                                            for k in keys) for h in history)):
            raise ValueError(f"history must be a list of records with {keys} (a checkpoint "
                             f"of a {self._task} run)")
        return {"model": model, "rng": probe.state, "epoch": epoch, "history": history}
