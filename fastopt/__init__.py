"""fastopt: fused, in-place optimizer kernels for NumPy training loops.

Quick use::

    import fastopt
    fp = fastopt.FlatParams({"W": (784, 10), "b": (10,)})
    opt = fastopt.Adam(fp, lr=1e-3)
    ...                      # write gradients into fp.grads["W"], fp.grads["b"]
    opt.step()               # one fused kernel call for the whole model

See ``fastopt.kernels`` (compiled) and ``fastopt.reference`` (NumPy) for the
update rules.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# The compiled modules link GNU libgomp, whose start-up binds the loading thread to one CPU
# when OMP_PROC_BIND / OMP_PLACES / GOMP_CPU_AFFINITY is set (fastopt runs no OpenMP region).
# runtime.dispatch keeps the affinity around the kernel modules' load; this keeps it around the
# whole package import too, whichever module loads libgomp first (e.g. under LD_PRELOAD).
try:
    _affinity_before_import = _os.sched_getaffinity(0)
except (AttributeError, OSError):  # not Linux
    _affinity_before_import = None


def _not_built(error):
    """The ImportError for a package directory without its compiled modules."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(here)
    if _os.path.isfile(_os.path.join(root, "setup.py")) and _os.path.isdir(
            _os.path.join(root, "src", "kernels")):
        return ImportError(
            f"fastopt: you are running fastopt from its source directory ({root}), whose "
            "fastopt/ has no compiled modules: Python imports it before the installed "
            "package. Leave the source tree (cd elsewhere) and relaunch Python, or build it "
            "in place with pip install -e .")
    return ImportError(f"fastopt: its compiled modules are missing from {here}; was the "
                       f"package built? (pip install fastopt, or pip install . from the "
                       f"source tree) ({error})")


try:
    from . import _cpu  # noqa: F401 - the first compiled module the import needs
except ImportError as _e:
    raise _not_built(_e) from None

from .runtime import blas as _blas, dispatch as _dispatch, threads as _threads
from .runtime.blas import restore_blas_threads, share_blas_threads
from .runtime.dispatch import ext as _ext
from .runtime.threads import default_num_threads, get_num_threads, num_threads, set_num_threads
from . import kernels, reference
from .nn import init
from .nn.flat import FlatParams
from .nn.layers import BatchNorm
from .optim import Optimizer, functional
from .optim.algorithms import *  # noqa: F403 (every optimizer class: SGD, Adam, ...)
from . import data
from .data.preprocessing import Standardizer
from .train import schedules, tuning
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.loop import Trainer

# The modules' paths before the layout in folders (fastopt.flat, fastopt.init, ...): the same
# module objects, so ``import fastopt.init`` and ``from fastopt.checkpoint import ...`` work.
for _old, _module in {
    "_dispatch": _dispatch, "_threads": _threads, "_blas": _blas, "_check": kernels._check,
    "init": init, "flat": _sys.modules[__name__ + ".nn.flat"],
    "layers": _sys.modules[__name__ + ".nn.layers"],
    "preprocessing": _sys.modules[__name__ + ".data.preprocessing"],
    "schedules": schedules, "tuning": tuning, "functional": functional,
    "checkpoint": _sys.modules[__name__ + ".train.checkpoint"],
}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _module)
    globals().setdefault(_old, _module)
del _old, _module


def isa() -> str:
    """The instruction-set level of the kernels in use ('baseline', 'avx2' or 'avx512')."""
    return _ext.level


def info() -> dict:
    """Build and runtime facts, as a dict (what ``fastopt info`` prints)."""
    import os

    from . import _cpu, _threadpool
    from .runtime import machine

    cpu = machine.cpu()
    level, openmp, cflags = _ext._optim.build_info()
    return {
        "version": __version__,
        "cpu": cpu["model"],
        "cpu_flags": " ".join(cpu["flags"]),
        "isa": level,
        "isa_cpu": list(_cpu.supported_levels()),
        "isa_built": list(_dispatch.built_levels()),
        "openmp": openmp,
        "threads": get_num_threads(),
        "threading": _threads.get_backend(),
        "parallel_threshold": _ext._optim.parallel_threshold(),
        "cflags": cflags,
        "threads_default": default_num_threads(),
        "cpus_available": _threads.available_cpus(),
        "pool": _threadpool.stats(),
        "openmp_backend": dict(_threadpool.openmp_stats(), available=_threadpool.HAVE_OPENMP),
        "blas_shared": [os.path.basename(p) for p in _blas.shared_libraries()],
    }


_blas._init_from_env()

__all__ = [
    "FlatParams", "BatchNorm", "Optimizer", *optim.algorithms.__all__,
    "Standardizer", "save_checkpoint", "load_checkpoint", "Trainer",
    "kernels", "reference", "init", "data", "schedules", "tuning", "set_num_threads", "get_num_threads", "num_threads",
    "default_num_threads", "isa", "info", "share_blas_threads", "restore_blas_threads", "__version__",
]

if _affinity_before_import is not None:
    try:
        if _os.sched_getaffinity(0) != _affinity_before_import:
            _os.sched_setaffinity(0, _affinity_before_import)
    except OSError:
        pass
del _affinity_before_import
