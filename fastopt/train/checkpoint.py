"""Checkpoints: parameters, optimizer state and extras in one ``.npz``, written atomically.

The file is written to a temporary file in the same directory, flushed to
disk, then renamed over the old one (``os.replace``), so a crash while
writing never destroys the previous checkpoint.  The temporary file is named
after the target, this host and the writer's process id
(``.ckpt.npz.<host>.<pid>.<random>.fastopt-tmp``); a writer killed before the
rename leaves it behind, and the next save to the same target removes it once
its writer is gone (a dead process on this host) or it has not been written
for a day.  Checkpoints are created with the permissions the umask allows, as
any new file.

Loading is all or nothing: the file's structure, the layout, the optimizer
type, state shapes, hyperparameters, the schedule at the restored epoch and
the extras are all checked before params or the optimizer change; any problem
is a :class:`CheckpointError` that says what is wrong.

Nothing is allocated before it is known to fit.  Every entry's shape and dtype
are read from its ``.npy`` header (inside the zip, before its data is
decompressed) and checked: against the file's own size (an entry cannot hold
more than its bytes can expand to), and against the model (``params/data``
must have params' shape and dtype; the optimizer state together at most one
full-precision buffer per parameter and state buffer; the metadata and extras
together at most the file's size, plus 1 MiB).  So a small compressed file that
declares a huge array is refused before anything large is allocated.

Format.  The file is an ``.npz``: ``fastopt/format`` (2), ``params/layout``
and ``optimizer/meta`` (JSON text), ``params/data``, the state buffers
``optimizer/state/<name>/<i>``, and the extras: numbers and arrays as
``extra/<key>``, strings and JSON values (lists, dicts, None) as JSON text in
``extra.json/<key>``.  So no stored value is ever decoded by its content: every
string comes back exactly as saved, whatever it starts with.  Format 1 files
(which stored JSON extras as ``"json:"`` + text under ``extra/``) still load:
there a string that starts with ``"json:"`` and parses as JSON is decoded, as
format 1 meant it, and any other string is returned as it is.

Parameters and optimizer state are stored in their dtype (float32 or
float64).  A checkpoint loads only into a FlatParams of the same dtype:
another dtype is a CheckpointError, never a silent cast.

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

import contextlib
import json
import math
import os
import re
import secrets
import socket
import stat
import time
import zipfile

import numpy as np

from ..kernels import _check
from ..nn.flat import FlatParams
from ..optim import Optimizer
from ..optim.registry import SPECS

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]

FORMAT = 2
#: the formats this version loads (1: JSON extras were "json:"-prefixed strings under extra/)
_LOADS = (1, 2)

_TMP_SUFFIX = ".fastopt-tmp"
_STALE_AFTER = 24 * 3600      # seconds without a write after which anyone's temporary file is stale
_MAX_DEFLATE_RATIO = 1032     # deflate never expands data more than this
_SLACK = 1 << 20              # bytes a checkpoint may declare beyond the file's size and the model's


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, or does not fit the model/optimizer it is loaded into."""


# ------------------------------------------------------------------ saving

