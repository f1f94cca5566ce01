"""The benchmark's workloads, as data: what each row times, on what, and the bytes it must move.

A :class:`Case` names a row (group, name, size), the bytes the operation must move (from
the kernel table :data:`fastopt.specs.KERNELS`: each state buffer, through
:data:`fastopt.optim.registry.SPECS`' ``bytes_per_element``), and ``build(torch)``, which
makes the buffers and returns a :class:`Workload`: the callables compared, by role
(``"fastopt"``, ``"reference"`` the NumPy twin, ``"roofline"`` the in-process pass that moves
the same bytes with no arithmetic, ``"torch"`` when PyTorch is given, ...), and how they are
timed (which take turns, which run a loop of steps, which belong to another runtime).

``fastopt bench`` (:func:`fastopt.benchmark.run`) and the pytest-benchmark suite in
``benchmarks/`` time the same cases: :func:`run_cases` lists them.
"""

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import kernels as K
from .. import reference as R
from ..optim.registry import SPECS
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads

SIZES = {"64K": 1 << 16, "1M": 1 << 20, "16M": 1 << 24}
BN_SHAPES = [(256, 1024), (4096, 1024), (64, 64, 56, 56)]
QUICK_SIZES = {"64K": 1 << 16, "1M": 1 << 20}
QUICK_BN_SHAPES = [(256, 1024), (16, 16, 28, 28)]

#: The optimizers benchmarked: those with a PyTorch twin to compare against, by row name.
# Every registered optimizer with a PyTorch twin, and those on a kernel of the table that no
# twinned one runs (a kernel added without a twin gets its rows, against the roofline and NumPy).
OPTIMIZERS = {spec.bench_name: spec for spec in SPECS.values() if spec.torch is not None}
OPTIMIZERS.update({spec.bench_name: spec for spec in SPECS.values()
                   if spec.row.name not in {s.row.name for s in OPTIMIZERS.values()}})

#: (arrays, smallest, largest): the list-mode rows (sizes drawn uniformly, fixed seed).
LIST_CASES = [(200, 64, 1024), (100, 1024, 10240)]

#: The state dtypes of the "state" rows, by row name.
STATE_DTYPES = {"adam float32": "float32", "adam bfloat16": "bfloat16", "adam int8": "int8",
                "adam float8": "float8"}

#: The steps of the under-load table (two processes side by side).
LOAD_CASES = ("adam 1M", "batchnorm 4096x1024", "MLP train step", "MLP step, BLAS 1 thread",
              "torch fused Adam 1M")

#: The row groups, in the order they run (``run(only=...)`` and ``fastopt bench --only`` pick some).
GROUPS = ("optimizer", "list", "clip", "state", "sklearn", "batchnorm", "train", "model",
          "threading", "sharing", "load")


#: The roles a group's workloads may time, in order (a role may be absent: "torch" without
#: PyTorch, "shared" where the BLAS cannot share fastopt's threads, ...).
ROLES = {
    "optimizer": ("fastopt", "reference", "roofline", "torch"),
    "batchnorm": ("fastopt", "roofline", "reference", "torch"),
    "model": ("fastopt", "roofline", "reference", "torch"),
    "train": ("fastopt", "reference"),
    "list": ("list", "flat", "reference", "torch"),
    "clip": ("fastopt", "guard", "apart", "torch"),
    "state": ("adam float32", "roofline adam float32", "adam bfloat16", "roofline adam bfloat16",
              "adam int8", "roofline adam int8", "adam float8", "roofline adam float8", "torch",
              "bitsandbytes Adam8bit"),
    "sklearn": ("sklearn", "fastopt"),
    "threading": ("pool", "openmp"),
    "sharing": ("kernel", "matmul", "alternating", "shared"),
    "load": ("fastopt",),
}


