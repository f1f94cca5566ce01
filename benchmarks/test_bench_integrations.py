"""The integrations against the libraries' own optimizers, timed in the same run.

``pytest benchmarks/test_bench_integrations.py --benchmark-only`` (autograd; scikit-learn's
MLPClassifier fits are ``fastopt bench``'s sklearn cases, in ``test_bench_cases.py``), or as a
script for the figures in docs/guide/integrations.rst (fits alternate between the two, median of
``--repeat``, waiting for quiet moments)::

    python benchmarks/test_bench_integrations.py --repeat 5 [--quiet 0.9]
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import pytest

HIDDEN = (1024, 1024)
EPOCHS = 5


def _digits():
    from fastopt.data import load_digits

    X, y = load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:360], order[360:]
    X = X.astype(np.float64) / 16.0
    return X[train], y[train], X[test], y[test]


def _mlp(which):
    if which == "sklearn":
        from sklearn.neural_network import MLPClassifier
    else:
        from fastopt.integrations.sklearn import MLPClassifier
    return MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=EPOCHS, random_state=0)


def _fit(which, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # ConvergenceWarning after 5 epochs
        return _mlp(which).fit(X, y)


def _autograd_problem(n=1 << 20):
    rng = np.random.default_rng(0)
    target = {"W": rng.standard_normal((n // 4, 3)), "b": rng.standard_normal(n // 4)}
    x0 = {k: np.zeros_like(v) for k, v in target.items()}

    def grad(x, i):          # a quadratic's gradient: the optimizer is most of each iteration
        return {k: x[k] - target[k] for k in x}
    return grad, x0


@pytest.mark.parametrize("which", ["autograd", "fastopt"])
def test_autograd_adam(benchmark, which):
    pytest.importorskip("autograd")
    if which == "autograd":
        from autograd.misc.optimizers import adam
    else:
        from fastopt.integrations.autograd import adam
    grad, x0 = _autograd_problem()
    benchmark.group = "autograd adam, 1M float64, 20 iterations"
    benchmark.pedantic(adam, args=(grad, x0), kwargs=dict(num_iters=20), rounds=5, iterations=1)


def _idle_fraction(seconds=2.0):
    """The fraction of the machine's CPU time that was idle over ``seconds`` (Linux), or None."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    try:
        i0, t0 = sample()
        time.sleep(seconds)
        i1, t1 = sample()
    except OSError:
        return None
    return (i1 - i0) / max(t1 - t0, 1)


def _wait_until_quiet(min_idle, patience=600.0):
    """Wait (up to ``patience`` seconds) until other processes leave the CPUs idle; True if they did."""
    if min_idle <= 0:
        return True
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        idle = _idle_fraction()
        if idle is None or idle >= min_idle:
            return True
    return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quiet", type=float, default=0.0, metavar="IDLE",
                    help="before each pair of fits, wait until the CPUs were at least this idle "
                         "(fraction, e.g. 0.9) over 2 s: on a shared machine, time only quiet moments")
    args = ap.parse_args(argv)
    import fastopt

    Xtr, ytr, Xte, yte = _digits()
    print(f"MLPClassifier(hidden_layer_sizes={HIDDEN}, max_iter={EPOCHS}), digits "
          f"{len(ytr)} train / {len(yte)} test, fastopt {fastopt.get_num_threads()} threads, "
          f"median of {args.repeat}" + (f", pairs run when >= {args.quiet:.0%} idle" if args.quiet else ""))
    for dtype in ("float64", "float32"):
        Xa, Xb = Xtr.astype(dtype), Xte.astype(dtype)
        times = {"sklearn": [], "fastopt": []}
        acc = {}
        waited_out = 0
        for r in range(args.repeat):
            waited_out += not _wait_until_quiet(args.quiet)
            for which in (("sklearn", "fastopt") if r % 2 == 0 else ("fastopt", "sklearn")):
                t = time.perf_counter()
                model = _fit(which, Xa, ytr)
                times[which].append(time.perf_counter() - t)
                acc[which] = float(np.mean(model.predict(Xb) == yte))
        s, f = (statistics.median(times[w]) for w in ("sklearn", "fastopt"))
        paired = statistics.median(a / b for a, b in zip(times["sklearn"], times["fastopt"]))
        print(f"{dtype}: scikit-learn {s:.3f} s, fastopt {f:.3f} s, speed-up {s / f:.2f}x "
              f"(median of the paired ratios {paired:.2f}x); test accuracy "
              f"{acc['sklearn']:.4f} / {acc['fastopt']:.4f}"
              + (f"; {waited_out} pairs ran without a quiet moment" if waited_out else ""))
        print("   runs (s): scikit-learn " + " ".join(f"{v:.2f}" for v in times["sklearn"])
              + "; fastopt " + " ".join(f"{v:.2f}" for v in times["fastopt"]))

    from autograd.misc import optimizers as ag

    from fastopt.integrations import autograd as fa

    grad, x0 = _autograd_problem()
    times = {"autograd": [], "fastopt": []}
    for r in range(args.repeat):
        _wait_until_quiet(args.quiet)
        for which, mod in ((("autograd", ag), ("fastopt", fa)) if r % 2 == 0
                           else (("fastopt", fa), ("autograd", ag))):
            t = time.perf_counter()
            mod.adam(grad, x0, num_iters=20)
            times[which].append((time.perf_counter() - t) / 20)
    a, f = (statistics.median(times[w]) for w in ("autograd", "fastopt"))
    print(f"autograd adam, 1M float64 parameters (dict of 2 arrays), quadratic gradient: "
          f"autograd {a * 1e3:.2f} ms, fastopt {f * 1e3:.2f} ms per iteration, speed-up {a / f:.2f}x")


if __name__ == "__main__":
    main()