def _extra_entry(key, value):
    """``(entry name, array)`` storing the extra ``key``: numbers and arrays as they are,
    strings and JSON values as JSON text in their own namespace (never told apart by content)."""
    # (the key is the entry's name in the zip: UTF-8, and a NUL would cut it short)
    if "\0" in key or any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise ValueError(f"extra key {key!r} cannot be stored: a NUL character or a lone "
                         "surrogate cannot be part of a file name in the checkpoint")
    if isinstance(value, (str, list, tuple, dict)) or value is None:
        try:
            # (ASCII only, so no character is lost in the .npy string: not even a trailing NUL)
            return f"extra.json/{key}", np.asarray(json.dumps(value, ensure_ascii=True))
        except (TypeError, ValueError):
            pass
    elif isinstance(value, (bool, int, float, np.generic, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"extra {key!r} cannot be stored (object array)")
        return f"extra/{key}", arr
    raise TypeError(f"extra {key!r} of type {type(value).__name__} cannot be stored: use numbers, "
                    "strings, arrays, or JSON-serializable lists/dicts")


def _host():
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _tmp_prefix(base):
    # (the target's name is shortened so that the temporary name stays within NAME_MAX)
    return f".{base[:100]}."


def _tmp_pattern(base):
    """Matches the temporary files of writers of ``base``: groups host and pid."""
    return re.compile(re.escape(_tmp_prefix(base)) + r"([A-Za-z0-9-]+)\.(\d+)\.[0-9a-f]+"
                      + re.escape(_TMP_SUFFIX) + r"\Z")


def _process_exists(pid):
    if os.name != "posix" or pid == os.getpid():
        return True  # (elsewhere we cannot ask without side effects: age decides)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user
        return True
    return True


def _remove_stale_temporaries(directory, base):
    """Delete temporary files that killed writers of ``directory/base`` left behind."""
    pattern, host, now = _tmp_pattern(base), _host(), time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m is None:
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            dead = m.group(1) == host and not _process_exists(int(m.group(2)))
            if dead or now - st.st_mtime > _STALE_AFTER:
                os.unlink(path)
        except OSError:
            pass  # gone already, or not ours to delete


def _create_temporary(directory, base):
    """A new, empty temporary file next to the target: (fd, path). The umask applies."""
    prefix = os.path.join(directory, _tmp_prefix(base) + f"{_host()}.{os.getpid()}.")
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_CLOEXEC", 0))
    while True:
        path = prefix + secrets.token_hex(4) + _TMP_SUFFIX
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


#: state_dict keys the checkpoint keeps in its metadata when the optimizer has them
_OPTIONAL_META = ("groups", "skipped_steps", "state_dtype", "min_lowbit_size", "seed")


def _entry_meta(buf):
    """A state entry's non-array fields (a low-precision buffer's format, block, map), or None."""
    if not isinstance(buf, dict):
        return None
    return {k: v for k, v in buf.items() if not isinstance(v, np.ndarray)}


def save_checkpoint(path, params, optimizer, **extra):
    """Write ``params`` (a FlatParams), ``optimizer``'s state and ``extra`` values to ``path``.

    Extras may be numbers, strings, arrays, or JSON-serializable lists and
    dicts (e.g. the epoch, running statistics, an RNG state); strings come back
    exactly as given, lists and dicts as JSON gives them back (tuples as lists,
    keys as strings).  The file is replaced atomically; temporary files left by
    killed writers of the same path are removed first.
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
             **{k: sd[k] for k in _OPTIONAL_META if k in sd},
             "state": {n: len(b) for n, b in sd["state"].items()},
             # low-precision buffers: their format, block and map (the arrays are entries)
             "state_formats": {n: [_entry_meta(b) for b in bufs]
                               for n, bufs in sd["state"].items()}})),
    }
    for name, bufs in sd["state"].items():
        for i, b in enumerate(bufs):
            if isinstance(b, dict):
                for k, a in b.items():
                    if isinstance(a, np.ndarray):
                        arrays[f"optimizer/state/{name}/{i}/{k}"] = a
            else:
                arrays[f"optimizer/state/{name}/{i}"] = b
    for key, value in extra.items():
        name, arr = _extra_entry(key, value)
        arrays[name] = arr

    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(directory, base)
    fd, tmp = _create_temporary(directory, base)
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


# ------------------------------------------------------------------ loading

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


class _Header:
    """One entry of the archive as its zip and .npy headers declare it (no data read)."""

    __slots__ = ("info", "shape", "fortran_order", "dtype", "offset", "nbytes")

    def __init__(self, info, shape, fortran_order, dtype, offset):
        self.info, self.shape, self.fortran_order, self.dtype = info, shape, fortran_order, dtype
        self.offset = offset                            # where the data starts in the entry
        self.nbytes = math.prod(shape) * dtype.itemsize


def _read_header(zf, info, file_size):
    """The entry's declared array, checked against the file's size; only its header is read."""
    if info.compress_type == zipfile.ZIP_STORED:
        limit = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        limit = info.compress_size * _MAX_DEFLATE_RATIO
    else:
        raise CheckpointError(f"entry {info.filename!r} uses an unsupported compression")
    if info.compress_size > file_size or info.file_size > limit:
        raise CheckpointError(f"entry {info.filename!r} declares {info.file_size} bytes, more "
                              f"than a {file_size}-byte file can hold")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:
            raise CheckpointError(f"entry {info.filename!r} is a .npy of version {version}, "
                                  "expected 1.0 or 2.0")
        shape, fortran_order, dtype = _HEADER_READERS[version](f)
        if dtype.hasobject:
            raise CheckpointError(f"entry {info.filename!r} holds Python objects")
        if any(d < 0 for d in shape):
            raise CheckpointError(f"entry {info.filename!r} has a negative dimension {shape}")
        h = _Header(info, shape, fortran_order, dtype, f.tell())
    stored = info.file_size - h.offset
    if h.nbytes != stored:
        raise CheckpointError(f"entry {info.filename!r} declares shape {shape} of {dtype} "
                              f"({h.nbytes} bytes) but holds {stored} bytes")
    return h


def _read_headers(zf, file_size):
    """{name: _Header} of every entry (no pickles; sizes checked against the file)."""
    infos = zf.infolist()
    if sum(info.compress_size for info in infos) > file_size:
        raise CheckpointError("its entries overlap (more data than the file holds)")
    headers = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"entry {info.filename!r} is not a .npy array")
        headers[info.filename[:-len(".npy")]] = _read_header(zf, info, file_size)
    # Metadata and extras are not checked against the model: they may not claim more memory
    # than the file holds (a stored entry never does; a compressed one may expand that far).
    other = sum(h.nbytes for k, h in headers.items() if not _is_model_entry(k))
    if other > file_size + _SLACK:
        raise CheckpointError(f"its metadata and extras declare {other} bytes, more than the "
                              f"{file_size}-byte file itself (+{_SLACK} bytes) holds")
    return headers


def _is_model_entry(name):
    return name == "params/data" or name.startswith("optimizer/state/")


def _read_array(zf, h):
    """The entry's data, into an array allocated by its (checked) header."""
    arr = np.empty(h.shape, h.dtype, order="F" if h.fortran_order else "C")
    view = memoryview(arr.reshape(-1, order="A").view(np.uint8))
    with zf.open(h.info) as f:
        f.read(h.offset)
        done = 0
        while done < h.nbytes:
            n = f.readinto(view[done:])
            if not n:
                raise CheckpointError(f"entry {h.info.filename!r} is truncated")
            done += n
    return arr


def _entry(entries, key):
    if key not in entries:
        raise CheckpointError(f"it has no {key!r} entry")
    return entries[key]


def _json_text(a, what):
    if a.dtype.kind != "U" or a.ndim != 0:
        raise CheckpointError(f"{what} must be a JSON string, got {a.dtype} of shape {a.shape}")
    try:
        return json.loads(str(a))
    except ValueError as e:
        raise CheckpointError(f"{what} is not valid JSON: {e}") from None


def _json_entry(zf, headers, key, kind):
    value = _json_text(_read_array(zf, _entry(headers, key)), f"entry {key!r}")
    if not isinstance(value, kind):
        raise CheckpointError(f"entry {key!r} must hold a JSON {kind.__name__}, "
                              f"got {type(value).__name__}")
    return value


def _format(zf, headers):
    fmt = _read_array(zf, _entry(headers, "fastopt/format"))
    if fmt.shape != () or fmt.dtype.kind not in "iu":
        raise CheckpointError(f"entry 'fastopt/format' must be an integer, got {fmt.dtype} "
                              f"of shape {fmt.shape}")
    if int(fmt) not in _LOADS:
        raise CheckpointError(f"it has format {int(fmt)}, expected one of {_LOADS}")
    return int(fmt)


def _layout(zf, headers):
    raw = _json_entry(zf, headers, "params/layout", list)
    layout = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], list)
                and all(type(d) is int and d >= 0 for d in item[1])):
            raise CheckpointError(f"entry 'params/layout' has a bad item {item!r}; "
                                  "expected [name, [non-negative ints]]")
        layout.append((item[0], tuple(item[1])))
    return layout


