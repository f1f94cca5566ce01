"""``fastopt train`` and ``fastopt tune``: the seed's whole method on the UCI digits, or on the
user's own data (``--data FILE``: :mod:`fastopt.data.tabular` reads it)."""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from ..data.datasets import prepare_data
from ..data.tabular import DataError, load_table, split_table
from ..optim.formats import FORMATS
from ..optim.registry import SPECS
from ..train.loop import Trainer
from .types import (UsageError, arg_type, check_output_path, nonneg_int, positive_float,
                    positive_int, unit_float)

OPTIMIZERS = tuple(SPECS)
DEFAULTS = dict(optimizer="adam", lr=1e-2, schedule="cosine", epochs=20, batch_size=64, seed=0,
                hidden=256, beta=0.9)
#: --micro-batch with --distributed unless given (0: off): the ranks then compute one
#: process's bits, and ``fastopt train --micro-batch 8`` in one process is the reference.
DISTRIBUTED_MICRO_BATCH = 8


# Batch norm needs two samples per batch when training.
batch_size_int = arg_type(int, lambda v: v >= 2, "an integer >= 2 (batch norm needs 2 samples)")
held_out_fraction = arg_type(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def check_train_args(args):
    """Every combination ``fastopt train`` would fail on later, checked before it starts."""
    from ..kernels import _check

    if args.beta is not None and SPECS[args.optimizer].beta is None:
        raise UsageError(f"--optimizer {args.optimizer} has no β: --beta does not apply to it")
    if args.beta is None:
        args.beta = DEFAULTS["beta"]
    if args.optimizer == "momentum" and args.beta == 0:
        raise UsageError("--optimizer momentum needs --beta in (0, 1), got 0 "
                         "(--optimizer sgd --beta 0 is plain gradient descent)")
    try:
        _check.at_least("--lr", args.lr, 0.0, float32=True)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.save:
        check_output_path("--save", args.save, replaced=True)
    if args.plot:
        check_output_path("--plot", args.plot)


# ------------------------------------------------------------------ the data

def load_data(args, test_fraction):
    """(description, (X_train, y_train, X_test, y_test)) for ``--data`` (or the digits),
    split with ``--seed``; every problem with the file or the options is a UsageError."""
    if args.data is None:
        if args.target is not None:
            raise UsageError("--target needs --data (the digits have no columns to choose)")
        if args.task == "regression":
            raise UsageError("--task regression needs --data: the digits are a classification")
        try:
            data = prepare_data(args.seed, test_fraction)[:4]
        except ValueError as e:
            raise UsageError(str(e)) from None
        return "UCI digits", data
    try:
        table = load_table(args.data, target=args.target, task=args.task)
        data = split_table(table, args.seed, test_fraction)
    except (FileNotFoundError, DataError, ValueError, TypeError) as e:
        raise UsageError(f"--data: {e}") from None
    what = (f"{len(table.classes)} classes" if table.task == "classification"
            else f"target {table.target!r}")
    return f"{table.source} ({table.task}, {what}, {table.X.shape[1]} features)", data


def _scores(task):
    """(record key, label) of the score of ``task``: accuracy or R²."""
    return ("acc", "acc") if task == "classification" else ("r2", "R2")


# ------------------------------------------------------------------ the task

# The training loop is the library's (fastopt.train.Trainer); the CLI parses and prints.
Run = Trainer


def _progress_bar(stream):
    width = 30

    def show(epoch, done, total):
        if not stream.isatty() and done != total:
            return
        filled = int(width * done / total)
        stream.write(f"\repoch {epoch:3d} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done}/{total}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def _cmd_train(args):
    import fastopt

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install matplotlib "
                             "(or pip install 'fastopt[plot]')") from None
    check_train_args(args)
    described, data = load_data(args, args.val_split)
    strategy = _distributed_strategy(args)
    micro = _micro_batch(args)
    try:
        run = Trainer(optimizer=args.optimizer, lr=args.lr, schedule=args.schedule,
                      epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      hidden=args.hidden, beta=args.beta, impl=args.impl,
                      max_grad_norm=args.max_grad_norm, state_dtype=args.state_dtype,
                      strategy=strategy, data=data, task=args.task, micro_batch=micro)
    except (ValueError, MemoryError) as e:  # e.g. --hidden too large for this machine
        raise UsageError(f"cannot build the model and optimizer: {type(e).__name__}: {e}") from None
    dp = run.opt if strategy is not None else None
    if run.strategy.rank != 0:
        sys.stdout = open(os.devnull, "w")      # rank 0 reports for everyone
        args.quiet = True
    if args.resume:
        try:
            run.resume(args.resume)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        print(f"resumed from {args.resume} after epoch {run.epochs_done}")
    sizes = "-".join(map(str, run.model.sizes))
    print(f"fastopt {fastopt.__version__} train: {described}, {len(run.data[1])} train / "
          f"{len(run.data[3])} held-out samples; MLP {sizes} with BatchNorm+ReLU "
          f"({run.model.params.size:,} parameters in one FlatParams)")
    state = run.opt if dp is None else None
    if args.state_dtype != "float32" and state is not None:
        print(f"optimizer state in {args.state_dtype} for arrays of {state.min_lowbit_size:,}+ "
              f"elements: {state.state_nbytes / run.model.params.size:.2f} bytes per parameter")
    print(f"optimizer {args.optimizer} (impl={args.impl}, isa={fastopt.isa()}, "
          f"threads={fastopt.get_num_threads()}), lr {args.lr:g} with {args.schedule} schedule, "
          f"batch size {args.batch_size}, {args.epochs} epochs, seed {args.seed}")
    if dp is not None:
        mode = "ZeRO-1 (sharded optimizer state)" if dp.shard_state else "allreduce"
        mode += ", overlapped with the backward pass" if dp.overlap else ""
        mode += " through an MPI-3 shared window" if dp.transport == "shared_window" else ""
        mode += f", {dp.wire_dtype} on the wire" if dp.wire_dtype != "native" else ""
        mode += ", error feedback" if dp.error_feedback else ""
        sync = ("synchronized batch norm" if run.strategy.sync_bn
                else "batch norm per rank (--no-sync-bn)")
        if micro:
            sync = (f"synchronized batch norm and ordered reduction by micro-batches of "
                    f"{micro} (the bits of one process with --micro-batch {micro})")
        print(f"distributed: {dp.size} ranks, {mode}{', deterministic' if dp.deterministic else ''}, "
              f"{sync}; "
              f"each rank takes 1/{dp.size} of every global batch of {args.batch_size}; "
              f"optimizer state {dp.state_bytes() / 1e6:.2f} MB on rank 0")
    bar = _progress_bar(sys.stderr) if not args.quiet else None
    key, label = _scores(run.task)
    for _ in range(run.epochs_done, args.epochs):
        r = run.train_epoch(bar)
        share = r["kernel_time"] / r["time"] if r["time"] > 0 else 0.0
        print(f"epoch {r['epoch']:3d}  lr {r['lr']:.2e}  loss {r['loss']:.4f}  {label} "
              f"{r[key]:.4f}  test loss {r['test_loss']:.4f}  test {label} {r['test_' + key]:.4f}  "
              f"time {r['time'] * 1e3:6.1f} ms  kernels {share:5.1%}"
              + (f"  communication {r['comm_time'] / r['time']:5.1%}" if "comm_time" in r else ""),
              flush=True)
        if args.save:
            run.save(args.save)
    hist = run.history
    if hist:
        times = [h["time"] for h in hist]
        kt = [h["kernel_time"] for h in hist]
        if run.task == "classification":
            print(f"held-out accuracy: {hist[-1]['test_acc']:.4f}")
        else:
            print(f"held-out R2: {hist[-1]['test_r2']:.4f} (mean squared error "
                  f"{hist[-1]['test_loss']:.6g})")
        print(f"time per epoch: {np.mean(times) * 1e3:.1f} ms (median {np.median(times) * 1e3:.1f} ms), "
              f"of which fastopt kernels ({args.impl}): {np.mean(kt) * 1e3:.1f} ms "
              f"= {sum(kt) / sum(times):.1%}")
    if args.save:
        print(f"saved checkpoint to {args.save}")
    if args.plot:
        _plot(hist, args.plot)
        print(f"saved plot to {args.plot}")
    return 0


def _plot(hist, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in hist]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["loss"] for h in hist], label="train")
    a.plot(ep, [h["test_loss"] for h in hist], label="held-out")
    a.set_xlabel("epoch")
    regression = "r2" in hist[0] if hist else False
    key = "r2" if regression else "acc"
    a.set_ylabel("mean squared error" if regression else "cross-entropy")
    a.legend()
    b.plot(ep, [h[key] for h in hist], label="train")
    b.plot(ep, [h["test_" + key] for h in hist], label="held-out")
    b.set_xlabel("epoch")
    b.set_ylabel("R²" if regression else "accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cmd_tune(args):
    from ..train import tuning

    if args.json:
        check_output_path("--json", args.json)
    # Tune on a validation split of the training data: the held-out test set stays unseen.
    described, (Xtr, ytr, _, _) = load_data(args, 0.2)
    n_val = len(ytr) // 5
    if n_val < 1 or len(ytr) - n_val < 2:
        raise UsageError(f"--data: {len(ytr)} training samples are too few to tune on (a "
                         "validation split of 1/5 needs at least 1 sample, training 2)")
    data = (Xtr[n_val:], ytr[n_val:], Xtr[:n_val], ytr[:n_val])
    key, label = _scores(args.task)
    space = {
        "lr": tuning.log_uniform(1e-4, 1e-1),                 # tier 1
        "beta": tuning.one_minus_log_uniform(0.8, 0.99),      # tier 2
        "hidden": tuning.integers(32, 512),                   # tier 2
        "batch_size": tuning.powers_of_two(32, 512),          # tier 2
    }

    def objective(p):
        run = Trainer(optimizer=args.optimizer, lr=p["lr"], schedule="cosine",
                      epochs=args.epochs, batch_size=p["batch_size"], seed=args.seed,
                      hidden=p["hidden"], beta=p["beta"], data=data, task=args.task)
        t = time.perf_counter()
        for _ in range(args.epochs):
            rec = run.train_epoch()
        p["_time"] = time.perf_counter() - t
        return rec["test_" + key] if math.isfinite(rec["loss"]) else float("nan")

    print(f"fastopt tune: random search on {described}, {args.trials} trials x {args.epochs} "
          f"epochs, optimizer {args.optimizer}, scored by validation "
          f"{'accuracy' if key == 'acc' else 'R2'} "
          f"({len(data[1])} train / {len(data[3])} validation samples)")
    trials = tuning.random_search(objective, space, n_trials=args.trials, rng=args.seed)
    print(f"{'rank':>4}  {'val ' + label:>7}  {'lr':>9}  {'beta':>6}  {'hidden':>6}  "
          f"{'batch':>5}  {'time':>7}")
    for rank, t in enumerate(trials, 1):
        p = t.params
        print(f"{rank:>4}  {t.score:7.4f}  {p['lr']:9.2e}  {p['beta']:6.4f}  {p['hidden']:>6}  "
              f"{p['batch_size']:>5}  {p['_time']:6.2f}s")
    best = trials[0].params
    on = "" if args.data is None else f"--data {args.data} --task {args.task} " + (
        f"--target {args.target} " if args.target is not None else "")
    print(f"best: fastopt train {on}--optimizer {args.optimizer} --lr {best['lr']:.3g} "
          f"--beta {best['beta']:.4g} --hidden {best['hidden']} --batch-size {best['batch_size']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"rank": i + 1, "score": t.score, **t.params} for i, t in enumerate(trials)],
                      f, indent=1)
    return 0


def add_train(sub):
    p = sub.add_parser("train", help="train an MLP on the UCI digits, or your data, with "
                                     "fastopt's kernels",
                       description="Train an F-H-H-C MLP (BatchNorm + ReLU, He init, softmax "
                                   "cross-entropy; one output and the squared error for "
                                   "--task regression) on the UCI handwritten digits shipped "
                                   "with fastopt or on --data FILE, with input "
                                   "standardization, mini-batches, an optimizer and a "
                                   "learning-rate schedule.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"],
                   help="the optimizer (fastopt.optim.SPECS)")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="initial learning rate")
    p.add_argument("--schedule", choices=("constant", "inverse_time", "exponential",
                                          "inverse_sqrt", "step", "cosine"),
                   default=DEFAULTS["schedule"], help="learning-rate schedule over the epochs")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"], help="epochs to train")
    p.add_argument("--batch-size", type=batch_size_int, default=DEFAULTS["batch_size"],
                   help="samples per mini-batch")
    p.add_argument("--hidden", type=positive_int, default=DEFAULTS["hidden"],
                   help="hidden units per layer")
    p.add_argument("--beta", type=unit_float, default=None,
                   help=f"momentum β / Adam β1 / RMSprop α (default {DEFAULTS['beta']}; "
                        "not for optimizers without one, as Adagrad)")
    p.add_argument("--seed", type=nonneg_int, default=DEFAULTS["seed"],
                   help="seed of the split, the initialization and the shuffling")
    p.add_argument("--max-grad-norm", type=positive_float, default=None, metavar="NORM",
                   help="clip the gradients to this global norm inside each step")
    p.add_argument("--state-dtype", choices=tuple(FORMATS), default="float32",
                   help="how the optimizer stores its state (bfloat16: stochastic rounding; "
                        "int8: block-wise quantization; float8: block-wise minifloat codes; "
                        "arrays under 4096 elements keep float32)")
    p.add_argument("--impl", choices=("fused", "reference"), default="fused",
                   help="fastopt's compiled kernels or the NumPy reference")
    p.add_argument("--plot", metavar="PNG", help="save loss and accuracy curves (needs matplotlib)")
    p.add_argument("--save", metavar="NPZ", help="write a checkpoint after every epoch")
    p.add_argument("--resume", metavar="NPZ", help="continue from a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--micro-batch", type=nonneg_int, default=None, metavar="K",
                   help="ordered reduction: gradients and batch-norm sums per micro-batch of K "
                        "rows, combined in float64 in their order, so any number of ranks "
                        "computes the bits of one process with the same --micro-batch; "
                        f"default {DISTRIBUTED_MICRO_BATCH} with --distributed (native wire, "
                        "synchronized batch norm), off in one process; 0: off")
    _add_data(p)
    p.add_argument("--val-split", type=held_out_fraction, default=0.2, metavar="FRACTION",
                   help="the share of the samples held out for evaluation (test loss and "
                        "score), drawn with --seed")
    g = p.add_argument_group("data-parallel training over MPI (run under mpiexec; "
                             "pip install 'fastopt[mpi]')")
    g.add_argument("--distributed", action="store_true",
                   help="train on every rank of mpiexec: each takes its part of every global "
                        "batch, gradients are averaged (fastopt.distributed.DataParallel)")
    g.add_argument("--shard-state", action="store_true",
                   help="with --distributed: ZeRO-1, each rank keeps 1/P of the optimizer state")
    g.add_argument("--deterministic", action="store_true",
                   help="with --distributed: sum gradients in rank order (same bits every run)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="with --distributed (default on): batch norm normalizes with the "
                        "statistics of the whole global batch (two small collectives per layer "
                        "and step), so the ranks train the model one process trains; "
                        "--no-sync-bn: each rank normalizes with its own rows")
    g.add_argument("--no-overlap", action="store_true",
                   help="with --distributed: reduce the gradients after the backward pass, not "
                        "bucket by bucket during it (the default, unless --micro-batch orders the "
                        "reduction)")
    g.add_argument("--bucket-bytes", type=positive_int, default=None,
                   help="with --distributed: bytes of gradient per overlapped (or bfloat16) "
                        "collective (default 64 KiB: the MLP's layers hold 10 KB to 256 KB)")
    g.add_argument("--wire-dtype", choices=("native", "bfloat16"), default="native",
                   help="with --distributed: send the gradients in bfloat16 (half the bytes; "
                        "rounded to nearest even, summed in float32)")
    g.add_argument("--error-feedback", action="store_true",
                   help="with --wire-dtype bfloat16: carry each rank's rounding residual over "
                        "to its next step")
    g.add_argument("--timeout", type=positive_float, default=300.0,
                   help="with --distributed: abort the job when a rank waits this many seconds "
                        "for the others in a collective")
    _add_blas_threads(p)
    p.set_defaults(func=_run_guarded(_cmd_train, p))


