"""The ``fastopt`` command line: ``fastopt info``, ``train``, ``tune`` and ``bench``.

The CLI is the top layer, a leaf: nothing in the library imports it.  Each subcommand lives
in its own module, imported only when that subcommand runs (``fastopt info`` loads neither
the training code nor the benchmark).
"""

import argparse
import importlib
import sys

#: subcommand -> (module, function adding its parser, one-line help for ``fastopt --help``)
SUBCOMMANDS = {
    "info": ("fastopt.cli", "add_info", "version, instruction set, OpenMP, threads, compile flags"),
    "train": ("fastopt.cli.train", "add_train", "train an MLP on the UCI digits with fastopt's kernels"),
    "tune": ("fastopt.cli.train", "add_tune",
             "random-search the learning rate, β, hidden units, batch size"),
    "bench": ("fastopt.cli.bench", "add_bench",
              "time every kernel against the roofline, NumPy and PyTorch"),
}


def _cmd_info(args):
    import fastopt

    info = fastopt.info()
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, list):
            v = ", ".join(v)
        elif isinstance(v, dict):
            v = ", ".join(f"{name}={x}" for name, x in v.items())
        elif isinstance(v, bool):
            v = "on" if v else "off"
        print(f"{k:<{width}}  {v}")
    return 0


def add_info(sub):
    """Add ``fastopt info`` to the subparsers ``sub``."""
    p = sub.add_parser("info", help=SUBCOMMANDS["info"][2])
    p.set_defaults(func=_cmd_info)


def build_parser(command=None):
    """The parser; with ``command``, only that subcommand's module is imported."""
    from fastopt import __version__

    parser = argparse.ArgumentParser(prog="fastopt",
                                     description="Fused optimizer kernels for NumPy training loops.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, add, _) in SUBCOMMANDS.items():
        if command is None or name == command:
            getattr(importlib.import_module(module), add)(sub)
    return parser


def main(argv=None):
    """Run the ``fastopt`` command (``argv``: the arguments, default ``sys.argv[1:]``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in SUBCOMMANDS else None).parse_args(argv)
    return args.func(args)