@dataclass
class Workload:
    """The callables a case compares, and how to time them.

    Attributes
    ----------
    calls : dict of str to callable
        By role, in the order they are timed.
    together : tuple of str
        Roles timed round robin (one call each per round); the others are timed apart.
    warmup : int
        Rounds before the timed ones, for ``together``.
    reduced : tuple of str
        Roles timed apart with fewer repetitions (``max(3, reps // 2)``, one warm-up call):
        the slow NumPy reference.
    foreign : tuple of str
        Roles of another runtime (PyTorch, bitsandbytes): a pause after them lets their
        OpenMP workers go idle.
    loops : dict of str to int
        Steps per call of a role (its time is divided by this).
    between : callable or None
        Called, untimed, after every call of a ``together`` role.
    around : dict of str to context manager factory
        A role timed inside this context (e.g. with NumPy's BLAS on fastopt's threads).
    info : dict
        Facts for the row besides times (accuracy, a library's version, notes).
    """

    calls: dict
    together: tuple = ()
    warmup: int = 1
    reduced: tuple = ()
    foreign: tuple = ()
    loops: dict = field(default_factory=dict)
    between: Callable | None = None
    around: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One workload of the benchmark.

    Attributes
    ----------
    group : str
        The row group (one of :data:`GROUPS`): which table prints it.
    name : str
        The row's name.
    size : int, tuple or None
        Elements (or the array's shape).
    build : callable
        ``build(torch)`` (``torch`` the module or None) makes the buffers and returns a
        :class:`Workload`.
    bytes : int or None
        The bytes the operation must move (each buffer read or written once per pass).
    reps : int or None
        Repetitions when the case fixes them (scikit-learn's fits), else the run's.
    """

    group: str
    name: str
    size: Any
    build: Callable
    bytes: int | None = None
    reps: int | None = None

    @property
    def id(self):
        """A short identifier (pytest ids)."""
        return f"{self.name} {size_label(self.size)}" if self.size is not None else self.name


def size_label(size):
    if isinstance(size, tuple):
        return "x".join(map(str, size))
    for label, n in SIZES.items():
        if n == size:
            return label
    return f"{size / 1e6:.1f}M" if size >= 1e6 else f"{size / 1e3:.0f}K"


# ------------------------------------------------------------------ optimizers

def fastopt_state(param, count, dtype=None):
    """``count`` zero state buffers for ``param`` (its dtype unless ``dtype``), placed as
    fastopt's optimizers place theirs (the dense format's ``zeros``: each staggered from
    the parameter within a 4 KiB page, :mod:`fastopt.runtime.alloc`).

    The rows that call a kernel directly take their state from here, not from ``np.zeros``:
    large NumPy arrays all start 16 bytes into a page, so fresh ``np.zeros`` state sits at
    the parameter's and the gradient's page offset, which no fastopt optimizer does and
    which costs the step its speed; PyTorch's side allocates its own state as it does for
    its users.  (Issue 23, Zen 3, 2 threads, Adam at 16M elements: on such state fastopt
    ran at 0.91-0.92 of PyTorch's fused Adam, on its optimizers' state at 1.18-1.23; the
    two libraries on the same buffers within a few percent of each other either way.)
    """
    from ..optim.formats import DENSE

    dtype = param.dtype if dtype is None else np.dtype(dtype)
    return [DENSE.zeros(param.shape, dtype, True, like=param, k=j + 1) for j in range(count)]


def optimizer_case(name, n, dtype=np.float32):
    """One optimizer's kernel step on ``n`` elements of ``dtype``."""
    spec = OPTIMIZERS[name]
    dtype = np.dtype(dtype)

    def build(torch):
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n).astype(dtype)
        g = rng.standard_normal(n).astype(dtype)
        s = fastopt_state(p, len(spec.state))          # placed as the optimizers place it
        for x in s:
            x[...] = np.abs(rng.standard_normal(n)).astype(dtype) * 1e-3
        s_ref = [x.copy() for x in s]
        nt = get_num_threads()
        # the roofline moves the same bytes (float64 buffers seen as twice as many float32)
        f32 = [a.view(np.float32) for a in [p] + s]
        calls = {"fastopt": lambda: spec.call(K, p, g, s, step=10),
                 "reference": lambda: spec.call(R, p, g, s_ref, step=10),
                 "roofline": lambda: ext._roofline.update(f32, g.view(np.float32), nt)}
        if torch is not None and spec.torch is not None:
            calls["torch"] = spec.torch_step(torch, p, g)
        return Workload(calls, reduced=("reference",) if n >= (1 << 23) else (),
                        foreign=("torch",))

    label = name if dtype == np.float32 else f"{name} {dtype.name}"
    return Case("optimizer", label, n, build, bytes=spec.bytes_per_element(dtype) * n)


