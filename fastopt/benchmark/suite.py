"""``fastopt bench``: every kernel against the memory roofline, NumPy and PyTorch, in one run.

Each row times one operation (median of ``reps`` repetitions after a warm-up)
and reports:

* the effective bandwidth: the bytes the operation must move (each buffer read
  or written once per pass) divided by its time;
* the fraction of the in-process roofline: the time of a pass compiled with
  the same flags that reads and writes the same buffers with no real
  arithmetic (``fastopt._ext.*._roofline``), divided by the kernel's time;
* the speed-up over the NumPy reference (``fastopt.reference``) and, when
  PyTorch is installed, over PyTorch on the same data
  (``torch.optim.SGD/Adam/AdamW(fused=True)``, ``torch.optim.RMSprop``,
  ``torch.nn.functional.batch_norm`` forward + backward), with as many torch
  threads as fastopt threads.

Absolute times on a shared machine mean little; the ratios come from the same
run and the same buffers.
"""

import json
import math
import platform
import time

import numpy as np

from .. import kernels as K
from .. import reference as R
from ..runtime.dispatch import ext
from ..optim.registry import SPECS
from ..runtime.threads import get_num_threads

SIZES = {"64K": 1 << 16, "1M": 1 << 20, "16M": 1 << 24}
BN_SHAPES = [(256, 1024), (4096, 1024), (64, 64, 56, 56)]
QUICK_SIZES = {"64K": 1 << 16, "1M": 1 << 20}
QUICK_BN_SHAPES = [(256, 1024), (16, 16, 28, 28)]


