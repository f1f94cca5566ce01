"""The integrations against the libraries' own optimizers, timed in the same run.

``pytest benchmarks/test_bench_integrations.py --benchmark-only`` (autograd, PyTorch, thinc;
scikit-learn's MLPClassifier fits are ``fastopt bench``'s sklearn cases, in
``test_bench_cases.py``), or as a script for the figures in docs/guide/integrations.rst and
docs/guide/porting.rst (runs alternate between the two, median of ``--repeat``, waiting for
quiet moments)::

    python benchmarks/test_bench_integrations.py --repeat 5 [--quiet 0.9] [--only torch,thinc]
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


# ------------------------------------------------------------------ PyTorch

TORCH_SIZES = {"1M": 1 << 20, "16M": 1 << 24}


def _torch_params(torch, n, seed=0):
    """Four float32 parameters of ``n`` elements in all, with gradients."""
    g = torch.Generator().manual_seed(seed)
    sizes = [n // 2, n // 4, n // 8, n - n // 2 - n // 4 - n // 8]
    ps = [torch.nn.Parameter(torch.randn(k, generator=g)) for k in sizes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return ps


def _torch_adam(torch, which, params):
    if which == "torch":
        return torch.optim.Adam(params, lr=1e-3, fused=True)
    from fastopt.integrations.torch import Adam
    return Adam(params, lr=1e-3)


@pytest.mark.parametrize("size", list(TORCH_SIZES))
@pytest.mark.parametrize("which", ["torch", "fastopt"])
def test_torch_adam_step(benchmark, torch, which, size):
    opt = _torch_adam(torch, which, _torch_params(torch, TORCH_SIZES[size]))
    opt.step()
    benchmark.group = f"torch.optim.Adam(fused=True) vs fastopt.integrations.torch.Adam, {size} float32"
    benchmark.pedantic(opt.step, rounds=10, iterations=1)


def _torch_mlp(torch, hidden=1024):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, 10))
    X = torch.randn(256, 512)
    y = torch.randint(0, 10, (256,))
    return model, X, y


def _torch_train_step(torch, model, opt, X, y):
    """One training step; returns the seconds spent in forward + backward."""
    t = time.perf_counter()
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(X), y)
    loss.backward()
    fb = time.perf_counter() - t
    opt.step()
    return fb


@pytest.mark.parametrize("which", ["torch", "fastopt"])
def test_torch_training_step(benchmark, torch, which):
    model, X, y = _torch_mlp(torch)
    opt = _torch_adam(torch, which, list(model.parameters()))
    _torch_train_step(torch, model, opt, X, y)
    benchmark.group = "torch MLP (1.6M parameters) training step, Adam"
    benchmark.pedantic(_torch_train_step, args=(torch, model, opt, X, y), rounds=10, iterations=1)


def torch_rows(repeat, quiet):
    """The optimizer step at 1M and 16M parameters, and a training step's forward/backward
    time with either optimizer, each pair alternating in one run."""
    import torch

    import fastopt

    torch.set_num_threads(fastopt.get_num_threads())
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; fastopt "
          f"{fastopt.get_num_threads()} threads")
    for size, n in TORCH_SIZES.items():
        opts = {w: _torch_adam(torch, w, _torch_params(torch, n)) for w in ("torch", "fastopt")}
        times = {w: [] for w in opts}
        for o in opts.values():
            o.step()
        for r in range(repeat):
            _wait_until_quiet(quiet)
            for w in (("torch", "fastopt") if r % 2 == 0 else ("fastopt", "torch")):
                inner = []
                for _ in range(5):
                    t = time.perf_counter()
                    opts[w].step()
                    inner.append(time.perf_counter() - t)
                times[w].append(statistics.median(inner))
        a, f = (statistics.median(times[w]) for w in ("torch", "fastopt"))
        print(f"Adam step, {size} float32 parameters: torch fused {a * 1e3:.2f} ms, "
              f"fastopt.integrations.torch {f * 1e3:.2f} ms, speed-up {a / f:.2f}x")
    fb = {"torch": [], "fastopt": []}
    step = {"torch": [], "fastopt": []}
    runs = {}
    for w in fb:
        model, X, y = _torch_mlp(torch)
        runs[w] = (model, _torch_adam(torch, w, list(model.parameters())), X, y)
        _torch_train_step(torch, *[runs[w][0], runs[w][1], X, y])
    for r in range(repeat):
        _wait_until_quiet(quiet)
        for w in (("torch", "fastopt") if r % 2 == 0 else ("fastopt", "torch")):
            model, opt, X, y = runs[w]
            inner_fb, inner = [], []
            for _ in range(5):
                t = time.perf_counter()
                inner_fb.append(_torch_train_step(torch, model, opt, X, y))
                inner.append(time.perf_counter() - t)
            fb[w].append(statistics.median(inner_fb))
            step[w].append(statistics.median(inner))
    nparams = sum(p.numel() for p in runs["torch"][0].parameters())
    a, f = (statistics.median(fb[w]) for w in fb)
    sa, sf = (statistics.median(step[w]) for w in step)
    print(f"torch MLP ({nparams / 1e6:.2f}M parameters, batch 256), forward+backward: "
          f"{a * 1e3:.2f} ms with torch's Adam, {f * 1e3:.2f} ms with fastopt's "
          f"(ratio {f / a:.3f}); whole step {sa * 1e3:.2f} / {sf * 1e3:.2f} ms "
          f"(speed-up {sa / sf:.2f}x)")


# ------------------------------------------------------------------ thinc

def _thinc_model(hidden=1024, width=512, classes=50):
    from thinc.api import Relu, Softmax, chain, fix_random_seed

    fix_random_seed(0)
    model = chain(Relu(nO=hidden), Relu(nO=hidden), Softmax(nO=classes))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, width)).astype(np.float32)
    Y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, 128)]
    model.initialize(X=X, Y=Y)
    return model, X, Y


def _thinc_optimizer(which):
    if which == "thinc":
        from thinc.api import Adam
    else:
        from fastopt.integrations.thinc import Adam
    return Adam(0.001)


def _thinc_update(model, opt, X, Y):
    """One thinc training step; returns the seconds in finish_update."""
    Yh, backprop = model.begin_update(X)
    backprop((Yh - Y) / len(Y))
    t = time.perf_counter()
    model.finish_update(opt)
    dt = time.perf_counter() - t
    opt.step_schedules()
    return dt


@pytest.mark.parametrize("which", ["thinc", "fastopt"])
def test_thinc_finish_update(benchmark, which):
    pytest.importorskip("thinc")
    model, X, Y = _thinc_model()
    opt = _thinc_optimizer(which)
    for _ in range(2):
        _thinc_update(model, opt, X, Y)
    benchmark.group = "thinc Relu>>Relu>>Softmax (1.6M parameters) update, Adam defaults"
    benchmark.pedantic(_thinc_update, args=(model, opt, X, Y), rounds=10, iterations=1)


def thinc_rows(repeat, quiet):
    """thinc's Adam (defaults: grad_clip=1.0, use_averages=True) against fastopt's, on one
    model, alternating: ``finish_update`` alone and the whole training step."""
    import thinc

    runs = {}
    for w in ("thinc", "fastopt"):
        model, X, Y = _thinc_model()
        runs[w] = (model, _thinc_optimizer(w), X, Y)
        for _ in range(2):
            _thinc_update(*runs[w])
    fu = {w: [] for w in runs}
    whole = {w: [] for w in runs}
    for r in range(repeat):
        _wait_until_quiet(quiet)
        for w in (("thinc", "fastopt") if r % 2 == 0 else ("fastopt", "thinc")):
            a, b = [], []
            for _ in range(5):
                t = time.perf_counter()
                a.append(_thinc_update(*runs[w]))
                b.append(time.perf_counter() - t)
            fu[w].append(statistics.median(a))
            whole[w].append(statistics.median(b))
    n = sum(node.get_param(name).size for node in runs["thinc"][0].walk()
            for name in node.param_names if node.has_param(name))
    a, f = (statistics.median(fu[w]) for w in runs)
    sa, sf = (statistics.median(whole[w]) for w in runs)
    print(f"thinc {thinc.__version__} Relu>>Relu>>Softmax ({n / 1e6:.2f}M parameters, batch 128), "
          f"Adam(0.001) defaults: finish_update {a * 1e3:.2f} ms (thinc) vs {f * 1e3:.2f} ms "
          f"(fastopt), speed-up {a / f:.2f}x; whole step {sa * 1e3:.2f} / {sf * 1e3:.2f} ms, "
          f"speed-up {sa / sf:.2f}x")


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
    ap.add_argument("--only", default="sklearn,autograd,torch,thinc",
                    help="comma-separated sections to run (default: all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for fastopt and PyTorch (default: fastopt's default); on a "
                         "busy machine 1 gives steadier figures")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    import fastopt

    if args.threads:
        fastopt.set_num_threads(args.threads)

    if "torch" in only:
        torch_rows(args.repeat, args.quiet)
    if "thinc" in only:
        thinc_rows(args.repeat, args.quiet)
    if "sklearn" not in only and "autograd" not in only:
        return

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
