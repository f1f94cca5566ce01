"""Parts of an optimizer: the optimizer of a range of its parameters' elements, and its state
cut out of, and put back into, the whole optimizer's state dict (ZeRO-1's slices).

The *flat vector* of a dtype is the optimizer's arrays of that dtype, flattened and
concatenated in order (for a FlatParams: its ``data``).  The optimizer's compiled tensors
(its arrays, or runs of a FlatParams) are ranges of these vectors: :func:`extents` lists
them, each with its parameter group, its state format and the global index of its first
element (the bfloat16 rounding hash).  Its compiled plan cuts each tensor into *chunks* of
at most 16,384 elements (from the tensor's start) and adds the squares of the gradient (the
clipping norm) chunk by chunk in a fixed order: :class:`NormOrder` keeps that order, and
:meth:`NormOrder.cuts` the chunk starts, where a part may begin (so a part splits no chunk,
and so no 256-element int8 quantization block either: chunks are whole blocks).

:func:`part` builds, over views of some pieces of those ranges, an optimizer of the same
class and configuration in which every element keeps its group, its state format, its
quantization block and its rounding index: each element's update is then the one the whole
optimizer would make (the kernels are elementwise within a block), bit for bit.

:class:`StateLayout` describes the ``state`` of an optimizer's state dict as *streams*:
per buffer name, per kind of row (the values of dense state of one dtype, bfloat16 bits,
int8 codes, int8 absmax), the concatenation of every entry's row in order.  The streams of
the parts of a flat vector, concatenated in order, are the whole optimizer's streams: so a
state dict is cut into parts, and parts joined into a state dict, by moving contiguous
ranges of typed arrays (:meth:`StateLayout.streams`, :meth:`StateLayout.state`).
"""

import bisect
from typing import NamedTuple

import numpy as np

from . import formats as _formats
from .registry import SPECS

__all__ = ["Extent", "extents", "NormOrder", "snap", "pieces", "check", "part", "piece_sizes",
           "StateLayout"]


class Extent(NamedTuple):
    """One compiled tensor of an optimizer, as a range of the flat vector of its dtype."""

    dtype: np.dtype
    start: int
    stop: int
    group: int
    fmt: str           # its state format: "float32" (dense, in the dtype), "bfloat16", "int8"
    offset: int        # the global index of its first element (the bfloat16 rounding hash)


def extents(opt):
    """The compiled tensors of ``opt`` (an :class:`~fastopt.optim.Optimizer`), in order."""
    compact = opt._format.compact
    if opt.flat is not None:
        slices = ([slice(0, opt.flat.data.size)] if opt._runs is None
                  else [r for r, _, _ in opt._runs])
    else:
        pos, slices = {}, []
        for t in opt._tensors:
            a = pos.get(t.dtype, 0)
            slices.append(slice(a, a + t.size))
            pos[t.dtype] = a + t.size
    out = []
    for i, (t, sl) in enumerate(zip(opt._tensors, slices)):
        fmt = opt._format.name if compact and opt._tensor_lowbit[i] else "float32"
        out.append(Extent(np.dtype(t.dtype), sl.start, sl.stop, opt._tensor_group[i], fmt,
                          int(opt._offsets[i])))
    return out


class NormOrder:
    """How an optimizer's fused step adds the squares of the gradient (its clipping norm and
    non-finite guard): per compiled call, per task, per chunk, each sum in double from 0.

    Parameters
    ----------
    opt : Optimizer
        Read once (its extents and compiled plan).

    Attributes
    ----------
    chunks : list of (dtype, int, int)
        Every chunk as a range of the flat vector of its dtype, in the order they are added.
    wide : bool
        Some call is over float64 (whose squares may overflow: then the values are checked).
    """

    def __init__(self, opt):
        exts = extents(opt)
        self.chunks, self._tasks = [], []
        for call in opt._plan.calls:
            tasks = call.mt.chunks()
            self._tasks.append([len(t) for t in tasks])
            for task in tasks:
                for t, off, n in task:
                    e = exts[call.index[t]]
                    block = getattr(_formats.get(e.fmt).state_class, "block", 1)
                    if off % block:                                    # (whole blocks)
                        raise RuntimeError(f"a compiled chunk starts inside an {e.fmt} block of "
                                           f"tensor {call.index[t]}, at {off}")
                    self.chunks.append((e.dtype, e.start + off, e.start + off + n))
        self.wide = any(not c.f32 for c in opt._plan.calls)

    def cuts(self, dtype):
        """Where a part of the flat vector of ``dtype`` may begin or end: every chunk's start,
        and the end (sorted)."""
        out = sorted({a for dt, a, _ in self.chunks if dt == dtype}
                     | {b for dt, _, b in self.chunks if dt == dtype})
        return out or [0]

    def total(self, sums):
        """The sum of squares the fused step computes, from each chunk's (``sums``, in the
        order of ``chunks``; one chunk's sum is ``sum_of_squares`` of its elements)."""
        sums = sums.tolist() if isinstance(sums, np.ndarray) else list(sums)
        total, k = 0.0, 0
        for tasks in self._tasks:
            call = 0.0
            for m in tasks:
                task = 0.0
                for x in sums[k:k + m]:
                    task = task + x
                call = call + task
                k += m
            total += call
        return total


