"""The data layer: mini-batches (:mod:`.minibatch`), input standardization
(:mod:`.preprocessing`) and the datasets shipped with fastopt (:mod:`.datasets`)."""

from .datasets import load_digits, prepare_data
from .minibatch import SMALL_DATASET, minibatches, suggest_batch_size
from .preprocessing import NotFittedError, Standardizer

__all__ = ["minibatches", "suggest_batch_size", "SMALL_DATASET", "load_digits", "prepare_data",
           "Standardizer", "NotFittedError"]
