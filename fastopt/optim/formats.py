"""How an optimizer stores its state: one :class:`StateFormat` per ``state_dtype``.

A format knows everything that depends on how a state buffer is stored, so that the
optimizer never asks which format it holds:

============  ============================  ==========================================
format        an entry of ``opt.state``     kernel rows (what the compiled step takes)
============  ============================  ==========================================
dense         the parameter's dtype array   the array
bfloat16      :class:`BFloat16State`        its ``bits`` (uint16)
int8          :class:`Int8State`            its ``codes`` (uint8), its ``absmax`` (float32)
float8        :class:`Float8State`          its ``codes`` (uint8), its ``absmax`` (float32)
============  ============================  ==========================================

Each format makes zero entries (:meth:`StateFormat.zeros`), gives their kernel rows
(:meth:`~StateFormat.rows`), their float view (:meth:`~StateFormat.values`, as
``np.asarray``), their bytes, their state-dict entry (:meth:`~StateFormat.entry`), checks
a state-dict entry before anything is copied (:meth:`~StateFormat.check_entry`) and runs
the compiled step and its NumPy twin over the tensors kept in it (for any row of the
kernel table :data:`fastopt.specs.KERNELS`: each format knows the names and arguments of its
compiled calls and twins, ``<kernel>_multi``, ``<kernel>_bf16_multi``, ...).  :func:`get` finds a
format by its ``state_dtype`` name (``"float32"`` is the dense format: float32 parameters
keep float32 state, float64 parameters float64 state); :data:`FORMATS` lists them.
The bit layouts are specified in :mod:`fastopt.kernels._formats`.
"""

import numpy as np

from ..kernels._formats import float32_to_bf16, quantize_blockwise, quantize_float8
from ..reference import lowbit as _reference_lowbit
from .. import reference as _reference
from ..runtime.alloc import staggered_zeros
from ..runtime.dispatch import ext
from .lowstate import BFloat16State, Float8State, Int8State, _like, writable

__all__ = ["StateFormat", "FORMATS", "get", "DENSE", "BFLOAT16", "INT8", "FLOAT8"]


class StateFormat:
    """One way of storing optimizer state (a registered singleton: see :func:`get`).

    Attributes
    ----------
    name : str
        The ``state_dtype`` that selects it.
    compact : bool
        Fewer bits than the parameters: only float32 parameters of at least
        ``min_lowbit_size`` elements use it (the others keep dense state), and a FlatParams
        keeps one entry per run of consecutive names of one group and one format (a dense
        format keeps one flat buffer).
    state_class : type or None
        A compact format's state objects' class (:mod:`fastopt.optim.lowstate`): its
        state-dict entries' arrays, code and checks.
    """

    name = ""
    compact = False
    state_class = None

    def zeros(self, shape, dtype, signed, *, like=None, k=1):
        """A zero state entry for a parameter (or run) of ``shape`` and ``dtype``.

        ``signed``: the buffer may hold negative values (int8 picks its map by it);
        ``like``, ``k``: the parameter it goes with and the buffer's rank among its
        parameter's buffers (dense state is staggered from it within a page).
        """
        raise NotImplementedError

    def fill(self, entry, value):
        """Set every value of ``entry`` to ``value`` (a buffer's initial value), as this
        format stores it (rounded to nearest, or quantized)."""
        raise NotImplementedError

    def rows(self, entry):
        """The arrays the compiled kernels take for ``entry``, in order."""
        raise NotImplementedError

    def values(self, entry):
        """The values ``entry`` stands for, as an ndarray (``np.asarray(entry)``)."""
        return np.asarray(entry)

    def nbytes(self, entry):
        """Bytes of ``entry``'s buffers."""
        return sum(b.nbytes for b in self.rows(entry))

    def writable(self, entry):
        """``entry`` with writable, aligned, C-contiguous buffers (copies where needed)."""
        return entry

    def entry(self, entry):
        """The state-dict entry of ``entry`` (copies)."""
        raise NotImplementedError

    def check_entry(self, name, entry, src, reason=""):
        """The arrays to copy into ``entry``'s rows from the state-dict entry ``src``.

        Raises ValueError naming ``name`` when ``src`` does not fit (nothing is changed);
        ``reason`` completes the message of a dense buffer offered a compact entry.
        """
        raise NotImplementedError

    def load(self, entry, arrays):
        """Copy ``arrays`` (from :meth:`check_entry`) into ``entry``'s buffers."""
        for d, s in zip(self.rows(entry), arrays):
            np.copyto(d, s)

    def kernel_tables(self, entries):
        """Extra tables the compiled step of one call takes (one entry per state buffer)."""
        return []

    def run(self, kernel, call, groups, step, gscale, n_threads, seed):
        """The compiled step of ``kernel`` (a row of :data:`fastopt.specs.KERNELS`) over
        ``call``'s tensors (gradients bound): ``groups`` holds one tuple of hyperparameters
        per group, in the row's order; the gradients are scaled by ``gscale``."""
        raise NotImplementedError

    def run_reference(self, kernel, p, g, entries, kwargs, step, offset, seed):
        """The NumPy twin of the step of ``kernel`` on one tensor ``p`` with state ``entries``
        (``kwargs``: the dense kernel's keyword arguments)."""
        raise NotImplementedError

    def __repr__(self):
        return f"<state format {self.name!r}>"

    def __reduce__(self):
        return get, (self.name,)