# ------------------------------------------------------------------ batch norm

def batchnorm_case(shape):
    """Batch norm forward + backward (training) on a float32 array of ``shape``."""
    def build(torch):
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

        calls = {"fastopt": fwd_bwd(K), "roofline": roofline, "reference": fwd_bwd(R)}
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

            calls["torch"] = tf
        return Workload(calls, reduced=("reference",), foreign=("torch",))

    size = 1
    for d in shape:
        size *= d
    return Case("batchnorm", "batchnorm fwd+bwd", tuple(shape), build, bytes=8 * 4 * size)


# ------------------------------------------------------------------ whole steps

def train_case(batch_size=256):
    """One step (forward, backward, Adam) of the demo MLP on a batch of digits."""
    from ..nn.models import MLP

    def build(torch):
        from ..data.datasets import prepare_data
        from ..optim import Adam

        Xtr, ytr, _, _, _ = prepare_data(0)
        Xb, yb = np.ascontiguousarray(Xtr[:batch_size]), ytr[:batch_size]
        calls = {}
        for impl, role in (("fused", "fastopt"), ("reference", "reference")):
            model = MLP((64, 256, 256, 10), rng=0, impl=impl)
            opt = Adam(model.params, lr=1e-3, impl=impl)

            def step(model=model, opt=opt):
                model.loss_and_grad(Xb, yb)
                opt.step()

            calls[role] = step
        return Workload(calls)

    size = MLP((64, 256, 256, 10), rng=0).params.size
    return Case("train", f"MLP train step (batch {batch_size})", size, build)


def model_shapes(blocks=20, d=208):
    """~160 tensors of transformer-like sizes (~10M elements)."""
    shapes = {}
    for b in range(blocks):
        shapes.update({f"{b}.qkv": (d, 3 * d), f"{b}.out": (d, d), f"{b}.ff1": (d, 4 * d),
                       f"{b}.ff2": (4 * d, d), f"{b}.ff1.b": (4 * d,), f"{b}.ff2.b": (d,),
                       f"{b}.ln.g": (d,), f"{b}.ln.b": (d,)})
    return shapes


def model_case():
    """Adam over one FlatParams of ~160 tensors."""
    shapes = model_shapes()
    size = sum(int(np.prod(s)) for s in shapes.values())

    def build(torch):
        from ..nn.flat import FlatParams
        from ..optim import Adam

        fp = FlatParams(shapes)
        rng = np.random.default_rng(0)
        fp.data[...] = rng.standard_normal(fp.size).astype(np.float32)
        fp.grad[...] = rng.standard_normal(fp.size).astype(np.float32)
        opt = Adam(fp, lr=1e-3)
        ref = Adam(FlatParams.from_arrays(fp.params), lr=1e-3, impl="reference")
        ref.flat.grad[...] = fp.grad
        nt = get_num_threads()
        state = opt.state["exp_avg"] + opt.state["exp_avg_sq"]
        calls = {"fastopt": opt.step,
                 "roofline": lambda: ext._roofline.update([fp.data] + state, fp.grad, nt),
                 "reference": ref.step}
        if torch is not None:
            params = []
            for k in fp:
                t = torch.nn.Parameter(torch.from_numpy(fp.params[k].copy()))
                t.grad = torch.from_numpy(fp.grads[k].copy())
                params.append(t)
            calls["torch"] = torch.optim.Adam(params, lr=1e-3, fused=True).step
        return Workload(calls, reduced=("reference",), foreign=("torch",))

    return Case("model", f"Adam, {len(shapes)} tensors", size, build,
                bytes=OPTIMIZERS["adam"].bytes_per_element() * size)


