"""argparse ``type=`` converters shared by the subcommands."""

import argparse
import math


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
