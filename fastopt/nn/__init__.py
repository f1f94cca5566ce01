"""The model layer: FlatParams (one float32 buffer for a whole model), weight initialization,
the batch-norm layer and the demo MLP."""

from .flat import FlatParams
from .layers import BatchNorm, BatchNormSync

__all__ = ["FlatParams", "BatchNorm", "BatchNormSync"]
