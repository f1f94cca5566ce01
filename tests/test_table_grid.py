"""The quick loop's subset of the generated grids (table_grid.mark_outside_quick_subset): what it
keeps, that it removes nothing, and that every family keeps every level, size and dtype."""

import itertools

import pytest

import table_grid


class _Item:
    """The little of a pytest item the selection reads and writes."""

    def __init__(self, params, test="test_grid"):
        self.callspec = type("CallSpec", (), {"params": params})()
        self.module = type("Module", (), {"__name__": "test_module"})()
        self.originalname = test
        self.marks = [table_grid.quick(family=lambda p: p["case"][0], option="case").mark]

    def get_closest_marker(self, name):
        return next((m for m in reversed(self.marks) if m.name == name), None)

    def add_marker(self, mark):
        self.marks.append(mark.mark if hasattr(mark, "mark") else mark)



def _slow(item):
    return item.get_closest_marker("slow") is not None


CASES = [("adam", {"o": 0}), ("adam", {"o": 1}), ("adam", {"o": 2}),
         ("sgd", {"o": 0}), ("sgd", {"o": 1})]
LEVELS, SIZES, DTYPES = ["avx512", "avx2", "baseline"], [0, 17, 4097], ["f32", "f64"]


def _grid(test="test_grid"):
    return [_Item(dict(isa=isa, case=case, n=n, dtype=dtype), test)
            for isa, case, n, dtype in itertools.product(LEVELS, CASES, SIZES, DTYPES)]


def test_first_option_set_everywhere_each_other_once_rotating():
    items = _grid()
    table_grid.mark_outside_quick_subset(items)
    quick = [i.callspec.params for i in items if not _slow(i)]
    assert len(items) == 3 * 5 * 3 * 2                     # nothing removed
    for family in ("adam", "sgd"):
        first = [p for p in quick if p["case"] is CASES[0 if family == "adam" else 3]]
        assert len(first) == 3 * 3 * 2                     # every level, size and dtype
    for k, case in [(1, CASES[1]), (2, CASES[2]), (1, CASES[4])]:
        (p,) = [p for p in quick if p["case"] is case]     # once, at the k-th values
        assert (p["isa"], p["n"], p["dtype"]) == (LEVELS[k], SIZES[k], DTYPES[k % 2])
    assert len(quick) == 2 * 18 + 3


def test_grids_of_two_tests_are_chosen_apart():
    items = _grid("test_a") + _grid("test_b")
    table_grid.mark_outside_quick_subset(items)
    assert sum(not _slow(i) for i in items) == 2 * 39


def test_an_unmarked_test_is_left_alone():
    items = _grid()
    for i in items:
        i.marks = []
    table_grid.mark_outside_quick_subset(items)
    assert not any(_slow(i) for i in items)


@pytest.mark.parametrize("n", [0, 1])
def test_control_the_check_sees_a_missing_level(n):
    """The coverage check below fails when a family's quick cases miss a level."""
    items = _grid()
    table_grid.mark_outside_quick_subset(items)
    dropped = [i for i in items if not _slow(i) and i.callspec.params["isa"] == "avx2"
               and i.callspec.params["case"][0] == "sgd"][n:]
    for i in dropped:
        i.add_marker(pytest.mark.slow)
    missing = _uncovered(items)
    assert missing == ([("test_grid", "sgd", "isa", "avx2")] if n == 0 else [])


def _uncovered(items):
    """(test, family, parameter, value) that a family's quick cases never take."""
    seen, every = {}, {}
    for i in items:
        mark = i.get_closest_marker("grid")
        if mark is None:
            continue
        fam = (i.originalname, mark.kwargs["family"](i.callspec.params))
        for name, v in i.callspec.params.items():
            if name == mark.kwargs["option"]:
                continue
            key = (*fam, name, table_grid._value(i, name))
            every[key] = True
            if not _slow(i):
                seen[key] = True
    return [k for k in every if k not in seen]


def test_every_collected_grid_keeps_every_level_size_and_dtype_per_family(request):
    """Over the grids collected in this run (before ``-m``/``-k`` deselect): each family's
    quick cases take every value of every parameter (level, size, dtype, thread count)."""
    items = request.config.stash[table_grid.GRID_ITEMS]
    assert _uncovered(items) == []
