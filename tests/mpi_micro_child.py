"""Rank-side scenarios of tests/test_microbatch.py, run under ``mpiexec -n P``.

``train <out.npz> <json config>...``: each config trains a Trainer with
``micro_batch`` and a DataParallelStrategy, checks every rank ends with the same bits, and
rank 0 writes the parameters and running statistics (``<i>/params``, ``<i>/<bn stat>``).
``fault_<kind>``: one rank fails inside a step; the job must end with an error, not hang.
"""

import json
import sys

import numpy as np
from mpi4py import MPI

from fastopt.distributed import DataParallelStrategy
from fastopt.nn.layers import BatchNorm
from fastopt.train import Trainer

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def trainer(config, **strategy_options):
    config = dict(config)
    options = config.pop("strategy", {})
    options.update(strategy_options)
    return Trainer(strategy=DataParallelStrategy(timeout=60, **options), **config)


def train(out, *configs):
    saved = {}
    for i, text in enumerate(configs):
        t = trainer(json.loads(text))
        t.fit()
        arrays = {"params": t.model.params.data.copy(), **t.model.state_dict()}
        for k, v in arrays.items():
            every = comm.allgather(v.tobytes())
            assert all(b == every[0] for b in every), f"config {i}: {k} differs between ranks"
            saved[f"{i}/{k}"] = v
        saved[f"{i}/test_acc"] = np.array([h["test_acc"] for h in t.history])
    if rank == 0:
        np.savez(out, **saved)


def fault(kind):
    """One rank (the last) fails in the 3rd step of the first epoch."""
    micro = 8 if kind.endswith("_micro") else None
    t = trainer(dict(hidden=16, epochs=1, seed=0, micro_batch=micro))
    if kind.startswith("refused") and rank == size - 1:
        X, y, Xte, yte = t.data
        t._data = (X.astype(np.float64), y, Xte, yte)   # bad input on this rank only
    if kind.startswith("raises") and rank == size - 1:
        calls = []
        backward = BatchNorm.backward

        def failing(self, *args, **kwargs):      # (this rank's process only)
            calls.append(1)
            if len(calls) == 5:                  # the 3rd step's second layer
                raise RuntimeError("boom inside the step on the last rank")
            return backward(self, *args, **kwargs)
        BatchNorm.backward = failing
    t.fit()
    raise AssertionError("unreachable: the job should have ended with an error")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "train":
        train(*sys.argv[2:])
    else:
        fault(what)