# ------------------------------------------------------------------ lists of arrays

def list_arrays(count, lo, hi):
    """The parameters and gradients of a list-mode case (sizes drawn uniformly, fixed seed)."""
    rng = np.random.default_rng(0)
    sizes = [int(x) for x in rng.integers(lo, hi + 1, count)]
    params = [rng.standard_normal(k).astype(np.float32) for k in sizes]
    grads = [rng.standard_normal(k).astype(np.float32) for k in sizes]
    return sizes, params, grads


def list_case(count, lo, hi, loops=20):
    """Adam over a list of ``count`` arrays against the same values in one FlatParams.

    The list is what most NumPy code keeps; with it the optimizer makes one compiled call
    over its table of chunks, checking the gradients it is passed each step.  The two take
    turns; PyTorch's fused Adam runs over the same list.  ``loops`` steps per timed call:
    one step is tens of microseconds.
    """
    sizes, _, _ = list_arrays(count, lo, hi)
    size = sum(sizes)

    def build(torch):
        from ..nn.flat import FlatParams
        from ..optim import Adam

        sizes, params, grads = list_arrays(count, lo, hi)
        fp = FlatParams({f"p{i}": (k,) for i, k in enumerate(sizes)})
        for i, (p, g) in enumerate(zip(params, grads)):
            fp.params[f"p{i}"][...] = p
            fp.grads[f"p{i}"][...] = g
        opt_list, opt_flat = Adam(params, lr=1e-3), Adam(fp, lr=1e-3)
        ref = Adam([p.copy() for p in params], lr=1e-3, impl="reference")

        def many(step):
            def f():
                for _ in range(loops):
                    step()
            return f

        calls = {"list": many(lambda: opt_list.step(grads)), "flat": many(opt_flat.step),
                 "reference": lambda: ref.step(grads)}
        if torch is not None:
            calls["torch"] = OPTIMIZERS["adam"].torch_optimizer(torch, params, grads).step
        return Workload(calls, together=("list", "flat"), reduced=("reference",),
                        foreign=("torch",), loops={"list": loops, "flat": loops},
                        info={"arrays": count})

    return Case("list", f"adam, {count} arrays", size, build,
                bytes=OPTIMIZERS["adam"].bytes_per_element() * size)


# ------------------------------------------------------------------ clipping fused into the step

def clip_case(n):
    """Adam with ``max_grad_norm`` (one read-only norm pass, the scale folded into the step)
    against the norm, a scaling pass and the step apart; with the non-finite guard; and
    PyTorch's ``clip_grad_norm_`` followed by its fused Adam.  The three fastopt steps take
    turns, each from the same gradient ('apart' scales it)."""
    def build(torch):
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

        def restore():
            fp.grad[...] = g0

        calls = {"fastopt": fused.step, "guard": guarded.step, "apart": apart}
        if torch is not None:
            tp = torch.nn.Parameter(torch.from_numpy(fp.data.copy()))
            tp.grad = torch.from_numpy(g0.copy())
            topt = torch.optim.Adam([tp], lr=1e-3, fused=True)

            def tstep():
                torch.nn.utils.clip_grad_norm_([tp], 1.0)
                topt.step()

            calls["torch"] = tstep
        return Workload(calls, together=("fastopt", "guard", "apart"), between=restore,
                        foreign=("torch",))

    return Case("clip", "adam + clip", n, build)


# ------------------------------------------------------------------ low-precision state

