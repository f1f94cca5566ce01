"""The training toolkit: the training loop, learning-rate schedules, random-search tuning and
checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .loop import SingleProcess, Trainer

__all__ = ["Trainer", "SingleProcess", "save_checkpoint", "load_checkpoint", "CheckpointError"]
