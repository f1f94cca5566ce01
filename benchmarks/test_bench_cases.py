"""The cases of ``fastopt bench`` (:func:`fastopt.benchmark.cases.run_cases`) under pytest-benchmark.

``pytest benchmarks --benchmark-only``: one benchmark per case and role (fastopt, the NumPy
reference, the roofline pass, PyTorch, ...), grouped by case, so the ratios come from the same
run; ``extra_info["bytes"]`` is what the operation must move, ``extra_info["loops"]`` the steps
per call.  The under-load cases (processes side by side) are ``fastopt bench``'s alone.
"""

import contextlib

import pytest

from fastopt.benchmark.cases import ROLES, run_cases

CASES = run_cases(quick=False, torch=True, load=False)
PARAMS = [pytest.param(case, role, id=f"{case.id}-{role}") for case in CASES
          for role in ROLES[case.group]]

_built = {}


def _workload(case, torch):
    """The case's workload, built once for all its roles (one case's buffers alive at a time)."""
    if case.id not in _built:
        _built.clear()
        _built[case.id] = case.build(torch)
    return _built[case.id]


@pytest.mark.parametrize("case,role", PARAMS)
def test_case(benchmark, torch_or_none, case, role):
    work = _workload(case, torch_or_none)
    if role not in work.calls:
        pytest.skip(f"{role} not measured here" + "".join(f": {n}" for n in work.info.get("notes", ())))
    benchmark.group = case.id
    if case.bytes is not None:
        benchmark.extra_info["bytes"] = case.bytes
    benchmark.extra_info["loops"] = work.loops.get(role, 1)
    fn = work.calls[role]
    if role in work.together and work.between is not None:
        def fn(call=fn):   # e.g. restore the gradient a call scaled
            call()
            work.between()
    with work.around.get(role, contextlib.nullcontext)():
        if case.reps is not None:   # whole fits: a few rounds
            benchmark.pedantic(fn, rounds=case.reps, iterations=1)
        else:
            benchmark(fn)
