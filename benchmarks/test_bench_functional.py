"""The functional API's time per call: the plan cached, the plan rebuilt, and a prebuilt optimizer.

``pytest benchmarks/test_bench_functional.py --benchmark-only`` (one row per call kind and
size), or as a script that prints the three side by side, interleaved, in one run::

    python benchmarks/test_bench_functional.py

``fastopt.functional.adam`` caches the checks of its parameter and state arrays per list of
arrays (:class:`fastopt.optim.functional.PlanCache`); "rebuilt" clears the cache before each
call (the cost of every call before the cache); "optimizer" is ``fastopt.Adam(params).step``.
A framework's per-parameter optimizer calls with one array; the sizes are elements per array.
"""

import sys
import timeit

import numpy as np
import pytest

SIZES = (10, 1000, 10_000)
KINDS = ("cached", "rebuilt", "optimizer")


def _call(kind, n, count=1):
    import fastopt
    from fastopt import functional as F

    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for _ in range(count)]
    grads = [rng.standard_normal(n).astype(np.float32) * 1e-3 for _ in range(count)]
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    if kind == "optimizer":
        opt = fastopt.Adam(params, lr=1e-4)
        return lambda: opt.step(grads)
    if kind == "cached":
        return lambda: F.adam(params, grads, m, v, step=1, lr=1e-4)

    def rebuilt():
        F.plans.clear()
        F.adam(params, grads, m, v, step=1, lr=1e-4)
    return rebuilt


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_functional_adam_per_call(benchmark, kind, n):
    benchmark.extra_info.update(kind=kind, elements=n)
    benchmark(_call(kind, n))


def main():
    print(f"{'elements':>9}  " + "  ".join(f"{k + ' us':>12}" for k in KINDS))
    for n in SIZES:
        calls = {k: _call(k, n) for k in KINDS}
        best = {k: float("inf") for k in KINDS}
        for _ in range(7):                      # interleaved rounds, best of each
            for k, f in calls.items():
                best[k] = min(best[k], min(timeit.repeat(f, number=500, repeat=3)) / 500)
        print(f"{n:>9}  " + "  ".join(f"{best[k] * 1e6:12.1f}" for k in KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
