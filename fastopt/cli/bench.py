"""``fastopt bench``: the command around :func:`fastopt.benchmark.run`."""

import argparse
import json
import sys

from .types import UsageError, check_output_path, positive_float, positive_int

#: seconds a collective of ``fastopt bench --distributed`` may wait (``--timeout``): the
#: longest wait is a rank timing its part alone (seconds) while the others wait at a barrier
DISTRIBUTED_TIMEOUT = 300.0

#: options that only the single-process benchmark takes (--distributed refuses them)
_SINGLE_PROCESS = {"plot": "--plot", "only": "--only", "no_torch": "--no-torch",
                   "no_train": "--no-train", "no_load": "--no-load"}


def _check_options(args):
    """The options' combinations that would fail or be ignored: refused before anything runs."""
    if not args.distributed and args.timeout is not None:
        raise UsageError("--timeout: only taken with --distributed (a collective's time limit)")
    if args.distributed:
        given = [flag for name, flag in _SINGLE_PROCESS.items() if getattr(args, name)]
        if given:
            raise UsageError(f"{', '.join(given)}: not taken with --distributed "
                             "(it measures the data-parallel step only)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install matplotlib") from None
        if args.only and "optimizer" not in args.only:
            raise UsageError("--plot draws the optimizer rows: add optimizer to --only")


def _check_paths(args):
    """The output files can be written: checked before the benchmark, not after it."""
    if args.plot:
        check_output_path("--plot", args.plot)
    if args.json:
        check_output_path("--json", args.json)


def _cmd_bench_distributed(args):
    _check_options(args)
    try:
        from ..distributed._mpi import require_mpi

        require_mpi()
    except ImportError as e:
        print(f"fastopt bench: error: --distributed: {e}", file=sys.stderr)
        return 2
    from mpi4py import MPI

    from ..benchmark.distributed import format_distributed, run_distributed
    from ..distributed import abort_on_exception

    # Rank 0 writes the JSON: it checks the path, and every rank stops if it cannot.
    comm = MPI.COMM_WORLD
    problem = None
    if comm.Get_rank() == 0:
        try:
            _check_paths(args)
        except UsageError as e:
            problem = str(e)
    problem = comm.bcast(problem, root=0)
    if problem is not None:
        raise UsageError(problem)
    abort_on_exception()
    timeout = DISTRIBUTED_TIMEOUT if args.timeout is None else args.timeout
    result = run_distributed(quick=args.quick, reps=args.reps, timeout=timeout)

    if MPI.COMM_WORLD.Get_rank() == 0:
        print(format_distributed(result))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
            print(f"wrote {args.json}")
    return 0


def _cmd_bench(args):
    if args.distributed:
        return _cmd_bench_distributed(args)
    _check_options(args)
    _check_paths(args)
    from ..benchmark import format_table, plot, run, to_json

    def progress(i, n):
        if sys.stderr.isatty():
            sys.stderr.write(f"\rbenchmark {i + 1}/{n}")
            sys.stderr.flush()

    result = run(quick=args.quick, reps=args.reps, use_torch=not args.no_torch,
                 include_train=not args.no_train, include_load=not args.no_load,
                 only=args.only, progress=progress)
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 20 + "\r")
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(result), f, indent=1, default=list)
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


#: The row groups of ``--only``: :data:`fastopt.benchmark.cases.GROUPS`, spelled out here so
#: that building the parser does not load the benchmark (a test keeps the two equal).
GROUPS = ("optimizer", "list", "clip", "state", "sklearn", "batchnorm", "train", "model",
          "threading", "sharing", "load")


def _groups(text):
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in GROUPS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown group(s) {bad or text!r}: choose from "
                                         f"{','.join(GROUPS)}")
    return names


def add_bench(sub):
    """Add ``fastopt bench`` to the subparsers ``sub``."""
    p = sub.add_parser("bench", help="time every kernel against the roofline, NumPy and PyTorch",
                       description="Every kernel against the memory roofline, NumPy and PyTorch, in one run.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    p.add_argument("--reps", type=positive_int, help="repetitions per measurement (None: 3 with --quick, else 7)")
    p.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    p.add_argument("--plot", metavar="PNG", help="GB/s against size (needs matplotlib)")
    p.add_argument("--only", type=_groups, metavar="GROUP[,GROUP...]",
                   help=f"run only these row groups, of: {','.join(GROUPS)} (e.g. --only state: "
                        "Adam with float32, bfloat16, int8 and float8 state)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--no-train", action="store_true", help="skip the MLP training step")
    p.add_argument("--no-load", action="store_true",
                   help="skip the under-load table (two processes side by side)")
    p.add_argument("--distributed", action="store_true",
                   help="under mpiexec: allreduce GB/s, the data-parallel step split into "
                        "compute, communication and optimizer (plain and ZeRO-1), optimizer "
                        "memory per rank, and an alpha-beta scaling model")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="with --distributed: abort the job when a collective waits longer than "
                        f"this (a rank died or is stuck), instead of hanging (None: "
                        f"{DISTRIBUTED_TIMEOUT:g} s)")
    p.set_defaults(func=_guarded(_cmd_bench, p))


def _guarded(fn, parser):
    """Run ``fn(args)``; a UsageError is the parser's usage message and exit status 2."""
    def run(args):
        try:
            return fn(args)
        except UsageError as e:
            parser.error(str(e))
    return run