def _median_time(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _torch_time(fn, reps):
    """Time a PyTorch callable, then let its OpenMP workers (a separate runtime) go idle so
    their spinning does not slow the next fastopt measurement."""
    t = _median_time(fn, reps)
    time.sleep(0.1)
    return t


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(get_num_threads())
    return torch


# ------------------------------------------------------------------ optimizers

#: The optimizers benchmarked: those with a PyTorch twin to compare against, by row name.
OPTIMIZERS = {spec.bench_name: spec for spec in SPECS.values() if spec.torch is not None}


def bench_optimizer(name, n, reps, torch=None, dtype=np.float32):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    spec = OPTIMIZERS[name]
    s = [np.abs(rng.standard_normal(n)).astype(dtype) * 1e-3 for _ in spec.state]
    nt = get_num_threads()
    t = _median_time(lambda: spec.call(K, p, g, s, step=10), reps)
    ref_reps = reps if n < (1 << 23) else max(3, reps // 2)
    s_ref = [x.copy() for x in s]
    tr = _median_time(lambda: spec.call(R, p, g, s_ref, step=10), ref_reps, warmup=1)
    # the roofline moves the same bytes (float64 buffers seen as twice as many float32)
    f32 = [a.view(np.float32) for a in [p] + s]
    troof = _median_time(lambda: ext._roofline.update(f32, g.view(np.float32), nt), reps)
    label = name if np.dtype(dtype) == np.float32 else f"{name} {np.dtype(dtype).name}"
    row = dict(group="optimizer", name=label, size=n, time=t,
               bytes=spec.bytes_per_element(dtype) * n, roofline_time=troof, reference_time=tr)
    if torch is not None:
        row["torch_time"] = _torch_time(spec.torch_step(torch, p, g), reps)
    return row


# ------------------------------------------------------------------ batch norm

def bench_batchnorm(shape, reps, torch=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    nt = get_num_threads()

    def fwd_bwd(mod):
        def f():
            _, mean, invstd = mod.batchnorm_forward(x, gamma, beta, rm, rv, out=y)
            mod.batchnorm_backward(dy, x, gamma, mean, invstd, out=(dx, None, None))
        return f

    xf, dyf, yf, dxf = (a.reshape(-1) for a in (x, dy, y, dx))

    def roofline():  # stats (read x), normalize (x -> y), sums (read x, dy), dx (x, dy -> dx)
        ext._roofline.reduce(xf, None, nt)
        ext._roofline.map(xf, None, yf, nt)
        ext._roofline.reduce(xf, dyf, nt)
        ext._roofline.map(xf, dyf, dxf, nt)

    row = dict(group="batchnorm", name="batchnorm fwd+bwd", size=shape,
               time=_median_time(fwd_bwd(K), reps), bytes=8 * 4 * x.size,
               roofline_time=_median_time(roofline, reps),
               reference_time=_median_time(fwd_bwd(R), max(3, reps // 2), warmup=1))
    if torch is not None:
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tg = torch.ones(C, requires_grad=True)
        tb = torch.zeros(C, requires_grad=True)
        trm, trv = torch.zeros(C), torch.ones(C)
        tdy = torch.from_numpy(dy)

        def tf():
            out = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=True,
                                                 momentum=0.1, eps=1e-5)
            torch.autograd.grad(out, (tx, tg, tb), tdy)

        row["torch_time"] = _torch_time(tf, reps)
    return row


# ------------------------------------------------------------------ whole steps

def bench_train_step(reps, batch_size=256):
    """One step (forward, backward, Adam) of the demo MLP on a batch of digits."""
    from ..data.datasets import prepare_data
    from ..nn.models import MLP
    from ..optim import Adam

    Xtr, ytr, _, _, _ = prepare_data(0)
    Xb, yb = np.ascontiguousarray(Xtr[:batch_size]), ytr[:batch_size]
    times = {}
    for impl in ("fused", "reference"):
        model = MLP((64, 256, 256, 10), rng=0, impl=impl)
        opt = Adam(model.params, lr=1e-3, impl=impl)

        def step(model=model, opt=opt):
            model.loss_and_grad(Xb, yb)
            opt.step()

        times[impl] = _median_time(step, reps)
    return dict(group="train", name=f"MLP train step (batch {batch_size})",
                size=model.params.size, time=times["fused"], reference_time=times["reference"])


def model_shapes(blocks=20, d=208):
    """~160 tensors of transformer-like sizes (~10M elements)."""
    shapes = {}
    for b in range(blocks):
        shapes.update({f"{b}.qkv": (d, 3 * d), f"{b}.out": (d, d), f"{b}.ff1": (d, 4 * d),
                       f"{b}.ff2": (4 * d, d), f"{b}.ff1.b": (4 * d,), f"{b}.ff2.b": (d,),
                       f"{b}.ln.g": (d,), f"{b}.ln.b": (d,)})
    return shapes


def bench_model(reps, torch=None):
    from ..nn.flat import FlatParams
    from ..optim import Adam

    shapes = model_shapes()
    fp = FlatParams(shapes)
    rng = np.random.default_rng(0)
    fp.data[...] = rng.standard_normal(fp.size).astype(np.float32)
    fp.grad[...] = rng.standard_normal(fp.size).astype(np.float32)
    opt = Adam(fp, lr=1e-3)
    ref = Adam(FlatParams.from_arrays(fp.params), lr=1e-3, impl="reference")
    ref.flat.grad[...] = fp.grad
    nt = get_num_threads()
    state = opt.state["exp_avg"] + opt.state["exp_avg_sq"]
    row = dict(group="model", name=f"Adam, {len(shapes)} tensors", size=fp.size,
               time=_median_time(opt.step, reps), bytes=7 * 4 * fp.size,
               roofline_time=_median_time(
                   lambda: ext._roofline.update([fp.data] + state, fp.grad, nt), reps),
               reference_time=_median_time(ref.step, max(3, reps // 2), warmup=1))
    if torch is not None:
        params = []
        for k in fp:
            t = torch.nn.Parameter(torch.from_numpy(fp.params[k].copy()))
            t.grad = torch.from_numpy(fp.grads[k].copy())
            params.append(t)
        topt = torch.optim.Adam(params, lr=1e-3, fused=True)
        row["torch_time"] = _torch_time(topt.step, reps)
    return row


# ------------------------------------------------------------------ lists of arrays

#: (arrays, smallest, largest): the list-mode rows (sizes drawn uniformly, fixed seed).
LIST_CASES = [(200, 64, 1024), (100, 1024, 10240)]


def bench_list(count, lo, hi, reps, torch=None):
    """Adam over a list of ``count`` arrays against the same values in one FlatParams.

    The list is what most NumPy code keeps; with it the optimizer makes one compiled call
    over its table of chunks, checking the gradients it is passed each step.  PyTorch's
    fused Adam runs over the same list.
    """
    from ..nn.flat import FlatParams
    from ..optim import Adam

    rng = np.random.default_rng(0)
    sizes = [int(x) for x in rng.integers(lo, hi + 1, count)]
    params = [rng.standard_normal(k).astype(np.float32) for k in sizes]
    grads = [rng.standard_normal(k).astype(np.float32) for k in sizes]
    fp = FlatParams({f"p{i}": (k,) for i, k in enumerate(sizes)})
    for i, (p, g) in enumerate(zip(params, grads)):
        fp.params[f"p{i}"][...] = p
        fp.grads[f"p{i}"][...] = g
    opt_list, opt_flat = Adam(params, lr=1e-3), Adam(fp, lr=1e-3)
    ref = Adam([p.copy() for p in params], lr=1e-3, impl="reference")
    loops = 20   # steps per timing: one step is tens of microseconds

    def many(step):
        def f():
            for _ in range(loops):
                step()
        return f

    # the two alternate, so that both see the same machine
    t_list, t_flat = [], []
    for _ in range(reps):
        t_list.append(_median_time(many(lambda: opt_list.step(grads)), 1, warmup=1) / loops)
        t_flat.append(_median_time(many(opt_flat.step), 1, warmup=1) / loops)
    row = dict(group="list", name=f"adam, {count} arrays", size=fp.size, arrays=count,
               time=float(np.median(t_list)), flat_time=float(np.median(t_flat)),
               reference_time=_median_time(lambda: ref.step(grads), max(3, reps // 2), warmup=1),
               bytes=OPTIMIZERS["adam"].bytes_per_element() * fp.size)
    if torch is not None:
        row["torch_time"] = _torch_time(
            OPTIMIZERS["adam"].torch_optimizer(torch, params, grads).step, reps)
    return row


# ------------------------------------------------------------------ clipping fused into the step

def bench_clip(n, reps, torch=None):
    """Adam with ``max_grad_norm`` (one read-only norm pass, the scale folded into the step)
    against the norm, a scaling pass and the step apart; with the non-finite guard; and
    PyTorch's ``clip_grad_norm_`` followed by its fused Adam."""
    from ..nn.flat import FlatParams
    from ..optim import Adam

    rng = np.random.default_rng(0)
    fp = FlatParams({"w": (n,)})
    fp.data[...] = rng.standard_normal(n)
    fp.grad[...] = rng.standard_normal(n)
    nt = get_num_threads()
    fused = Adam(fp, lr=1e-3, max_grad_norm=1.0)
    guarded = Adam(fp, lr=1e-3, max_grad_norm=1.0, skip_nonfinite=True)
    plain = Adam(fp, lr=1e-3)

    def apart():  # clip_grad_norm_ then step: a norm pass, a scaling pass, the step
        norm = ext._optim.sum_of_squares(fp.grad, nt) ** 0.5
        ext._optim.scale(fp.grad, 1.0 / (norm + 1e-6) if norm > 1.0 else 1.0, nt)
        plain.step()

    g0 = fp.grad.copy()
    times = {"fused": [], "guard": [], "apart": []}
    for step in (fused.step, guarded.step, apart):     # warm up: every state buffer touched
        step()
        fp.grad[...] = g0
    for _ in range(reps):      # alternating, each from the same gradient (apart scales it)
        for name, step in (("fused", fused.step), ("guard", guarded.step), ("apart", apart)):
            times[name].append(_median_time(step, 1, warmup=0))
            fp.grad[...] = g0
    row = dict(group="clip", name="adam + clip", size=n, time=float(np.median(times["fused"])),
               guard_time=float(np.median(times["guard"])),
               apart_time=float(np.median(times["apart"])))
    if torch is not None:
        tp = torch.nn.Parameter(torch.from_numpy(fp.data.copy()))
        tp.grad = torch.from_numpy(g0.copy())
        topt = torch.optim.Adam([tp], lr=1e-3, fused=True)

        def tstep():
            torch.nn.utils.clip_grad_norm_([tp], 1.0)
            topt.step()

        row["torch_time"] = _torch_time(tstep, reps)
    return row


# ------------------------------------------------------------------ low-precision state

#: The state dtypes of the "state" rows, by row name.
STATE_DTYPES = {"adam float32": "float32", "adam bfloat16": "bfloat16", "adam int8": "int8"}


def _bitsandbytes_step(torch, p, g):
    """``bitsandbytes.optim.Adam8bit``'s step on a CPU float32 copy of ``p``, or the reason
    why there is none (a string)."""
    if torch is None:
        return "bitsandbytes not measured: torch not installed"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bitsandbytes as bnb
    except ImportError:
        return "bitsandbytes not installed"
    except Exception as e:  # a broken install: no CPU library, a torch it does not know, ...
        return f"bitsandbytes does not import: {type(e).__name__}: {e}"
    try:
        tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
        tp.grad = torch.from_numpy(g.copy())
        opt = bnb.optim.Adam8bit([tp], lr=1e-3)
        opt.step()
        if not bool(torch.isfinite(tp.detach()).all()):
            return f"bitsandbytes {bnb.__version__}: Adam8bit gave non-finite values on CPU"
    except Exception as e:
        return (f"bitsandbytes {getattr(bnb, '__version__', '?')}: Adam8bit cannot step a CPU "
                f"float32 tensor: {type(e).__name__}: {e}")
    return opt.step


def bench_state(n, reps, torch=None, use_bitsandbytes=True, notes=None):
    """Adam with float32, bfloat16 and int8 state (:mod:`fastopt.kernels.lowbit`) at ``n``
    elements; returns one row per state dtype, plus bitsandbytes' ``Adam8bit`` on CPU when it
    is installed and can step (``use_bitsandbytes``; else the reason is appended to
    ``notes``).

    Each row: the median time of a step; the bytes the step must move (param read and
    written, grad read, the state read and written: 28 B/elem with float32 state, 20 with
    bfloat16, 16 with int8 plus 16 B per block of 256 for the absmax); the time of the
    in-process roofline pass moving the row's own buffers with one add per element
    (``_roofline.update`` for float32 state, ``_lowbit.roofline`` for the uint16 / uint8
    state); ``roofline_f32_time``, the row's bytes at the bandwidth of the float32 pass (seven
    interleaved streams, as Adam's; the low-precision pass moves its buffers one after another
    per block and reaches more GB/s, so both yardsticks are given); PyTorch's fused float32
    Adam on the same values in the same run; and the state bytes per parameter.  All the
    measurements (kernels, roofline passes, PyTorch, bitsandbytes) interleave round robin, so
    drift on a shared machine hits every row alike.
    """
    from ..kernels import lowbit as L

    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    nt = get_num_threads()
    m32, v32 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    mb, vb = L.zeros_bf16(n), L.zeros_bf16(n)
    (mc, ma), (vc, va) = L.zeros_int8(n, L.signed_map()), L.zeros_int8(n, L.unsigned_map())
    nb = L.absmax_size(n)
    # name: (step, bytes the step must move, roofline pass or None)
    steps = {
        "adam float32": (lambda: K.adam_step(p, g, m32, v32, step=10, lr=1e-3), 28 * n,
                         lambda: ext._roofline.update([p, m32, v32], g, nt)),
        "adam bfloat16": (lambda: L.adam_step_bf16(p, g, mb, vb, step=10, lr=1e-3), 20 * n,
                          lambda: ext._lowbit.roofline(p, g, [mb, vb], nt)),
        "adam int8": (lambda: L.adam_step_int8(p, g, mc, ma, vc, va, step=10, lr=1e-3),
                      16 * n + 16 * nb, lambda: ext._lowbit.roofline(p, g, [mc, vc], nt)),
    }
    peer = {}   # steps in another runtime: a pause after each lets its threads go idle
    if torch is not None:
        tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
        tp.grad = torch.from_numpy(g.copy())
        peer["torch"] = torch.optim.Adam([tp], lr=1e-3, fused=True).step
    if use_bitsandbytes:
        bnb = _bitsandbytes_step(torch, p, g)
        if isinstance(bnb, str):
            if notes is not None:
                notes.append(bnb)
        else:
            peer["bitsandbytes Adam8bit"] = bnb
    calls = {k: (fn, roof) for k, (fn, _, roof) in steps.items()}
    calls.update({k: (fn, None) for k, fn in peer.items()})
    for fn, roof in calls.values():   # warm up (and fill the state with real values)
        for _ in range(3):
            fn()
            if roof is not None:
                roof()
    times = {k: [] for k in calls}
    rtimes = {k: [] for k in calls}
    for _ in range(reps):
        for k, (fn, roof) in calls.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
            if roof is not None:
                t = time.perf_counter()
                roof()
                rtimes[k].append(time.perf_counter() - t)
            if k in peer:   # as _torch_time: let its OpenMP workers go idle
                time.sleep(0.1)
    med = {k: float(np.median(v)) for k, v in times.items()}
    troof = {k: float(np.median(v)) for k, v in rtimes.items() if v}
    rows = []
    for k, (_, nbytes, _) in steps.items():
        dtype = STATE_DTYPES[k]
        rows.append(dict(group="state", name=k, size=n, state_dtype=dtype, time=med[k],
                         bytes=nbytes, roofline_time=troof[k],
                         roofline_f32_time=troof["adam float32"] * nbytes / (28 * n),
                         state_bytes_per_param=L.state_bytes(n, dtype, 2) / n))
    if "bitsandbytes Adam8bit" in peer:
        import bitsandbytes

        # Adam8bit keeps arrays under its min_8bit_size (4,096) in float32 state
        dtype = "int8" if n >= 4096 else "float32"
        rows.append(dict(group="state", name="bitsandbytes Adam8bit", size=n, state_dtype=dtype,
                         time=med["bitsandbytes Adam8bit"], bytes=rows[-1]["bytes"]
                         if dtype == "int8" else 28 * n,
                         state_bytes_per_param=L.state_bytes(n, dtype, 2) / n,
                         version=bitsandbytes.__version__))
    if "torch" in peer:
        for r in rows:
            r["torch_time"] = med["torch"]
    return rows


# ------------------------------------------------------------------ scikit-learn

def bench_sklearn(reps, dtype="float64", hidden=(1024, 1024), epochs=5):
    """``fastopt.integrations.sklearn.MLPClassifier`` against scikit-learn's own, same data
    (digits), same settings, fits alternating; None when scikit-learn is not installed."""
    import warnings

    try:
        from sklearn.neural_network import MLPClassifier as SkMLP
    except ImportError:
        return None
    from ..data import load_digits
    from ..integrations.sklearn import MLPClassifier as FoMLP

    X, y = load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:360], order[360:]
    X = (X / 16.0).astype(dtype)
    times = {"sklearn": [], "fastopt": []}
    acc = {}
    for _ in range(reps):
        for name, cls in (("sklearn", SkMLP), ("fastopt", FoMLP)):
            model = cls(hidden_layer_sizes=hidden, max_iter=epochs, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # ConvergenceWarning after a few epochs
                t = time.perf_counter()
                model.fit(X[train], y[train])
                times[name].append(time.perf_counter() - t)
            acc[name] = float(model.score(X[test], y[test]))
    return dict(group="sklearn", name=f"MLPClassifier {dtype}", size=hidden, dtype=dtype,
                time=float(np.median(times["fastopt"])),
                sklearn_time=float(np.median(times["sklearn"])),
                accuracy=acc["fastopt"], sklearn_accuracy=acc["sklearn"])


# ------------------------------------------------------------------ sharing the cores with BLAS

def bench_sharing(what, reps, loops=20):
    """A fastopt kernel then a 256x256 NumPy matmul, ``loops`` times, against the parts apart."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((256, 256)).astype(np.float32)
    out = np.empty_like(A)
    if isinstance(what, int):
        p = rng.standard_normal(what).astype(np.float32)
        g, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
        kernel = lambda: K.adam_step(p, g, m, v, step=2, lr=1e-3)  # noqa: E731
        name, size = "adam + matmul", what
    else:
        x = rng.standard_normal(what).astype(np.float32)
        C = what[1]
        gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
        y = np.empty_like(x)

        def kernel():
            _, mu, s = K.batchnorm_forward(x, gamma, beta, None, None, out=y)
            K.batchnorm_backward(x, x, gamma, mu, s, out=(y, None, None))

        name, size = "batchnorm + matmul", what
    matmul = lambda: np.matmul(A, A, out=out)  # noqa: E731
    tk = _median_time(lambda: [kernel() for _ in range(loops)], reps)
    tm = _median_time(lambda: [matmul() for _ in range(loops)], reps)
    ta = _median_time(lambda: [(kernel(), matmul()) for _ in range(loops)], reps)
    row = dict(group="sharing", name=name, size=size, kernel_time=tk / loops,
               matmul_time=tm / loops, alternating_time=ta / loops, ratio=ta / (tk + tm))
    # The same loop with NumPy's BLAS jobs on fastopt's pool (FASTOPT_BLAS_THREADS=shared).
    from ..runtime import blas

    was_shared = bool(blas.shared_libraries())
    if was_shared or blas.share_blas_threads():
        try:
            ts = _median_time(lambda: [(kernel(), matmul()) for _ in range(loops)], reps)
        finally:
            if not was_shared:
                blas.restore_blas_threads()
        row.update(alternating_shared_time=ts / loops, ratio_shared=ts / (tk + tm))
    return row


# ------------------------------------------------------------------ under load

LOAD_CASES = ("adam 1M", "batchnorm 4096x1024", "MLP train step", "MLP step, BLAS 1 thread",
              "torch fused Adam 1M")


def _load_step(case, threads):
    """The step function one process of :func:`bench_under_load` times."""
    rng = np.random.default_rng(0)
    if case == "adam 1M":
        p = rng.standard_normal(1 << 20).astype(np.float32)
        g, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
        return lambda: K.adam_step(p, g, m, v, step=2, lr=1e-3)
    if case == "batchnorm 4096x1024":
        x = rng.standard_normal((4096, 1024)).astype(np.float32)
        gamma, beta = np.ones(1024, np.float32), np.zeros(1024, np.float32)
        y = np.empty_like(x)

        def bn():
            _, mu, s = K.batchnorm_forward(x, gamma, beta, None, None, out=y)
            K.batchnorm_backward(x, x, gamma, mu, s, out=(y, None, None))
        return bn
    if case.startswith("MLP"):  # "MLP step, BLAS 1 thread": as fastopt train runs it
        from ..data.datasets import prepare_data
        from ..nn.models import MLP
        from ..optim import Adam

        Xtr, ytr, _, _, _ = prepare_data(0)
        Xb, yb = np.ascontiguousarray(Xtr[:256]), ytr[:256]
        model = MLP((64, 256, 256, 10), rng=0)
        opt = Adam(model.params, lr=1e-3)

        def step():
            model.loss_and_grad(Xb, yb)
            opt.step()
        return step
    if case == "torch fused Adam 1M":
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        p = rng.standard_normal(1 << 20).astype(np.float32)
        return SPECS["adam"].torch_step(torch, p, p.copy())
    raise ValueError(f"case must be one of {LOAD_CASES}, got {case!r}")


def _load_worker(case, threads, seconds):
    """One process of bench_under_load: warm up, say 'ready', wait for 'go', time steps."""
    import contextlib
    import sys

    from ..runtime.blas import limited_blas_threads

    if threads is not None:
        from ..runtime.threads import set_num_threads

        set_num_threads(threads)
    blas = limited_blas_threads(1) if "BLAS 1 thread" in case else contextlib.nullcontext()
    with blas:
        step = _load_step(case, threads)
        for _ in range(3):
            step()
        print("ready", flush=True)
        sys.stdin.readline()
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    print(json.dumps(float(np.median(times))), flush=True)


def _side_by_side(case, threads, seconds, nproc=2):
    """Median step time of each of ``nproc`` processes running ``case`` at the same time."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if threads is not None:  # the BLAS of "one thread each" is single-threaded too
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    code = f"from fastopt.benchmark.suite import _load_worker; _load_worker({case!r}, {threads!r}, {seconds!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(nproc)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"bench worker for {case!r} failed to start")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return [json.loads(p.communicate(timeout=120 + 10 * seconds)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def bench_under_load(case, seconds=1.0, torch=None):
    """Two processes side by side on the same cores: default threads against one thread each
    (what joblib n_jobs=2, a multiprocessing pool or two MPI ranks on a node do)."""
    if case.startswith("torch") and torch is None:
        return None
    alone = _side_by_side(case, None, seconds, nproc=1)[0]
    default = max(_side_by_side(case, None, seconds))
    single = max(_side_by_side(case, 1, seconds))
    return dict(group="load", name=case, size=None, time=default, alone_time=alone,
                single_time=single, ratio=default / single)


# ------------------------------------------------------------------ driver and output

#: The row groups, in the order they run (``run(only=...)`` and ``fastopt bench --only`` pick some).
GROUPS = ("optimizer", "list", "clip", "state", "sklearn", "batchnorm", "train", "model", "sharing",
          "load")


def run(*, quick=False, reps=None, use_torch=True, include_train=True, include_load=True,
        only=None, progress=None):
    """Run the whole suite (or the row groups in ``only``, names from :data:`GROUPS`); returns a
    dict with ``meta`` (``meta["notes"]``: what was left out and why) and ``rows``."""
    if only is not None:
        only = set(only)
        if not only or not only <= set(GROUPS):
            raise ValueError(f"only must name some of {GROUPS}, got {sorted(only)}")
    torch = _torch() if use_torch else None
    reps = reps or (3 if quick else 7)
    sizes = QUICK_SIZES if quick else SIZES
    shapes = QUICK_BN_SHAPES if quick else BN_SHAPES
    rows, notes = [], []
    jobs = [("optimizer", bench_optimizer, (name, n, reps, torch))
            for name in OPTIMIZERS for n in sizes.values()]
    jobs.append(("optimizer", bench_optimizer, ("adam", 1 << 20, reps, torch, np.float64)))
    jobs += [("list", bench_list, (*case, reps, torch)) for case in LIST_CASES]
    jobs.append(("clip", bench_clip, (max(sizes.values()), reps, torch)))
    jobs.append(("state", bench_state, (max(sizes.values()), reps, torch, True, notes)))
    if not quick:
        jobs += [("sklearn", bench_sklearn, (3, dtype)) for dtype in ("float64", "float32")]
    jobs += [("batchnorm", bench_batchnorm, (s, reps, torch)) for s in shapes]
    if include_train:
        jobs.append(("train", bench_train_step, (reps,)))
    jobs.append(("model", bench_model, (reps, torch)))
    for what in list(sizes.values()) + [shapes[-1]]:
        jobs.append(("sharing", bench_sharing, (what, reps)))
    if include_load:
        jobs += [("load", bench_under_load, (case, 0.5 if quick else 1.0, torch))
                 for case in LOAD_CASES if include_train or not case.startswith("MLP")]
    if only is not None:
        jobs = [job for job in jobs if job[0] in only]
    for i, (_, fn, args) in enumerate(jobs):
        if progress:
            progress(i, len(jobs))
        row = fn(*args)
        if isinstance(row, list):
            rows += row
        elif row is not None:
            rows.append(row)
    import fastopt

    meta = dict(version=fastopt.__version__, isa=ext.level, threads=get_num_threads(),
                machine=platform.machine(), processor=platform.processor(), reps=reps,
                numpy=np.__version__, torch=None if torch is None else torch.__version__,
                blas_shared=bool(fastopt.info()["blas_shared"]), notes=notes)
    return {"meta": meta, "rows": rows}


#: The row groups of the main table (kernel, size, time, GB/s, roofline, vs NumPy, vs torch).
MAIN_TABLE = ("optimizer", "batchnorm", "train", "model")


def _size_label(size):
    if isinstance(size, tuple):
        return "x".join(map(str, size))
    for label, n in SIZES.items():
        if n == size:
            return label
    return f"{size / 1e6:.1f}M" if size >= 1e6 else f"{size / 1e3:.0f}K"


def _ratio(x):
    return "—" if x is None or not math.isfinite(x) else f"{x:.1f}x"


def format_table(result):
    m = result["meta"]
    torch_note = f"torch {m['torch']}" if m["torch"] else "torch not installed: no torch column"
    lines = [f"fastopt {m['version']} bench: isa {m['isa']}, {m['threads']} threads, {torch_note}, "
             f"median of {m['reps']}"]
    main = [r for r in result["rows"] if r["group"] in MAIN_TABLE]  # the others: tables below
    if main:
        lines.append(f"{'kernel':<22} {'size':>13} {'fastopt':>11} {'GB/s':>7} {'roofline':>9} "
                     f"{'vs NumPy':>9} {'vs torch':>9}")
    for r in main:
        gbs = r["bytes"] / r["time"] / 1e9 if "bytes" in r else None
        roof = r["roofline_time"] / r["time"] if "roofline_time" in r else None
        lines.append(
            f"{r['name']:<22} {_size_label(r['size']):>13} {r['time'] * 1e3:8.3f} ms "
            f"{'—' if gbs is None else f'{gbs:7.1f}':>7} "
            f"{'—' if roof is None else f'{roof:9.2f}':>9} "
            f"{_ratio(r['reference_time'] / r['time']):>9} "
            f"{_ratio(r['torch_time'] / r['time'] if 'torch_time' in r else None):>9}")
    if main:
        lines.append("GB/s: bytes the operation must move / time. roofline: time of a pass moving "
                     "the same bytes with no arithmetic / kernel time. vs X: X's time / fastopt's "
                     "time.")
    lists = [r for r in result["rows"] if r["group"] == "list"]
    if lists:
        lines += ["", "A list of arrays (one compiled call over a table of chunks) against the same "
                      "values in one FlatParams:",
                  f"{'optimizer':<22} {'elements':>9} {'list':>11} {'FlatParams':>11} "
                  f"{'list/flat':>10} {'vs NumPy':>9} {'vs torch':>9}"]
        for r in lists:
            lines.append(
                f"{r['name']:<22} {_size_label(r['size']):>9} {r['time'] * 1e3:8.3f} ms "
                f"{r['flat_time'] * 1e3:8.3f} ms {r['time'] / r['flat_time']:10.2f} "
                f"{_ratio(r['reference_time'] / r['time']):>9} "
                f"{_ratio(r['torch_time'] / r['time'] if 'torch_time' in r else None):>9}")
    clip = [r for r in result["rows"] if r["group"] == "clip"]
    if clip:
        lines += ["", "Clipping (max_grad_norm) fused into the step, against clip_grad_norm_ then the "
                      "step ('apart': a norm pass, a scaling pass, the step):",
                  f"{'step':<22} {'size':>9} {'fused':>11} {'apart':>11} {'apart/fused':>12} "
                  f"{'+guard':>11} {'guard cost':>11} {'vs torch':>9}"]
        for r in clip:
            lines.append(
                f"{r['name']:<22} {_size_label(r['size']):>9} {r['time'] * 1e3:8.3f} ms "
                f"{r['apart_time'] * 1e3:8.3f} ms {r['apart_time'] / r['time']:12.2f} "
                f"{r['guard_time'] * 1e3:8.3f} ms {r['guard_time'] / r['time'] - 1:+10.1%} "
                f"{_ratio(r['torch_time'] / r['time'] if 'torch_time' in r else None):>9}")
    state = [r for r in result["rows"] if r["group"] == "state"]
    if state:
        torch_t = state[0].get("torch_time")
        torch_note = (f"PyTorch's fused float32 Adam ({torch_t * 1e3:.3f} ms) / time"
                      if torch_t else "—: torch not installed")
        lines += ["", "Adam with float32, bfloat16 and int8 state (fastopt.kernels.lowbit), measured "
                      f"round robin; vs torch: {torch_note}:",
                  f"{'step':<22} {'size':>9} {'time':>11} {'GB/s':>7} {'roofline':>9} "
                  f"{'roof f32 bw':>12} {'vs torch':>9} {'state B/param':>14}"]
        for r in state:
            gbs = r["bytes"] / r["time"] / 1e9
            roof = r["roofline_time"] / r["time"] if "roofline_time" in r else None
            roof32 = r["roofline_f32_time"] / r["time"] if "roofline_f32_time" in r else None
            vs = r["torch_time"] / r["time"] if "torch_time" in r else None
            lines.append(
                f"{r['name']:<22} {_size_label(r['size']):>9} {r['time'] * 1e3:8.3f} ms "
                f"{gbs:7.1f} {'—' if roof is None else f'{roof:.2f}':>9} "
                f"{'—' if roof32 is None else f'{roof32:.2f}':>12} "
                f"{'—' if vs is None else f'{vs:.2f}x':>9} {r['state_bytes_per_param']:14.2f}")
        lines.append("GB/s: bytes the step must move (param, grad, state: 28 B/elem with float32 "
                     "state, 20 bfloat16, 16 + absmax int8) / time. roofline: a pass moving the "
                     "row's own buffers with one add per element / time. roof f32 bw: the row's "
                     "bytes at the float32 pass's bandwidth / time.")
        lines += [f"note: {note}" for note in m.get("notes", ())]
    sk = [r for r in result["rows"] if r["group"] == "sklearn"]
    if sk:
        lines += ["", "scikit-learn's MLPClassifier(hidden_layer_sizes=(1024, 1024), max_iter=5) on "
                      "digits, fit time, median of 3 (fastopt.integrations.sklearn):",
                  f"{'model':<24} {'scikit-learn':>13} {'fastopt':>11} {'speed-up':>9} "
                  f"{'accuracy (sk / fo)':>19}"]
        for r in sk:
            lines.append(f"{r['name']:<24} {r['sklearn_time']:11.3f} s {r['time']:9.3f} s "
                         f"{_ratio(r['sklearn_time'] / r['time']):>9} "
                         f"{r['sklearn_accuracy']:9.3f} / {r['accuracy']:.3f}")
    sharing = [r for r in result["rows"] if r["group"] == "sharing"]
    if sharing:
        lines += ["", f"Sharing the cores with NumPy's BLAS (by default BLAS jobs on fastopt's threads: "
                      f"{'yes' if m['blas_shared'] else 'no'}), per iteration; 'shared': with "
                      f"FASTOPT_BLAS_THREADS=shared:",
                  f"{'loop':<22} {'size':>13} {'kernel':>11} {'matmul':>11} {'alternating':>12} "
                  f"{'/ apart':>8} {'shared':>12} {'/ apart':>8}"]
        for r in sharing:
            shared = ("—", "—") if "ratio_shared" not in r else (
                f"{r['alternating_shared_time'] * 1e3:9.3f} ms", f"{r['ratio_shared']:.2f}")
            lines.append(f"{r['name']:<22} {_size_label(r['size']):>13} "
                         f"{r['kernel_time'] * 1e3:8.3f} ms {r['matmul_time'] * 1e3:8.3f} ms "
                         f"{r['alternating_time'] * 1e3:9.3f} ms {r['ratio']:8.2f} "
                         f"{shared[0]:>12} {shared[1]:>8}")
    load = [r for r in result["rows"] if r["group"] == "load"]
    if load:
        lines += ["", "Under load: two processes side by side on the same cores, median step time "
                      "of the slower one:",
                  f"{'step':<24} {'alone':>11} {'2 x default':>12} {'2 x 1 thread':>13} "
                  f"{'default / 1 thread':>19}"]
        for r in load:
            lines.append(f"{r['name']:<24} {r['alone_time'] * 1e3:8.3f} ms "
                         f"{r['time'] * 1e3:9.3f} ms {r['single_time'] * 1e3:10.3f} ms "
                         f"{r['ratio']:19.2f}")
    return "\n".join(lines)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in OPTIMIZERS:
        rows = [r for r in result["rows"] if r["name"] == name and r["group"] == "optimizer"]
        ns = [r["size"] for r in rows]
        ax.plot(ns, [r["bytes"] / r["time"] / 1e9 for r in rows], "o-", label=f"{name} (fastopt)")
        if name == "adam":
            ax.plot(ns, [r["bytes"] / r["roofline_time"] / 1e9 for r in rows], "k--",
                    label="roofline (adam traffic)")
            ax.plot(ns, [r["bytes"] / r["reference_time"] / 1e9 for r in rows], "s:",
                    label="adam (NumPy reference)")
            if all("torch_time" in r for r in rows):
                ax.plot(ns, [r["bytes"] / r["torch_time"] / 1e9 for r in rows], "^-.",
                        label="adam (torch fused)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("elements")
    ax.set_ylabel("effective GB/s")
    ax.set_title(f"fastopt {result['meta']['version']}, isa {result['meta']['isa']}, "
                 f"{result['meta']['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