def _meta(zf, headers):
    meta = _json_entry(zf, headers, "optimizer/meta", dict)
    for key, kind in (("type", str), ("hyper", dict), ("state", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"entry 'optimizer/meta' needs {key!r} as a JSON "
                                  f"{kind.__name__}, got {meta.get(key)!r}")
    for key in ("step", "epoch"):
        if key not in meta:
            raise CheckpointError(f"entry 'optimizer/meta' has no {key!r}")
    for name, count in meta["state"].items():
        # (bounded by the number of entries, so a bad count cannot make us loop for ever)
        if type(count) is not int or not 0 <= count <= len(headers):
            raise CheckpointError(f"entry 'optimizer/meta' says state {name!r} has {count!r} "
                                  "buffers")
    formats = meta.get("state_formats", {})
    if not isinstance(formats, dict):
        raise CheckpointError("entry 'optimizer/meta' has a bad 'state_formats'")
    return meta


def _state_buffers(optimizer):
    """The number of state buffers ``optimizer`` keeps per parameter."""
    try:
        return len(optimizer.state)
    except AttributeError:
        # (fastopt.distributed's loader passes a stand-in without state: the most any optimizer keeps)
        return max(len(spec.state) for spec in SPECS.values())


def _check_fit(path, headers, layout, meta, params, optimizer):
    """The archive, as its headers declare it, against the model: before any large allocation."""
    if layout != list(params.shapes.items()):
        raise CheckpointError(f"checkpoint {path!r} holds parameters {dict(layout)}, "
                              f"but params has {params.shapes}")
    data = headers.get("params/data")
    if data is None:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a fastopt checkpoint: "
                              "it has no 'params/data' entry")
    if data.dtype not in _check.FLOATS:
        raise CheckpointError(f"checkpoint {path!r}: params/data has dtype {data.dtype}, "
                              "expected float32 or float64")
    if data.dtype != params.dtype:
        # (Never cast: float64 -> float32 would round the weights silently, and the optimizer
        # state in the file has the file's dtype.)
        raise CheckpointError(f"checkpoint {path!r} holds {data.dtype} parameters, but params "
                              f"is {params.dtype}: load it into a FlatParams of dtype "
                              f"{data.dtype} (FlatParams(shapes, dtype=numpy.{data.dtype}))")
    if data.shape != params.data.shape:
        raise CheckpointError(f"checkpoint {path!r}: params/data has shape {data.shape}, "
                              f"expected {params.data.shape}")
    try:
        _check.array("params.data", params.data, writable=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot load checkpoint {path!r} into params: {e}") from None
    if meta["type"] != type(optimizer).__name__:
        raise CheckpointError(f"checkpoint {path!r} holds a {meta['type']} optimizer, "
                              f"not {type(optimizer).__name__}")
    # Every state buffer (a float array like the parameters, or its bfloat16/int8 form) is
    # at most as large as the parameters it belongs to.
    state = sum(h.nbytes for k, h in headers.items() if k.startswith("optimizer/state/"))
    limit = _state_buffers(optimizer) * params.data.nbytes + _SLACK
    if state > limit:
        raise CheckpointError(f"checkpoint {path!r} declares {state} bytes of optimizer state; a "
                              f"{type(optimizer).__name__} of {params.size} {params.dtype} "
                              f"parameters keeps at most {limit}")


def _state_entry(arrays, key, kind):
    """One state buffer: an array, or a low-precision buffer's dict (its fields and arrays)."""
    if kind is None:
        return _entry(arrays, key)
    if not isinstance(kind, dict):
        raise CheckpointError(f"entry 'optimizer/meta' describes {key!r} as {kind!r}")
    prefix = key + "/"
    found = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
    if not found:
        raise CheckpointError(f"it has no arrays of {key!r}")
    return {**kind, **found}


def _state(arrays, meta):
    formats = meta.get("state_formats", {})
    state = {}
    for n, count in meta["state"].items():
        kinds = formats.get(n, [None] * count)
        if not isinstance(kinds, list) or len(kinds) != count:
            raise CheckpointError(f"entry 'optimizer/meta' has bad state_formats for {n!r}")
        state[n] = [_state_entry(arrays, f"optimizer/state/{n}/{i}", kind)
                    for i, kind in enumerate(kinds)]
    return state


def _extras(arrays, fmt):
    """The extras: ``extra/<key>`` as stored, ``extra.json/<key>`` decoded (format 1: see the
    module's docstring)."""
    extras = {}
    for k, a in arrays.items():
        if k.startswith("extra.json/") and fmt >= 2:
            key = k[len("extra.json/"):]
            if key in extras:
                raise CheckpointError(f"extra {key!r} is stored twice")
            extras[key] = _json_text(a, f"extra {key!r}")
        elif k.startswith("extra/"):
            key = k[len("extra/"):]
            if key in extras:
                raise CheckpointError(f"extra {key!r} is stored twice")
            extras[key] = a.item() if a.ndim == 0 else a
            if fmt == 1 and isinstance(extras[key], str) and extras[key].startswith("json:"):
                try:
                    extras[key] = json.loads(extras[key][len("json:"):])
                except ValueError:
                    pass  # (format 1 prefixed only valid JSON: this was a plain string)
    return extras


@contextlib.contextmanager
def _reading(path):
    """Any problem reading the file is a CheckpointError saying it is corrupt."""
    try:
        yield
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a fastopt checkpoint: "
                              f"{e}") from None
    except MemoryError:
        raise  # (sizes are checked against the file and the model: this file is genuinely large)
    except Exception as e:  # noqa: BLE001 - whatever a damaged zip or .npy raises
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a fastopt checkpoint: "
                              f"{type(e).__name__}: {e}") from None


