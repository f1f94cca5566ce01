"""pytest-benchmark suite: ``pytest benchmarks --benchmark-only``.

Not part of the default ``pytest`` run (``testpaths = ["tests"]``).  Each
group holds one kernel at one size, timed for fastopt, the NumPy reference,
the in-process roofline and (when installed) PyTorch, so the ratios come from
the same run; ``extra_info["bytes"]`` is what the operation must move.
"""

import numpy as np
import pytest

import fastopt


@pytest.fixture(scope="session")
def torch():
    t = pytest.importorskip("torch")
    t.set_num_threads(fastopt.get_num_threads())
    return t


@pytest.fixture
def rng():
    return np.random.default_rng(0)
