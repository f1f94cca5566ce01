"""argparse ``type=`` converters and argument checks shared by the subcommands."""

import argparse
import math
import os
import tempfile


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


class UsageError(Exception):
    """A problem with the command's arguments or files: a usage message, exit status 2."""


def check_output_path(option, path, *, replaced=False):
    """Fail now, not after the work (training, benchmarking), if ``path`` cannot be written.

    ``replaced``: the file is written next to ``path`` and renamed over it
    (checkpoints), so only the directory must be writable.
    """
    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise UsageError(f"{option} {path}: is a directory")
    if not os.path.isdir(directory):
        problem = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise UsageError(f"{option} {path}: directory {directory} {problem}")
    if replaced or not os.path.exists(full):
        try:  # the one reliable test: create (and remove) a file there
            fd, probe = tempfile.mkstemp(prefix=".fastopt-probe-", dir=directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UsageError(f"{option} {path}: cannot create files in {directory} "
                             f"({e.strerror})") from None
    elif not os.access(full, os.W_OK):
        raise UsageError(f"{option} {path}: the file is not writable")
