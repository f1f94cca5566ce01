"""The README's training-loop example and the docstring examples run and say what they claim."""

import doctest
import re
import warnings
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]


def _runnable_blocks():
    text = (ROOT / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import fastopt" in b]


def _check_dtype_comments(block, namespace, where):
    """``name = ...  # float64 ...``: after the block ran, ``name`` (an array, or a dict of
    arrays) has the dtype its comment says."""
    claims = re.findall(r"^(\w+)\b[^#\n]*=[^#\n]*#\s*(float32|float64)\b", block, re.M)
    for name, dtype in claims:
        value = namespace[name]
        arrays = value.values() if isinstance(value, dict) else [value]
        assert all(np.asarray(a).dtype == dtype for a in arrays), f"{where}: {name} is not {dtype}"
    return len(claims)


def test_readme_examples_run_and_learn(capsys):
    blocks = _runnable_blocks()
    assert len(blocks) >= 3, "README lost its examples"
    for i, block in enumerate(blocks):
        namespace = {}
        exec(compile(block, f"README.md block {i}", "exec"), namespace)
        _check_dtype_comments(block, namespace, f"block {i}")
        out = capsys.readouterr().out.split()
        if "print(" in block:  # the training loops print their accuracy
            assert float(out[-1]) >= 0.98, f"block {i}"


def test_readme_sklearn_example_is_float64_and_agrees_with_sklearn_as_quoted(capsys):
    # Before: its comment said float64, but X / 16.0 of the float32 digits is float32.
    SkMLPClassifier = pytest.importorskip("sklearn.neural_network").MLPClassifier

    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                if "fastopt.integrations.sklearn import MLPClassifier" in b]
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "README.md scikit-learn block", "exec"), namespace)
    assert _check_dtype_comments(block, namespace, "scikit-learn block") == 1
    assert namespace["load_digits"]()[0].dtype == np.float32    # "X: float32, as fastopt ships"
    assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(0.95, abs=0.01)
    clf, X, y = namespace["clf"], namespace["X"], namespace["y"]
    assert all(c.dtype == np.float64 for c in clf.coefs_ + clf.intercepts_)

    def rel(ours, theirs):
        return max(np.max(np.abs(a - b)) / np.max(np.abs(b))
                   for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_))

    params = dict(hidden_layer_sizes=(128,), max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SkMLPClassifier(**params).fit(X[::2], y[::2])
        assert rel(clf, theirs) < 1e-14                     # "about 1e-15 relative in float64"
        X32 = X.astype(np.float32)                          # "5e-4 after the example's 50 epochs"
        ours32 = type(clf)(**params).fit(X32[::2], y[::2])
        theirs32 = SkMLPClassifier(**params).fit(X32[::2], y[::2])
    assert ours32.coefs_[0].dtype == np.float32
    assert 1e-5 < rel(ours32, theirs32) < 2e-3


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
