"""Checkpoints: parameters, optimizer state and extras in one ``.npz``, written atomically.

The file is written to a temporary file in the same directory, flushed to
disk, then renamed over the old one (``os.replace``), so a crash while
writing never destroys the previous checkpoint.  Loading checks everything
(format, layout, optimizer type, shapes) before it changes anything.

Examples
--------
>>> import os, tempfile, numpy as np, fastopt
>>> fp = fastopt.FlatParams({"w": (3,)})
>>> opt = fastopt.Adam(fp, lr=0.1)
>>> fp.grad[...] = 1.0; opt.step()
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
>>> fastopt.save_checkpoint(path, fp, opt, epoch=7)
>>> fp2 = fastopt.FlatParams({"w": (3,)}); opt2 = fastopt.Adam(fp2, lr=0.1)
>>> fastopt.load_checkpoint(path, fp2, opt2)
{'epoch': 7}
>>> bool(np.array_equal(fp2.data, fp.data)), opt2.step_count
(True, 1)
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from ..nn.flat import FlatParams
from ..optim import Optimizer

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, or does not fit the model/optimizer it is loaded into."""


def _extra_array(key, value):
    if isinstance(value, (str, bool, int, float, np.generic)) or isinstance(value, np.ndarray):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"extra {key!r} cannot be stored (object array)")
        return arr
    if isinstance(value, (list, tuple, dict)) or value is None:
        try:
            return np.asarray("json:" + json.dumps(value))
        except TypeError:
            pass
    raise TypeError(f"extra {key!r} of type {type(value).__name__} cannot be stored: use numbers, "
                    "strings, arrays, or JSON-serializable lists/dicts")


def save_checkpoint(path, params, optimizer, **extra):
    """Write ``params`` (a FlatParams), ``optimizer``'s state and ``extra`` values to ``path``.

    Extras may be numbers, strings, arrays, or JSON-serializable lists and
    dicts (e.g. the epoch, running statistics, an RNG state).
    """
    if not isinstance(params, FlatParams):
        raise TypeError(f"params must be a FlatParams, got {type(params).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastopt optimizer, got {type(optimizer).__name__}")
    sd = optimizer.state_dict()
    arrays = {
        "fastopt/format": np.asarray(FORMAT),
        "params/layout": np.asarray(json.dumps([[k, list(s)] for k, s in params.shapes.items()])),
        "params/data": params.data,
        "optimizer/meta": np.asarray(json.dumps(
            {"type": sd["type"], "step": sd["step"], "epoch": sd["epoch"], "hyper": sd["hyper"],
             "state": {n: len(b) for n, b in sd["state"].items()}})),
    }
    for name, bufs in sd["state"].items():
        for i, b in enumerate(bufs):
            arrays[f"optimizer/state/{name}/{i}"] = b
    for key, value in extra.items():
        arrays[f"extra/{key}"] = _extra_array(key, value)

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastopt-ckpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _decode_extra(arr):
    if arr.dtype.kind == "U" and arr.ndim == 0:
        s = str(arr)
        return json.loads(s[5:]) if s.startswith("json:") else s
    return arr.item() if arr.ndim == 0 else arr


def load_checkpoint(path, params, optimizer):
    """Restore ``params`` and ``optimizer`` in place from ``path``; return the extras (a dict).

    Raises FileNotFoundError for a missing file and :class:`CheckpointError`
    (a ValueError) for a corrupt one or one that does not fit ``params`` /
    ``optimizer``; nothing is changed then.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a fastopt checkpoint: {e}") from None
    try:
        if int(files["fastopt/format"]) != FORMAT:
            raise CheckpointError(f"checkpoint {path!r} has format {int(files['fastopt/format'])}, "
                                  f"expected {FORMAT}")
        layout = [(k, tuple(s)) for k, s in json.loads(str(files["params/layout"]))]
        meta = json.loads(str(files["optimizer/meta"]))
        data = files["params/data"]
        state = {n: [files[f"optimizer/state/{n}/{i}"] for i in range(count)]
                 for n, count in meta["state"].items()}
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a fastopt checkpoint: "
                              f"missing or bad entry {e}") from None
    if layout != list(params.shapes.items()):
        raise CheckpointError(f"checkpoint {path!r} holds parameters {dict(layout)}, "
                              f"but params has {params.shapes}")
    if data.shape != params.data.shape or data.dtype != params.data.dtype:
        raise CheckpointError(f"checkpoint {path!r}: params/data has shape {data.shape} "
                              f"and dtype {data.dtype}, expected {params.data.shape} float32")
    if meta["type"] != type(optimizer).__name__:
        raise CheckpointError(f"checkpoint {path!r} holds a {meta['type']} optimizer, "
                              f"not {type(optimizer).__name__}")
    hyper = meta["hyper"]  # (JSON gives betas as a list: Adam.load_state_dict makes it a tuple)
    sd = {"type": meta["type"], "step": meta["step"], "epoch": meta["epoch"], "hyper": hyper,
          "state": state}
    try:
        optimizer.load_state_dict(sd)  # checks shapes before changing anything
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} does not fit this optimizer: {e}") from None
    np.copyto(params.data, data)
    return {k[len("extra/"):]: _decode_extra(v) for k, v in files.items() if k.startswith("extra/")}
