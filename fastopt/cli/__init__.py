"""The ``fastopt`` command line: ``fastopt info`` (and the subcommands registered below)."""

import argparse
import math
import sys


def arg_type(convert, ok, expected):
    """An argparse ``type=``: convert, check, or a usage error naming what was expected."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    parse.__name__ = expected
    return parse


positive_int = arg_type(int, lambda v: v >= 1, "a positive integer")
nonneg_int = arg_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = arg_type(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
unit_float = arg_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


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


def _add_info(sub):
    p = sub.add_parser("info", help="version, instruction set, OpenMP, threads, compile flags")
    p.set_defaults(func=_cmd_info)


def _add_train(sub):
    from ._cli_train import add_train

    add_train(sub)


def _add_tune(sub):
    from ._cli_train import add_tune

    add_tune(sub)


def _add_bench(sub):
    from .bench import add_bench

    add_bench(sub)


# Each entry adds one subcommand to the parser (set_defaults(func=...) runs it).
SUBCOMMANDS = [_add_info, _add_train, _add_tune, _add_bench]


def build_parser():
    parser = argparse.ArgumentParser(prog="fastopt",
                                     description="Fused optimizer kernels for NumPy training loops.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