def bitsandbytes_step(torch, p, g):
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


def state_bytes(n, kernel="adam"):
    """Bytes a step of ``kernel`` (a row of :data:`fastopt.specs.KERNELS`) moves on ``n``
    float32 parameters with each state dtype, by "state" row name: param read and written,
    grad read (12 B/elem), and each state buffer read and written at its element size, plus
    for int8 and float8 its absmax (a float32 per block, read and written).  Adam: 28 B/elem
    with float32 state, 20 with bfloat16, 16 with int8 or float8 plus 16 B per block of 256."""
    from ..kernels import lowbit as L
    from ..specs import BY_NAME

    k = len(BY_NAME[kernel].state)
    base = 3 * 4 * n
    return {f"{kernel} float32": base + k * 2 * 4 * n,
            f"{kernel} bfloat16": base + k * 2 * 2 * n,
            f"{kernel} int8": base + k * (2 * n + 2 * 4 * L.absmax_size(n)),
            f"{kernel} float8": base + k * (2 * n + 2 * 4 * L.absmax_size(n))}


def state_case(n, use_bitsandbytes=True):
    """Adam with float32, bfloat16, int8 and float8 state (:mod:`fastopt.kernels.lowbit`) at ``n``
    elements, each followed by its roofline pass (``_roofline.update`` for float32 state,
    ``_lowbit.roofline`` for the uint16 / uint8 state), each state allocated as fastopt's
    optimizers allocate it (float32: :func:`fastopt_state`), plus PyTorch's fused float32 Adam and
    bitsandbytes' ``Adam8bit`` on CPU when installed and able to step (else the reason is
    ``info["notes"]``): all round robin, so drift on a shared machine hits every row alike."""
    def build(torch):
        from ..kernels import lowbit as L

        rng = np.random.default_rng(0)
        p = rng.standard_normal(n).astype(np.float32)
        g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
        nt = get_num_threads()
        m32, v32 = fastopt_state(p, 2)     # as fastopt.Adam's (not np.zeros: fastopt_state)
        mb, vb = L.zeros_bf16(n), L.zeros_bf16(n)
        (mc, ma), (vc, va) = L.zeros_int8(n, L.signed_map()), L.zeros_int8(n, L.unsigned_map())
        (mf, maf), (vf, vaf) = L.zeros_float8(n), L.zeros_float8(n)
        calls = {
            "adam float32": lambda: K.adam_step(p, g, m32, v32, step=10, lr=1e-3),
            "roofline adam float32": lambda: ext._roofline.update([p, m32, v32], g, nt),
            "adam bfloat16": lambda: L.adam_step_bf16(p, g, mb, vb, step=10, lr=1e-3),
            "roofline adam bfloat16": lambda: ext._lowbit.roofline(p, g, [mb, vb], nt),
            "adam int8": lambda: L.adam_step_int8(p, g, mc, ma, vc, va, step=10, lr=1e-3),
            "roofline adam int8": lambda: ext._lowbit.roofline(p, g, [mc, vc], nt),
            "adam float8": lambda: L.adam_step_f8(p, g, mf, maf, vf, vaf, step=10, lr=1e-3),
            "roofline adam float8": lambda: ext._lowbit.roofline(p, g, [mf, vf], nt),
        }
        info = {"notes": []}
        if torch is not None:
            tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
            tp.grad = torch.from_numpy(g.copy())
            calls["torch"] = torch.optim.Adam([tp], lr=1e-3, fused=True).step
        if use_bitsandbytes:
            bnb = bitsandbytes_step(torch, p, g)
            if isinstance(bnb, str):
                info["notes"].append(bnb)
            else:
                import bitsandbytes

                calls["bitsandbytes Adam8bit"] = bnb
                info["bitsandbytes"] = bitsandbytes.__version__
        foreign = ("torch", "bitsandbytes Adam8bit")
        return Workload(calls, together=tuple(calls), warmup=3, foreign=foreign, info=info)

    return Case("state", "adam state dtypes", n, build)