def _micro_batch(args):
    """``Trainer(micro_batch=...)`` for ``--micro-batch`` (and its default), or None."""
    if args.micro_batch is None:
        on = args.distributed and args.wire_dtype == "native" and args.sync_bn is not False
        return DISTRIBUTED_MICRO_BATCH if on else None
    if args.micro_batch and args.wire_dtype != "native":
        raise UsageError("--micro-batch: not with --wire-dtype bfloat16 (its rounding is not "
                         "one process's); --micro-batch 0 turns it off")
    if args.micro_batch and args.sync_bn is False:
        raise UsageError("--micro-batch: not with --no-sync-bn (micro-batched batch norm "
                         "normalizes with the whole batch); --micro-batch 0 turns it off")
    return args.micro_batch or None


def _distributed_strategy(args):
    """The trainer's DataParallelStrategy for ``--distributed``, or None (one process)."""
    if not args.distributed:
        if (args.shard_state or args.deterministic or args.sync_bn is not None or args.no_overlap
                or args.error_feedback or args.wire_dtype != "native"
                or args.bucket_bytes is not None):
            raise UsageError("--shard-state, --deterministic, --sync-bn/--no-sync-bn, "
                             "--no-overlap, --wire-dtype, --error-feedback and --bucket-bytes "
                             "need --distributed")
        return None
    if args.shard_state and args.wire_dtype != "native":
        raise UsageError("--wire-dtype bfloat16: not with --shard-state (ZeRO-1 sends float32)")
    if args.error_feedback and args.wire_dtype != "bfloat16":
        raise UsageError("--error-feedback needs --wire-dtype bfloat16")
    try:
        from ..distributed._mpi import require_mpi

        require_mpi()
    except ImportError as e:
        raise UsageError(str(e)) from None
    from ..distributed import DataParallelStrategy

    # overlap: the MLP's backward pass hands each layer's gradients over as it goes (with
    # ZeRO-1, each bucket goes to its slice's owner); an ordered reduction by micro-batches
    # (the default with --distributed) sums after the backward pass instead
    return DataParallelStrategy(shard_state=args.shard_state, deterministic=args.deterministic,
                                timeout=args.timeout, sync_bn=args.sync_bn is not False,
                                overlap=not args.no_overlap,
                                wire_dtype=args.wire_dtype, error_feedback=args.error_feedback,
                                bucket_bytes=args.bucket_bytes or 64 << 10)


