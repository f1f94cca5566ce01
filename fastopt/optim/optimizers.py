"""The optimizer classes (a re-export: :mod:`fastopt.optim.optimizer` has the base class,
:mod:`fastopt.optim.algorithms` the algorithms).

Pickles made before the split name ``fastopt.optim.optimizers`` for the classes and for a
parameter group's member list (``_Members``): they load through this module.
"""

from .algorithms import SGD, Adam, AdamW, Momentum, RMSprop
from .optimizer import Optimizer, _Members  # noqa: F401 (_Members: older pickles)

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW"]
