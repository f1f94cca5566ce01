import numpy as np
import pytest

import fastopt
from fastopt.runtime import dispatch as _dispatch

import table_grid


@pytest.hookimpl(tryfirst=True)    # before `-m` deselects by the marks
def pytest_collection_modifyitems(config, items):
    """The quick loop's subset of the generated grids (tests/table_grid.py: quick)."""
    config.stash[table_grid.GRID_ITEMS] = table_grid.mark_outside_quick_subset(items)


@pytest.fixture(params=_dispatch.supported_levels())
def isa(request):
    """Run the test once per instruction-set level this CPU supports (and was built)."""
    previous = _dispatch.ext.level
    _dispatch.set_isa(request.param)
    yield request.param
    _dispatch.set_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fastopt.set_num_threads(None)