def snap(cuts, x):
    """The largest of the sorted ``cuts`` that is ``<= x`` (``x`` itself when none is)."""
    i = bisect.bisect_right(cuts, x)
    return cuts[i - 1] if i else x


def pieces(exts, dtype, lo, hi):
    """The pieces ``(extent, a, b)`` of ``[lo, hi)`` of the flat vector of ``dtype``, in order."""
    out = []
    for e in exts:
        a, b = max(lo, e.start), min(hi, e.stop)
        if e.dtype == dtype and a < b:
            out.append((e, a, b))
    return out


def check(opt):
    """Raise ValueError when ``opt`` cannot be cut into pieces (:func:`part`).

    For callers that must refuse before they change anything (DataParallel's ZeRO-1).
    """
    if opt.clip_per_param is not None:
        # (each piece would be clipped by its own norm, not its parameter's)
        raise ValueError("clip_per_param is not supported on pieces of an optimizer (sharded "
                         "ZeRO-1 state) yet: clip before the step, or use max_grad_norm")


def part(opt, views):
    """An optimizer of ``opt``'s class and configuration over pieces of its tensors.

    Parameters
    ----------
    opt : Optimizer
        The whole optimizer (not changed).
    views : list of (Extent or None, int, ndarray)
        Per piece: the extent it is cut from (None: an empty piece, which keeps a dtype
        present), the index of its first element in the flat vector, and the 1-D array it
        updates in place (views into the caller's buffers).  A piece of an extent with int8
        state starts on one of its 256-element blocks (the start of a chunk always does).

    Returns
    -------
    Optimizer
        Over a dict of the pieces (keys ``"0"``, ``"1"``, ... in order): each piece in its
        extent's parameter group (all groups kept, empty or not, with their current values),
        state format and rounding index, at step 0 and epoch 1 with zero state.
    """
    check(opt)
    names = [str(k) for k in range(len(views))]
    ngroups = len(opt.param_groups)
    overrides = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    groups = [{**overrides[k], "params": [n for n, (e, _, _) in zip(names, views)
                                          if e is not None and e.group == k]}
              for k in range(1, ngroups)]
    new = opt.like(dict(zip(names, (v for _, _, v in views))), groups=groups)
    if overrides[0]:
        new.param_groups[0].update(overrides[0])
        new._group_hyper()
    # each piece keeps its extent's state format and its elements' rounding indices
    new._tensor_lowbit = [e is not None and e.fmt != "float32" for e, _, _ in views]
    new._offsets = [0 if e is None else e.offset + (a - e.start) for e, a, _ in views]
    new._plan_calls()
    new._states = new._new_states()
    new._build()
    return new


def piece_sizes(extent, n):
    """``{kind: (dtype, elements)}``: the stream lengths ``n`` elements of ``extent`` add
    to each state buffer's streams (see :class:`StateLayout`)."""
    return {kind: (dt, m) for kind, dt, m in _kinds(extent.fmt, extent.dtype, n)}


def _kinds(fmt, dtype, size):
    """The rows of one state entry: ``[(kind, dtype, length), ...]``."""
    cls = _formats.get(fmt).state_class
    if cls is not None:
        return cls.streams(size)
    return [(f"values {np.dtype(dtype).name}", np.dtype(dtype), size)]


