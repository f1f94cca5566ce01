"""The training toolkit: learning-rate schedules, random-search tuning and checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]
