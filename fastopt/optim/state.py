"""An optimizer's state buffers: allocation per format, state-dict entries, checked loading,
and the pickles of earlier versions.

The state is a dict ``{buffer name: [entry, ...]}`` (the names of
:data:`fastopt.optim.SPECS`), with one entry per parameter (a FlatParams: its flat buffer)
when the state is dense, or one per compiled tensor with a compact format; ``fmts`` gives
each entry's :class:`~fastopt.optim.formats.StateFormat`.  Nothing here branches on the
format: each entry is handled by its own.
"""

from collections.abc import Mapping

from . import formats
from .params import ParamSet

__all__ = ["zeros", "fill", "tensor_formats", "entry_formats", "rows", "nbytes", "entries", "check_entries", "load",
           "writable", "upgrade_pickle"]


def tensor_formats(fmt, tensor_compact):
    """Each compiled tensor's format: ``fmt`` for the tensors kept compact (``tensor_compact``),
    dense for the others."""
    return [fmt if c else formats.DENSE for c in tensor_compact]


def entry_formats(fmt, tensor_compact, n_params):
    """Each entry's format: with a compact ``fmt``, one entry per compiled tensor
    (:func:`tensor_formats`); with a dense one, one dense entry per parameter."""
    if fmt.compact:
        return tensor_formats(fmt, tensor_compact)
    return [formats.DENSE] * n_params


def zeros(names, fmts, like, nonnegative):
    """Zero state: per name, one entry per array of ``like`` in its format of ``fmts``
    (buffers in ``nonnegative`` hold no negative value: int8 uses the unsigned map)."""
    return {name: [f.zeros(t.shape, t.dtype, name not in nonnegative, like=t, k=j + 1)
                   for t, f in zip(like, fmts)]
            for j, name in enumerate(names)}


def fill(entries, fmts, value):
    """Set every entry of one state buffer (a list, in the formats ``fmts``) to ``value``."""
    for f, e in zip(fmts, entries):
        f.fill(e, value)


def rows(states, fmts):
    """(name, index, format, entry) of every entry."""
    return [(n, i, f, e) for n, bufs in states.items() for i, (f, e) in enumerate(zip(fmts, bufs))]


def nbytes(states, fmts):
    """Bytes of every entry's buffers."""
    return sum(f.nbytes(e) for _, _, f, e in rows(states, fmts))


def entries(states, fmts, keys=None):
    """The state-dict ``state``: per name a list of entries (copies), or a dict by ``keys``."""
    out = {n: [f.entry(e) for f, e in zip(fmts, bufs)] for n, bufs in states.items()}
    if keys is not None:
        out = {n: dict(zip(keys, bufs)) for n, bufs in out.items()}
    return out


def check_entries(saved, states, fmts, keys, reason):
    """The arrays to copy, per name and entry, from a state dict's ``state``; raises
    ValueError (nothing changed) when it does not fit ``states``."""
    if not isinstance(saved, dict) or set(saved) != set(states):
        got = sorted(saved) if isinstance(saved, dict) else repr(saved)
        raise ValueError(f"state_dict has state {got}, expected a dict of {sorted(states)}")
    sources = {}
    for name, bufs in states.items():
        src = saved[name]
        if keys is not None:
            if not isinstance(src, Mapping) or set(src) != set(keys):
                raise ValueError(f"state {name!r} must be a dict with the keys of params {keys}")
            src = [src[k] for k in keys]
        elif not isinstance(src, (list, tuple)) or len(src) != len(bufs):
            raise ValueError(f"state {name!r} must be a list of {len(bufs)} arrays")
        sources[name] = [f.check_entry(f"state {name}[{i}]", dst, s, reason)
                         for i, (f, dst, s) in enumerate(zip(fmts, bufs, src))]
    return sources


def load(states, fmts, sources):
    """Copy ``sources`` (from :func:`check_entries`) into the entries."""
    for name, bufs in states.items():
        for f, dst, src in zip(fmts, bufs, sources[name]):
            f.load(dst, src)


def writable(states, fmts):
    """Every entry with writable buffers, in place (copies of read-only ones: the state is the
    optimizer's own, so unpickled from read-only out-of-band buffers it is copied)."""
    for bufs in states.values():
        bufs[:] = [f.writable(e) for f, e in zip(fmts, bufs)]


def upgrade_pickle(state, members):
    """A pickled optimizer's ``__dict__`` from before ParamSet and the checked options, in
    place; ``members`` makes a group's read-only ``params`` list."""
    ps = ParamSet.__new__(ParamSet)
    flat, keys = state.pop("flat", None), state.pop("_keys", None)
    arrays, names = state.pop("_params"), state.pop("_names")
    kind = "flat" if flat is not None else "dict" if keys is not None else "list"
    entries_ = list(flat) if flat is not None else keys if keys is not None else arrays
    where = {}
    for k, g in enumerate(state["param_groups"]):
        for m in g["params"]:
            where[m if isinstance(m, str) else id(m)] = k
    entry_groups = [where.get(e if isinstance(e, str) else id(e), 0) for e in entries_]
    fields = dict(_arrays=arrays, names=names, keys=keys, flat=flat, kind=kind,
                  entries=entries_, entry_groups=entry_groups,
                  param_groups=[dict(g) for g in state["param_groups"]])
    for k, v in fields.items():
        object.__setattr__(ps, k, v)
    state["_pset"] = ps
    for name in ("impl", "max_grad_norm", "skip_nonfinite", "seed", "state_dtype",
                 "min_lowbit_size"):
        if name in state:
            state["_" + name] = state.pop(name)
    state["param_groups"] = [{**g, "params": members(g["params"])}
                             for g in state["param_groups"]]
    state["_members"] = [g["params"] for g in state["param_groups"]]
