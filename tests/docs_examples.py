"""The code examples of the documentation, for the tests that run them.

* README.md: fenced ```python blocks.
* docs/**/*.rst: ``.. code-block:: python`` blocks (the indented lines under the directive).
  The blocks of one page run in order in one namespace, as a reader pastes them.

A ``print(...)`` at the top level of a block (not inside a loop) may state what it prints
in its comment: ``# -> TEXT`` (exactly that output line) or ``# ... about NUMBER`` (a number
within 0.03 of it, for accuracies that depend on the BLAS and the platform).
"""

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block:: python\s*$")


def readme_blocks():
    """The README's ```python blocks."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def rst_blocks(path):
    """The ``.. code-block:: python`` blocks of one reST file, dedented, in order."""
    lines = Path(path).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        i += 1
        if not m:
            continue
        indent = len(m.group(1))
        while (i < len(lines) and lines[i].strip().startswith(":")          # directive options
               and len(lines[i]) - len(lines[i].lstrip()) > indent):
            i += 1
        body = []
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def doc_pages():
    """Every reST page of docs/ (not the build output or the generated API pages)."""
    skip = {DOCS / "_build", DOCS / "api" / "generated"}
    return sorted(p for p in DOCS.rglob("*.rst")
                  if not any(s in p.parents for s in skip) and "_templates" not in p.parts)


_EXACT = re.compile(r"#\s*->\s*(.*?)\s*$")
_ABOUT = re.compile(r"#.*\babout\s+(-?[0-9.]+)")


def expectations(block):
    """[(kind, value)] for each top-level print of ``block``; kind "exact", "about" or None.

    Empty when a print sits inside a loop or a function (its output lines cannot be
    matched to statements)."""
    out = []
    for line in block.splitlines():
        if re.match(r"\s+print\(", line):
            return []
        if line.startswith("print("):
            exact, about = _EXACT.search(line), _ABOUT.search(line)
            out.append(("exact", exact.group(1)) if exact
                       else ("about", float(about.group(1).rstrip("."))) if about
                       else (None, None))
    return out


def check_output(block, output, where):
    """Assert that ``output`` (the block's stdout) says what the block's comments claim."""
    expected = expectations(block)
    if not expected:
        return
    lines = output.splitlines()
    assert len(lines) == len(expected), f"{where}: {len(lines)} output lines for {len(expected)} prints"
    for (kind, value), line in zip(expected, lines):
        if kind == "exact":
            assert line.strip() == value, f"{where}: printed {line!r}, the comment says {value!r}"
        elif kind == "about":
            assert abs(float(line.split()[-1]) - value) <= 0.03, f"{where}: printed {line!r}, about {value}"
