"""pytest-benchmark suite: ``pytest benchmarks --benchmark-only``.

Not part of the default ``pytest`` run (``testpaths = ["tests"]``).
``test_bench_cases.py`` times the cases of ``fastopt bench``
(:mod:`fastopt.benchmark.cases`): each group holds one case, timed for
fastopt, the NumPy reference, the in-process roofline and (when installed)
PyTorch, so the ratios come from the same run; ``extra_info["bytes"]`` is
what the operation must move.
"""

import numpy as np
import pytest

import fastopt


@pytest.fixture(scope="session")
def torch():
    t = pytest.importorskip("torch")
    t.set_num_threads(fastopt.get_num_threads())
    return t


@pytest.fixture(scope="session")
def torch_or_none():
    """PyTorch (with fastopt's threads), or None when it is not installed."""
    try:
        import torch as t
    except ImportError:
        return None
    t.set_num_threads(fastopt.get_num_threads())
    return t


@pytest.fixture
def rng():
    return np.random.default_rng(0)