# ------------------------------------------------------------------ scikit-learn

def sklearn_case(dtype="float64", hidden=(1024, 1024), epochs=5, reps=3):
    """``fastopt.integrations.sklearn.MLPClassifier`` against scikit-learn's own, same data
    (digits), same settings, fits taking turns; None when scikit-learn is not installed."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return None

    def build(torch):
        import warnings

        from sklearn.neural_network import MLPClassifier as SkMLP

        from ..data import load_digits
        from ..integrations.sklearn import MLPClassifier as FoMLP

        X, y = load_digits()
        order = np.random.default_rng(0).permutation(len(y))
        test, train = order[:360], order[360:]
        X = (X / 16.0).astype(dtype)
        info = {"accuracy": {}, "dtype": dtype}

        def fit(name, cls):
            def f():
                model = cls(hidden_layer_sizes=hidden, max_iter=epochs, random_state=0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # ConvergenceWarning after a few epochs
                    model.fit(X[train], y[train])
                info["accuracy"][name] = float(model.score(X[test], y[test]))
            return f

        return Workload({"sklearn": fit("sklearn", SkMLP), "fastopt": fit("fastopt", FoMLP)},
                        together=("sklearn", "fastopt"), warmup=0, info=info)

    return Case("sklearn", f"MLPClassifier {dtype}", tuple(hidden), build, reps=reps)


# ------------------------------------------------------------------ the two threading backends

def _adam_step(n, rng):
    p = rng.standard_normal(n).astype(np.float32)
    g, m, v = p * 1e-2, np.zeros_like(p), np.zeros_like(p)
    return lambda: K.adam_step(p, g, m, v, step=10, lr=1e-3)


def _batchnorm_step(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)

    def step():
        _, mu, s = K.batchnorm_forward(x, gamma, beta, None, None, out=y)
        K.batchnorm_backward(dy, x, gamma, mu, s, out=(dx, None, None))
    return step


def backend_case(what):
    """The same step (Adam on ``what`` float32 elements, or batch norm forward + backward on
    an array of shape ``what``) on fastopt's pool and on the OpenMP backend
    (``FASTOPT_THREADING=openmp``), round robin in one run: each call a loop of steps on one
    backend, followed by a pause so that neither runtime's idle threads spin beside the
    other's calls.  None when this build has no OpenMP."""
    from .. import _threadpool
    from ..runtime.threads import threading_backend

    if not _threadpool.HAVE_OPENMP:
        return None
    size = what if isinstance(what, int) else int(np.prod(what))
    loops = max(1, min(200, (1 << 23) // size))

    def build(torch):
        rng = np.random.default_rng(0)
        step = _adam_step(what, rng) if isinstance(what, int) else _batchnorm_step(what, rng)

        def on(backend):
            def f():
                with threading_backend(backend):
                    for _ in range(loops):
                        step()
            return f

        calls = {"pool": on("pool"), "openmp": on("openmp")}
        return Workload(calls, together=tuple(calls), warmup=1, foreign=tuple(calls),
                        loops=dict.fromkeys(calls, loops))

    name = "adam" if isinstance(what, int) else "batchnorm fwd+bwd"
    return Case("threading", name, what, build)


# ------------------------------------------------------------------ sharing the cores with BLAS

def _shared_blas():
    """NumPy's BLAS jobs on fastopt's pool (FASTOPT_BLAS_THREADS=shared) while it is open."""
    from ..runtime import blas

    was_shared = bool(blas.shared_libraries())
    if not was_shared and not blas.share_blas_threads():
        raise RuntimeError("the BLAS cannot share fastopt's threads")
    try:
        yield
    finally:
        if not was_shared:
            blas.restore_blas_threads()


def sharing_case(what, loops=20):
    """A fastopt kernel then a 256x256 NumPy matmul, ``loops`` times, against the parts apart;
    and the same loop with NumPy's BLAS jobs on fastopt's threads (``"shared"``, when the
    BLAS allows it)."""
    def build(torch):
        from ..runtime import blas

        rng = np.random.default_rng(0)
        A = rng.standard_normal((256, 256)).astype(np.float32)
        out = np.empty_like(A)
        if isinstance(what, int):
            p = rng.standard_normal(what).astype(np.float32)
            g, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
            kernel = lambda: K.adam_step(p, g, m, v, step=2, lr=1e-3)  # noqa: E731
        else:
            x = rng.standard_normal(what).astype(np.float32)
            C = what[1]
            gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
            y = np.empty_like(x)

            def kernel():
                _, mu, s = K.batchnorm_forward(x, gamma, beta, None, None, out=y)
                K.batchnorm_backward(x, x, gamma, mu, s, out=(y, None, None))

        matmul = lambda: np.matmul(A, A, out=out)  # noqa: E731
        calls = {"kernel": lambda: [kernel() for _ in range(loops)],
                 "matmul": lambda: [matmul() for _ in range(loops)],
                 "alternating": lambda: [(kernel(), matmul()) for _ in range(loops)]}
        around = {}
        was_shared = bool(blas.shared_libraries())
        if was_shared or blas.share_blas_threads():   # (tried here, undone: it can)
            if not was_shared:
                blas.restore_blas_threads()
            calls["shared"] = calls["alternating"]
            around["shared"] = contextlib.contextmanager(_shared_blas)
        return Workload(calls, loops=dict.fromkeys(calls, loops), around=around)

    name = "adam + matmul" if isinstance(what, int) else "batchnorm + matmul"
    return Case("sharing", name, what, build)


# ------------------------------------------------------------------ under load

def load_step(case, threads):
    """The step one process of the under-load table times (``threads``: fastopt's, or None)."""
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


def load_case(name, seconds):
    """``name`` (one of :data:`LOAD_CASES`) in processes side by side, ``seconds`` of steps
    each: timed by :func:`fastopt.benchmark.timing.side_by_side`; ``build`` gives the step of
    one process."""
    return LoadCase("load", name, None, lambda torch: Workload({"fastopt": load_step(name, None)}),
                    seconds=seconds)


@dataclass(frozen=True)
class LoadCase(Case):
    """A case of the under-load table: ``seconds`` of steps per process."""

    seconds: float = 1.0


# ------------------------------------------------------------------ the list

def run_cases(*, quick=False, torch=False, train=True, load=True, only=None):
    """Every case of a run, in order: the full run, or the ``quick`` one (smaller sizes, no
    scikit-learn fits); ``train=False`` leaves out the MLP steps, ``load=False`` the
    under-load table, ``torch=False`` its PyTorch row; ``only``: a set of groups."""
    sizes = QUICK_SIZES if quick else SIZES
    shapes = QUICK_BN_SHAPES if quick else BN_SHAPES
    biggest = max(sizes.values())
    out = [optimizer_case(name, n) for name in OPTIMIZERS for n in sizes.values()]
    out.append(optimizer_case("adam", 1 << 20, np.float64))
    out += [list_case(*c) for c in LIST_CASES]
    out.append(clip_case(biggest))
    out.append(state_case(biggest))
    if not quick:
        out += [sklearn_case(dtype) for dtype in ("float64", "float32")]
    out += [batchnorm_case(s) for s in shapes]
    if train:
        out.append(train_case())
    out.append(model_case())
    out += [backend_case(what) for what in list(sizes.values()) + shapes[1:]]
    out += [sharing_case(what) for what in list(sizes.values()) + [shapes[-1]]]
    if load:
        out += [load_case(name, 0.5 if quick else 1.0) for name in LOAD_CASES
                if (train or not name.startswith("MLP")) and (torch or not name.startswith("torch"))]
    return [c for c in out if c is not None and (only is None or c.group in only)]
