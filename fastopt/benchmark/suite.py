"""``fastopt bench``: every kernel against the memory roofline, NumPy and PyTorch, in one run.

:func:`run` times each case of :mod:`~fastopt.benchmark.cases` with its policy from
:mod:`~fastopt.benchmark.timing` and returns typed rows (:mod:`~fastopt.benchmark.report`).
Each kernel row reports:

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

Absolute times on a shared machine mean little; the ratios come from the same run and the
same buffers.  The run records the load average before and after it, and each row how far its
repeated samples agree: ``meta["warnings"]`` and the rows' ``unstable`` say when the figures
cannot be trusted.
"""

import contextlib
import os
import platform

import numpy as np

from . import timing
from .cases import GROUPS, LoadCase, run_cases
from .report import ROWS, format_table  # noqa: F401  (re-exported)
from ..runtime import machine
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(get_num_threads())
    return torch


def measure(case, reps, torch=None, notes=None):
    """Time ``case`` (a :class:`~fastopt.benchmark.cases.Case`) with ``reps`` repetitions
    (unless the case fixes them); returns its typed rows.  ``notes``: a list that receives
    what the case left out and why."""
    if isinstance(case, LoadCase):
        return measure_load(case, torch)
    work = case.build(torch)
    reps = case.reps or reps
    samples = {}
    if work.together:
        samples.update(timing.round_robin({k: work.calls[k] for k in work.together}, reps,
                                          work.warmup, settle=work.foreign,
                                          between=work.between))
    for role, fn in work.calls.items():
        if role in work.together:
            continue
        with work.around.get(role, contextlib.nullcontext)():
            if role in work.reduced:
                samples[role] = timing.each_apart(fn, max(3, reps // 2), warmup=1)
            else:
                settle = timing.SETTLE if role in work.foreign else 0.0
                samples[role] = timing.each_apart(fn, reps, settle=settle)
    samples = {k: s.scaled(1 / work.loops[k]) if k in work.loops else s
               for k, s in samples.items()}
    if notes is not None:
        notes += work.info.get("notes", ())
    return ROWS[case.group].from_samples(case, samples, work.info)


def _load_worker(case, threads, seconds):
    """One process of :func:`measure_load`: warm up, say 'ready', wait for 'go', time steps."""
    import json
    import sys

    from .cases import load_step
    from ..runtime.blas import limited_blas_threads

    if threads is not None:
        from ..runtime.threads import set_num_threads

        set_num_threads(threads)
    blas = limited_blas_threads(1) if "BLAS 1 thread" in case else contextlib.nullcontext()
    with blas:
        step = load_step(case, threads)
        for _ in range(3):
            step()
        print("ready", flush=True)
        sys.stdin.readline()
        times = timing.timed_for(step, seconds)
    print(json.dumps(times), flush=True)


def _side_by_side(case, threads, seconds, nproc=2):
    env = dict(os.environ)
    if threads is not None:  # the BLAS of "one thread each" is single-threaded too
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    code = (f"from fastopt.benchmark.suite import _load_worker; "
            f"_load_worker({case!r}, {threads!r}, {seconds!r})")
    return timing.side_by_side(code, nproc, seconds, env)


def measure_load(case, torch=None):
    """Two processes side by side on the same cores: default threads against one thread each
    (what joblib n_jobs=2, a multiprocessing pool or two MPI ranks on a node do), and one
    process alone; None for the PyTorch case without PyTorch."""
    if case.name.startswith("torch") and torch is None:
        return []
    samples = {"alone": _side_by_side(case.name, None, case.seconds, nproc=1),
               "default": _side_by_side(case.name, None, case.seconds),
               "single": _side_by_side(case.name, 1, case.seconds)}
    return ROWS["load"].from_samples(case, samples, {})


def run(*, quick=False, reps=None, use_torch=True, include_train=True, include_load=True,
        only=None, progress=None):
    """Run the whole suite (or the row groups in ``only``, names from :data:`GROUPS`); returns a
    dict with ``meta`` and ``rows`` (typed rows: :func:`~fastopt.benchmark.report.to_json`
    gives their JSON).

    ``meta["notes"]``: what was left out and why; ``meta["load"]``: the load average before and
    after the measurements (the under-load table excluded), the cores and the threads;
    ``meta["warnings"]``: why the figures cannot be trusted (a busy machine), if they cannot.
    """
    if only is not None:
        only = set(only)
        if not only or not only <= set(GROUPS):
            raise ValueError(f"only must name some of {GROUPS}, got {sorted(only)}")
    torch = _torch() if use_torch else None
    reps = reps or (3 if quick else 7)
    todo = run_cases(quick=quick, torch=torch is not None, train=include_train, load=include_load,
                 only=only)
    rows, notes = [], []
    load = timing.Load.start(get_num_threads())
    for i, case in enumerate(todo):
        if progress:
            progress(i, len(todo))
        if isinstance(case, LoadCase) and load.after is None:
            load.stop()      # the under-load table loads the machine on purpose
        rows += measure(case, reps, torch, notes)
    if load.after is None:
        load.stop()
    import fastopt

    why = timing.busy(load)
    meta = dict(version=fastopt.__version__, isa=ext.level, threads=get_num_threads(),
                machine=platform.machine(), processor=platform.processor(), reps=reps,
                cpu=machine.describe(),
                numpy=np.__version__, torch=None if torch is None else torch.__version__,
                blas_shared=bool(fastopt.info()["blas_shared"]), notes=notes,
                threading=fastopt.info()["threading"],
                load=dict(cores=load.cores, threads=load.threads, before=load.before,
                          after=load.after),
                warnings=[] if why is None else [why])
    return {"meta": meta, "rows": rows}


def plot(result, path):
    """GB/s against size of the optimizer rows of ``result``, written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cases import OPTIMIZERS
    from .report import typed

    rows = typed(result["rows"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in OPTIMIZERS:
        mine = [r for r in rows if r.name == name and r.group == "optimizer"]
        ns = [r.size for r in mine]
        ax.plot(ns, [r.bytes / r.time / 1e9 for r in mine], "o-", label=f"{name} (fastopt)")
        if name == "adam":
            ax.plot(ns, [r.bytes / r.roofline_time / 1e9 for r in mine], "k--",
                    label="roofline (adam traffic)")
            ax.plot(ns, [r.bytes / r.reference_time / 1e9 for r in mine], "s:",
                    label="adam (NumPy reference)")
            if all(r.torch_time is not None for r in mine):
                ax.plot(ns, [r.bytes / r.torch_time / 1e9 for r in mine], "^-.",
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
