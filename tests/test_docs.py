"""The README's training-loop example and the docstring examples run and say what they claim."""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

import fastopt

ROOT = Path(__file__).resolve().parents[1]


def test_readme_training_example_learns(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "opt.step()" in b]
    assert blocks, "README lost its training-loop example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    accuracy = float(capsys.readouterr().out.split()[-1])
    assert accuracy >= 0.98


@pytest.mark.parametrize("module", ["fastopt.kernels", "fastopt.flat", "fastopt.optim"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