class StateLayout:
    """The entries of an optimizer's state dict ``state``, and their streams.

    Attributes
    ----------
    names : list of str
        The state buffers' names.
    keys : list or None
        The dict keys the entries are keyed by (a dict of parameters), else None (a list).
    entries : list of (str, dtype, tuple)
        Each entry's format, dtype and shape, in order.
    signed : dict of str to bool
        Whether each buffer may hold negative values (picks an int8 map, a float8 code).
    """

    def __init__(self, opt):
        self.names = list(opt._state_names)
        self.keys = opt._keys
        fmts = opt._state_formats()
        like = opt._tensors if opt._format.compact else opt._params
        self.entries = [(f.name, np.dtype(t.dtype), tuple(t.shape)) for f, t in zip(fmts, like)]
        nonneg = SPECS[opt._kernel].nonnegative
        self.signed = {n: n not in nonneg for n in self.names}

    def sizes(self):
        """``{kind: (dtype, elements)}``: the length of each stream of one buffer."""
        out = {}
        for fmt, dt, shape in self.entries:
            for kind, kdt, n in _kinds(fmt, dt, int(np.prod(shape, dtype=np.int64))):
                out[kind] = (kdt, out.get(kind, (kdt, 0))[1] + n)
        return out

    def _rows(self, name, i, src):
        """The rows of entry ``i`` of buffer ``name`` (a state-dict entry), checked."""
        fmt, dt, shape = self.entries[i]
        what = f"state {name}[{i if self.keys is None else repr(self.keys[i])}]"
        if fmt == "float32":
            if isinstance(src, dict):
                raise ValueError(f"{what} is {src.get('format')!r} state; this optimizer keeps "
                                 f"it in {dt.name}")
            arrays = [src]
        else:
            cls = _formats.get(fmt).state_class
            arrays = cls.check_meta(what, src, cls.kind(self.signed[name]))
        out = []
        size = int(np.prod(shape, dtype=np.int64))
        for (kind, kdt, n), a in zip(_kinds(fmt, dt, size), arrays):
            a = np.asarray(a)
            want = shape if kind != "absmax" else (n,)
            if a.shape != want or a.dtype != kdt:
                raise ValueError(f"{what} has {kind} of shape {a.shape} and dtype {a.dtype}, "
                                 f"expected {want} and {kdt}")
            out.append((kind, a.reshape(-1)))
        return out

    def streams(self, state):
        """``{name: {kind: 1-D array}}`` from a state dict's ``state``; ValueError (naming the
        entry) when it does not fit this layout."""
        if not isinstance(state, dict) or set(state) != set(self.names):
            got = sorted(state) if isinstance(state, dict) else repr(state)
            raise ValueError(f"state_dict has state {got}, expected a dict of {sorted(self.names)}")
        out = {}
        for name in self.names:
            src = state[name]
            if self.keys is not None:
                if not isinstance(src, dict) or set(src) != set(self.keys):
                    raise ValueError(f"state {name!r} must be a dict with the keys of params "
                                     f"{self.keys}")
                src = [src[k] for k in self.keys]
            elif not isinstance(src, (list, tuple)) or len(src) != len(self.entries):
                raise ValueError(f"state {name!r} must be a list of {len(self.entries)} entries")
            rows = {}
            for i, s in enumerate(src):
                for kind, a in self._rows(name, i, s):
                    rows.setdefault(kind, []).append(a)
            sizes = self.sizes()
            out[name] = {kind: (np.concatenate(rows[kind]) if kind in rows
                                else np.zeros(0, dt)) for kind, (dt, _) in sizes.items()}
        return out

    def state(self, streams):
        """The state dict ``state`` whose streams are ``streams`` (``{name: {kind: array}}``,
        each of :meth:`sizes`' length); the entries are views of the streams."""
        out = {}
        for name in self.names:
            pos = dict.fromkeys(streams[name], 0)
            entries = []
            for fmt, dt, shape in self.entries:
                size = int(np.prod(shape, dtype=np.int64))
                rows = {}
                for kind, _, n in _kinds(fmt, dt, size):
                    a = pos[kind]
                    rows[kind] = streams[name][kind][a:a + n]
                    pos[kind] = a + n
                cls = _formats.get(fmt).state_class
                if cls is not None:
                    entries.append(cls.make_entry([rows[k] for k, _, _ in cls.streams(size)],
                                                  shape, cls.kind(self.signed[name])))
                else:
                    entries.append(rows[f"values {dt.name}"].reshape(shape))
            out[name] = entries if self.keys is None else dict(zip(self.keys, entries))
        return out