def load_checkpoint(path, params, optimizer, *, check=None):
    """Restore ``params`` and ``optimizer`` in place from ``path``; return the extras (a dict).

    All or nothing: the whole file is checked (and, with ``check``, the
    extras) before ``params`` or ``optimizer`` change.  Every array's declared
    size is checked against the file and the model before it is allocated.

    Parameters
    ----------
    path : str or path-like
    params : FlatParams
    optimizer : Optimizer
    check : callable(extras), optional
        Called with the decoded extras before anything changes; a
        ValueError, TypeError or KeyError it raises aborts the load as a
        CheckpointError.  (``fastopt train --resume`` checks its batch-norm
        statistics and RNG state this way.)

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError (a ValueError)
        Anything else: the file is unreadable, corrupt, not a fastopt
        checkpoint, or does not fit ``params`` / ``optimizer``.  Nothing has
        changed then.
    """
    if not isinstance(params, FlatParams):
        raise TypeError(f"params must be a FlatParams, got {type(params).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastopt optimizer, got {type(optimizer).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} is not a file")
    with contextlib.ExitStack() as stack:
        with _reading(path):
            f = stack.enter_context(open(path, "rb"))  # (one handle: sizes and data of one file)
            zf = stack.enter_context(zipfile.ZipFile(f))
            headers = _read_headers(zf, os.fstat(f.fileno()).st_size)
            fmt = _format(zf, headers)
            layout, meta = _layout(zf, headers), _meta(zf, headers)
        _check_fit(path, headers, layout, meta, params, optimizer)
        with _reading(path):
            arrays = {k: _read_array(zf, h) for k, h in headers.items()
                      if k not in ("fastopt/format", "params/layout", "optimizer/meta")}
            data, state, extras = arrays["params/data"], _state(arrays, meta), _extras(arrays, fmt)

    if check is not None:
        try:
            check(extras)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path!r} has unusable extras: "
                                  f"{type(e).__name__}: {e}") from None
    sd = {"type": meta["type"], "step": meta["step"], "epoch": meta["epoch"],
          "hyper": meta["hyper"], "state": state,
          **{k: meta[k] for k in _OPTIONAL_META if k in meta}}
    try:
        optimizer.load_state_dict(sd)  # checks everything before it changes anything
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} does not fit this optimizer: {e}") from None
    np.copyto(params.data, data)
    return extras