class Dense(StateFormat):
    """State in the parameter's own dtype: plain ndarrays."""

    name = "float32"

    def zeros(self, shape, dtype, signed, *, like=None, k=1):
        # (staggered from its parameter within a page, so the step's streams do not collide
        # in the cache: fastopt.runtime.alloc)
        return staggered_zeros(shape, dtype, like=like, k=k)

    def fill(self, entry, value):
        entry[...] = value

    def rows(self, entry):
        return [entry]

    def writable(self, entry):
        return writable(entry)

    def entry(self, entry):
        return entry.copy()

    def check_entry(self, name, entry, src, reason=""):
        if isinstance(src, dict):
            raise ValueError(f"{name} is {src.get('format')!r} state; this optimizer keeps it "
                             f"in float32{reason}")
        return [_like(name, src, entry)]

    def run(self, kernel, call, groups, step, gscale, n_threads, seed):
        self.run_multi(kernel, call.mt, groups, step, gscale, n_threads)

    @staticmethod
    def run_multi(kernel, mt, groups, step, gscale, n_threads):
        """The compiled ``<kernel>_multi`` over the MultiTensor ``mt`` (the functional API's
        call too); ``step`` is passed to kernels whose constants depend on it."""
        run = getattr(ext._optim, f"{kernel.name}_multi")
        if kernel.step:
            run(mt, groups, step, gscale, n_threads)
        else:
            run(mt, groups, gscale, n_threads)

    def run_reference(self, kernel, p, g, entries, kwargs, step, offset, seed):
        getattr(_reference, f"{kernel.name}_step")(p, g, *entries, **kwargs)


class _Compact(StateFormat):
    """A format whose entries are state objects with ``buffers()``, ``entry()``,
    ``check_entry()`` and ``to_float32()`` (:mod:`fastopt.optim.lowstate`)."""

    compact = True

    def rows(self, entry):
        return entry.buffers()

    def values(self, entry):
        return entry.to_float32()

    def entry(self, entry):
        return entry.entry()

    def check_entry(self, name, entry, src, reason=""):
        return entry.check_entry(name, src)

    #: the suffix of its compiled calls and twins (``<kernel>_bf16_multi``, ``<kernel>_step_bf16``)
    suffix = ""

    def _twin(self, kernel):
        return getattr(_reference_lowbit, f"{kernel.name}_step_{self.suffix}")


class BFloat16(_Compact):
    """bfloat16 state with stochastic rounding: :class:`BFloat16State` entries."""

    name = "bfloat16"
    state_class = BFloat16State
    suffix = "bf16"

    def zeros(self, shape, dtype, signed, *, like=None, k=1):
        return BFloat16State.zeros(shape)

    def fill(self, entry, value):
        entry.bits[...] = float32_to_bf16(np.full(entry.shape, value, np.float32))

    def run(self, kernel, call, groups, step, gscale, n_threads, seed):
        # (rows: param, grad, each buffer's bits; rounding hashes (seed, step, offsets[t] + i))
        getattr(ext._lowbit, f"{kernel.name}_bf16_multi")(
            call.table, call.mt.ntasks, groups, step, seed, call.offsets, gscale, n_threads)

    def run_reference(self, kernel, p, g, entries, kwargs, step, offset, seed):
        self._twin(kernel)(p, g, *[s.bits for s in entries],
                           **{**kwargs, "step": step, "seed": seed, "index_offset": offset})


class Int8(_Compact):
    """Block-wise int8 state: :class:`Int8State` entries (a signed or unsigned map)."""

    name = "int8"
    state_class = Int8State
    suffix = "int8"

    def zeros(self, shape, dtype, signed, *, like=None, k=1):
        return self.state_class.zeros(shape, self.state_class.kind(signed))

    def fill(self, entry, value):
        quantize_blockwise(np.full(entry.shape, value, np.float32), entry.qmap,
                           codes=entry.codes, absmax=entry.absmax)

    def kernel_tables(self, entries):
        return [e.tables for e in entries]

    def run(self, kernel, call, groups, step, gscale, n_threads, seed):
        # (rows: param, grad, each buffer's codes and absmax; one map table per buffer)
        getattr(ext._lowbit, f"{kernel.name}_int8_multi")(
            call.table, call.mt.ntasks, *call.tables, groups, step, gscale, n_threads)

    def run_reference(self, kernel, p, g, entries, kwargs, step, offset, seed):
        kwargs = dict(kwargs)
        if not kernel.step:
            kwargs.pop("step", None)
        self._twin(kernel)(p, g, *[b for s in entries for b in (s.codes, s.absmax)],
                           **kwargs)


class Float8(Int8):
    """Block-wise float8 state: :class:`Float8State` entries (e3m4 codes for signed state,
    e4m4 for non-negative state).  Run as int8 is, without maps."""

    name = "float8"
    state_class = Float8State
    suffix = "f8"

    def zeros(self, shape, dtype, signed, *, like=None, k=1):
        return self.state_class.zeros(shape, self.state_class.kind(signed))

    def fill(self, entry, value):
        quantize_float8(np.full(entry.shape, value, np.float32), entry.code == "e3m4",
                        codes=entry.codes, absmax=entry.absmax)

    def kernel_tables(self, entries):
        return []

    def run(self, kernel, call, groups, step, gscale, n_threads, seed):
        # (rows: param, grad, each buffer's codes and absmax; each buffer's code from the row)
        getattr(ext._lowbit, f"{kernel.name}_f8_multi")(
            call.table, call.mt.ntasks, groups, step, gscale, n_threads)


DENSE, BFLOAT16, INT8, FLOAT8 = Dense(), BFloat16(), Int8(), Float8()

#: The formats by ``state_dtype`` name.
FORMATS = {f.name: f for f in (DENSE, BFLOAT16, INT8, FLOAT8)}


def get(name):
    """The :class:`StateFormat` of a ``state_dtype`` name (see :data:`FORMATS`)."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"state_dtype must be one of {list(FORMATS)}, got {name!r}") from None
