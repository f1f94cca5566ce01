"""The README's training-loop example and the docstring examples run and say what they claim."""

import doctest
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def _runnable_blocks():
    text = (ROOT / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import fastopt" in b]


def test_readme_examples_run_and_learn(capsys):
    blocks = _runnable_blocks()
    assert len(blocks) >= 3, "README lost its examples"
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md block {i}", "exec"), {})
        out = capsys.readouterr().out.split()
        if "print(" in block:  # the training loops print their accuracy
            assert float(out[-1]) >= 0.98, f"block {i}"


@pytest.mark.parametrize("module", ["fastopt.kernels", "fastopt.nn.flat", "fastopt.optim.optimizers",
                                    "fastopt.nn.layers", "fastopt.nn.init",
                                    "fastopt.train.schedules", "fastopt.data.minibatch",
                                    "fastopt.train.tuning", "fastopt.data.preprocessing",
                                    "fastopt.train.checkpoint", "fastopt.train.loop"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_the_quick_loop_is_documented_and_leaves_out_the_system_tests():
    import test_cli_train
    import test_distributed
    import test_stress

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^markers = \[\s*"slow: ', pyproject, re.M)     # registered
    addopts = re.search(r'^addopts = "(.*)"$', pyproject, re.M).group(1)
    assert "-m" not in addopts.split()                  # plain pytest (CI) runs everything
    assert 'pytest -m "not slow"' in (ROOT / "README.md").read_text()
    for module in (test_stress, test_distributed, test_cli_train):
        assert module.pytestmark.name == "slow", module.__name__