def add_tune(sub):
    p = sub.add_parser("tune", help="random-search the learning rate, β, hidden units, batch size",
                       description="Random search (not a grid) over the seed's most important "
                                   "hyperparameters, each trial a short training run scored on a "
                                   "validation split; prints a ranked table.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=positive_int, default=10, help="training runs to try")
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs per trial")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"],
                   help="the optimizer every trial uses")
    p.add_argument("--seed", type=nonneg_int, default=DEFAULTS["seed"],
                   help="seed of the split and of the search")
    p.add_argument("--json", metavar="PATH", help="also write the trials as JSON")
    _add_data(p)
    _add_blas_threads(p)
    p.set_defaults(func=_run_guarded(_cmd_tune, p))


def _add_data(p):
    g = p.add_argument_group("your own data (default: the UCI digits shipped with fastopt)")
    g.add_argument("--data", metavar="FILE",
                   help="an .npz with arrays X (samples x features) and y, or a CSV file (one "
                        "sample per row; a header row is detected)")
    g.add_argument("--target", metavar="COLUMN",
                   help="the CSV's target column, by header name or 0-based index (default: "
                        "the last column)")
    g.add_argument("--task", choices=("classification", "regression"),
                   default="classification",
                   help="classification: the targets are class labels (words or integers), "
                        "softmax cross-entropy, accuracy; regression: real targets, mean "
                        "squared error, R2")


def _add_blas_threads(p):
    p.add_argument("--blas-threads", type=positive_int, default=1,
                   help="threads of NumPy's BLAS during training (the MLP's products are small: "
                        "one thread costs about 7%% on a quiet machine, and does not collapse when "
                        "other processes share the cores, as multithreaded OpenBLAS does)")


def _run_guarded(fn, parser):
    """Run a command; a UsageError prints the usage and the message and exits with status 2."""
    def run(args):
        from ..runtime.blas import limited_blas_threads

        try:
            with limited_blas_threads(args.blas_threads):
                return fn(args)
        except UsageError as e:
            parser.error(str(e))  # (raises SystemExit(2), as for any argument argparse rejects)
    return run
