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

from . import data, init, kernels, reference, schedules, tuning
from . import _blas
from ._blas import restore_blas_threads, share_blas_threads
from ._dispatch import ext as _ext
from . import _threads
from ._threads import default_num_threads, get_num_threads, num_threads, set_num_threads
from .flat import FlatParams
from .checkpoint import load_checkpoint, save_checkpoint
from .layers import BatchNorm
from .preprocessing import Standardizer
from .optim import SGD, Adam, AdamW, Momentum, Optimizer, RMSprop


def isa():
    """The instruction-set level of the kernels in use ('baseline', 'avx2' or 'avx512')."""
    return _ext.level


def info():
    """Build and runtime facts, as a dict (what ``fastopt info`` prints)."""
    import os

    from . import _cpu, _dispatch, _threadpool

    level, openmp, cflags = _ext._optim.build_info()
    return {
        "version": __version__,
        "isa": level,
        "isa_cpu": list(_cpu.supported_levels()),
        "isa_built": list(_dispatch.built_levels()),
        "openmp": openmp,
        "threads": get_num_threads(),
        "parallel_threshold": _ext._optim.parallel_threshold(),
        "cflags": cflags,
        "threads_default": default_num_threads(),
        "cpus_available": _threads.available_cpus(),
        "pool": _threadpool.stats(),
        "blas_shared": [os.path.basename(p) for p in _blas.shared_libraries()],
    }


_blas._init_from_env()

__all__ = [
    "FlatParams", "BatchNorm", "Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW",
    "Standardizer", "save_checkpoint", "load_checkpoint",
    "kernels", "reference", "init", "data", "schedules", "tuning", "set_num_threads", "get_num_threads", "num_threads",
    "default_num_threads", "isa", "info", "share_blas_threads", "restore_blas_threads", "__version__",
]
