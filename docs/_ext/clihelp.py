"""``.. fastopt-help:: train``: the ``--help`` text of a ``fastopt`` subcommand, as a literal block.

Generated from the argparse parser at build time, so the CLI reference cannot drift from
the command.
"""

import argparse
import io
import os
from contextlib import redirect_stdout

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


class FastoptHelp(SphinxDirective):
    required_arguments = 1

    def run(self):
        from fastopt.cli import SUBCOMMANDS, build_parser

        command = self.arguments[0]
        if command not in SUBCOMMANDS:
            raise self.error(f"unknown fastopt subcommand {command!r}")
        parser = build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        buf = io.StringIO()
        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "100"        # argparse wraps to the terminal: fix the width
        try:
            with redirect_stdout(buf):
                sub.choices[command].print_help()
        finally:
            if old is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old
        text = buf.getvalue().rstrip()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("fastopt-help", FastoptHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
