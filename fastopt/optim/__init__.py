"""The optimizer layer: optimizer classes, and the one registry of optimizers they share.

``fastopt.optim.SPECS`` (see :mod:`fastopt.optim.registry`) lists every optimizer once: its
state buffers, kernel and reference functions, PyTorch twin and memory traffic.  The
optimizer classes (:mod:`fastopt.optim.algorithms`), the benchmark, ``fastopt train`` and the
tests derive their lists from it.
"""

from . import algorithms, functional
from .algorithms import *  # noqa: F403 (the classes of the registry: SGD, Momentum, ...)
from .ema import EMA
from .optimizer import Optimizer
from .params import ParamSet
from .registry import SPECS, OptimizerSpec

__all__ = ["Optimizer", *algorithms.__all__, "SPECS", "OptimizerSpec", "functional",
           "ParamSet", "EMA"]
