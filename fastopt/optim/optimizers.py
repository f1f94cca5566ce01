"""The optimizer classes (a re-export: :mod:`fastopt.optim.optimizer` has the base class,
:mod:`fastopt.optim.algorithms` the algorithms)."""

from .algorithms import SGD, Adam, AdamW, Momentum, RMSprop
from .optimizer import Optimizer

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW"]
