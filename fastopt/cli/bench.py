"""``fastopt bench``: the command around :func:`fastopt.benchmark.run`."""

import argparse
import json
import sys

from .types import positive_int


def _cmd_bench_distributed(args):
    try:
        from ..distributed._mpi import require_mpi

        require_mpi()
    except ImportError as e:
        print(f"fastopt bench: error: --distributed: {e}", file=sys.stderr)
        return 2
    from ..benchmark.distributed import format_distributed, run_distributed
    from ..distributed import abort_on_exception

    abort_on_exception()
    result = run_distributed(quick=args.quick, reps=args.reps)
    from mpi4py import MPI

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
    from ..benchmark import format_table, plot, run

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastopt bench: error: --plot needs matplotlib: pip install matplotlib",
                  file=sys.stderr)
            return 2

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
            json.dump(result, f, indent=1, default=list)
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


#: The row groups of ``--only``: :data:`fastopt.benchmark.suite.GROUPS`, spelled out here so
#: that building the parser does not load the benchmark (a test keeps the two equal).
GROUPS = ("optimizer", "list", "clip", "state", "sklearn", "batchnorm", "train", "model", "sharing",
          "load")


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
                        "Adam with float32, bfloat16 and int8 state)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--no-train", action="store_true", help="skip the MLP training step")
    p.add_argument("--no-load", action="store_true",
                   help="skip the under-load table (two processes side by side)")
    p.add_argument("--distributed", action="store_true",
                   help="under mpiexec: allreduce GB/s, the data-parallel step split into "
                        "compute, communication and optimizer (plain and ZeRO-1), optimizer "
                        "memory per rank, and an alpha-beta scaling model")
    p.set_defaults(func=_cmd_bench)
