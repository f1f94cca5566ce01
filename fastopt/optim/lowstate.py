"""Optimizer state stored in fewer bits: bfloat16, block-wise int8 and block-wise float8.

An optimizer built with ``state_dtype="bfloat16"``, ``"int8"`` or ``"float8"`` keeps each large float32
parameter's state buffers as one of these objects (small arrays keep float32 arrays, see
:class:`fastopt.Optimizer`).  They hold the bits the compiled kernels of
:mod:`fastopt.kernels.lowbit` update in place; ``np.asarray(s)`` (or ``s.to_float32()``)
gives the float32 values they stand for.  The formats are specified in
:mod:`fastopt.kernels._formats`.
"""

import numpy as np

from ..kernels._formats import (QBLOCK, absmax_size, bf16_to_float32, dequantize_blockwise,
                                dequantize_float8, signed_map, unsigned_map, zeros_float8,
                                zeros_int8)

__all__ = ["BFloat16State", "Int8State", "Float8State", "STATE_DTYPES", "state_format"]

#: The accepted ``state_dtype`` values.
STATE_DTYPES = ("float32", "bfloat16", "int8", "float8")

#: The quantization map of each named map in a state dict.
_MAPS = {"signed": signed_map, "unsigned": unsigned_map}


def state_format(value):
    """``value`` as one of :data:`STATE_DTYPES` (a string, or a NumPy or ml_dtypes dtype)."""
    name = value
    if not isinstance(value, str):
        try:
            name = np.dtype(value).name
        except TypeError:
            name = None
    if name not in STATE_DTYPES:
        raise ValueError(f"state_dtype must be one of {list(STATE_DTYPES)}, got {value!r}")
    return name


class _LowState:
    """Common part: shape, values and state-dict conversion."""

    format = ""
    __slots__ = ()

    def __setattr__(self, name, value):
        # the compiled tables hold the buffers: rebinding one would leave them updating the old
        raise AttributeError(f"{type(self).__name__}.{name} cannot be rebound (the optimizer's "
                             f"compiled tables point at its buffers): write into them instead, "
                             f"e.g. state.{self._buffer_name}[...] = values")

    def __array__(self, dtype=None, copy=None):
        out = self.to_float32()
        return out if dtype is None else out.astype(dtype)

    @property
    def dtype(self):
        """float32: the dtype of the values (``np.asarray(state)``)."""
        return np.dtype(np.float32)

    @property
    def size(self):
        return int(np.prod(self.shape))

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, nbytes={self.nbytes})"

    # The format's state-dict entries, at class level (ZeRO-1's layout reads and writes them
    # without a state object): the arrays of an entry, in order, with their dtypes and lengths.

    @classmethod
    def kind(cls, signed):
        """The code a buffer of signed (or non-negative) state is stored with (None: one)."""
        return None

    @classmethod
    def streams(cls, size):
        """The arrays of an entry for ``size`` elements: ``[(field, dtype, length), ...]``."""
        raise NotImplementedError

    @classmethod
    def make_entry(cls, arrays, shape, kind):
        """A state-dict entry of ``arrays`` (as :meth:`streams` lists them; not copied)."""
        raise NotImplementedError

    @classmethod
    def check_meta(cls, name, src, kind):
        """The arrays of state-dict entry ``src`` (named ``name`` in errors), in the order of
        :meth:`streams`, after checking its format, keys and code (not the arrays)."""
        raise NotImplementedError

    def entry(self):
        """A state-dict entry (copies), with what the format needs to read it back."""
        return self.make_entry([b.copy() for b in self.buffers()], self.shape, self._kind())

    def check_entry(self, name, src):
        """The arrays to copy from a state-dict entry, checked against this buffer."""
        arrays = self.check_meta(name, src, self._kind())
        return [_like(f"{name}[{field!r}]", a, b)
                for (field, _, _), a, b in zip(self.streams(self.size), arrays, self.buffers())]

    def _kind(self):
        return None


class BFloat16State(_LowState):
    """A bfloat16 state buffer: ``bits`` (uint16, the upper halves of float32 values).

    Updated with stochastic rounding (see :func:`fastopt.kernels.lowbit.adam_step_bf16`).
    ``np.asarray(state)`` gives the float32 values.
    """

    format = "bfloat16"
    _buffer_name = "bits"
    __slots__ = ("bits", "flat_bits")

    def __init__(self, bits):
        bits = writable(bits)
        _set(self, bits=bits, flat_bits=bits.reshape(-1))

    @classmethod
    def zeros(cls, shape):
        return cls(np.zeros(shape, np.uint16))

    @property
    def shape(self):
        return self.bits.shape

    @property
    def nbytes(self):
        return self.bits.nbytes

    def buffers(self):
        return [self.bits]

    def to_float32(self):
        """The float32 values (a new array)."""
        return bf16_to_float32(self.bits).reshape(self.shape)

    @classmethod
    def streams(cls, size):
        return [("bits", np.dtype(np.uint16), size)]

    @classmethod
    def make_entry(cls, arrays, shape, kind):
        return {"format": cls.format, "bits": arrays[0].reshape(shape)}

    @classmethod
    def check_meta(cls, name, src, kind):
        _check_keys(name, src, cls.format, ("bits",))
        return [src["bits"]]

    def __getstate__(self):
        return self.bits

    def __setstate__(self, bits):
        self.__init__(bits)


class _BlockState(_LowState):
    """Common part of the block-wise formats: ``codes`` (uint8, the parameter's shape),
    ``absmax`` (float32, one per block of ``block`` = 256 elements) and the name of the code
    the values are read with (its state-dict key: ``_kind_key``)."""

    block = QBLOCK
    _buffer_name = "codes"
    _kind_key = ""            # "map" (int8) or "code" (float8)
    _kind_what = ""           # how an error message names it
    __slots__ = ()

    @property
    def shape(self):
        return self.codes.shape

    @property
    def nbytes(self):
        return self.codes.nbytes + self.absmax.nbytes

    def buffers(self):
        return [self.codes, self.absmax]

    @classmethod
    def streams(cls, size):
        return [("codes", np.dtype(np.uint8), size),
                ("absmax", np.dtype(np.float32), absmax_size(size))]

    @classmethod
    def make_entry(cls, arrays, shape, kind):
        codes, absmax = arrays
        return {"format": cls.format, "block": cls.block, cls._kind_key: kind,
                "codes": codes.reshape(shape), "absmax": absmax}

    @classmethod
    def check_meta(cls, name, src, kind):
        key = cls._kind_key
        _check_keys(name, src, cls.format, ("block", key, "codes", "absmax"))
        if src["block"] != cls.block:
            raise ValueError(f"{name} has {cls.format} blocks of {src['block']!r} elements, "
                             f"expected {cls.block}")
        if src[key] != kind:
            raise ValueError(f"{name} uses the {src[key]!r} {cls._kind_what}, expected "
                             f"{kind!r}")
        return [src["codes"], src["absmax"]]

    def __getstate__(self):
        return self.codes, self.absmax, self._kind()

    def __setstate__(self, state):
        self.__init__(*state)


class Int8State(_BlockState):
    """A block-wise int8 state buffer: ``codes`` (uint8, the parameter's shape) and ``absmax``
    (float32, one per block of ``block`` = 256 elements), values ``qmap.values[code] * absmax``.

    ``np.asarray(state)`` gives the float32 values.
    """

    format = "int8"
    _kind_key = "map"
    _kind_what = "quantization map"
    __slots__ = ("codes", "flat_codes", "absmax", "map_name", "qmap", "tables")

    def __init__(self, codes, absmax, map_name):
        codes = writable(codes)
        qmap = _MAPS[map_name]()
        _set(self, codes=codes, flat_codes=codes.reshape(-1), absmax=writable(absmax),
             map_name=map_name, qmap=qmap, tables=qmap.kernel_tables())

    @classmethod
    def zeros(cls, shape, map_name):
        codes, absmax = zeros_int8(shape, _MAPS[map_name]())
        return cls(codes, absmax, map_name)

    @classmethod
    def kind(cls, signed):
        return "signed" if signed else "unsigned"

    def _kind(self):
        return self.map_name

    def to_float32(self):
        """The float32 values (a new array)."""
        return dequantize_blockwise(self.codes, self.absmax, self.qmap)


class Float8State(_BlockState):
    """A block-wise float8 state buffer: ``codes`` (uint8, the parameter's shape) and
    ``absmax`` (float32, one per block of ``block`` = 256 elements); ``code`` is "e3m4"
    (signed state) or "e4m4" (non-negative state), see :mod:`fastopt.kernels._formats`.

    ``np.asarray(state)`` gives the float32 values.
    """

    format = "float8"
    _kind_key = "code"
    _kind_what = "float8 code"
    __slots__ = ("codes", "flat_codes", "absmax", "code")

    def __init__(self, codes, absmax, code):
        if code not in ("e3m4", "e4m4"):
            raise ValueError(f"code must be 'e3m4' or 'e4m4', got {code!r}")
        codes = writable(codes)
        _set(self, codes=codes, flat_codes=codes.reshape(-1), absmax=writable(absmax),
             code=code)

    @classmethod
    def zeros(cls, shape, code):
        return cls(*zeros_float8(shape), code)

    @classmethod
    def kind(cls, signed):
        return "e3m4" if signed else "e4m4"

    def _kind(self):
        return self.code

    def to_float32(self):
        """The float32 values (a new array)."""
        return dequantize_float8(self.codes, self.absmax, self.code == "e3m4")


def _set(obj, **fields):
    """Bind a state object's fields (once: ``__setattr__`` refuses rebinding)."""
    for k, v in fields.items():
        object.__setattr__(obj, k, v)


def _check_keys(name, src, fmt, keys):
    if not isinstance(src, dict) or src.get("format") != fmt:
        got = src.get("format") if isinstance(src, dict) else type(src).__name__
        raise ValueError(f"{name} must be {fmt} state (a dict with format={fmt!r}), got {got!r}")
    missing = [k for k in keys if k not in src]
    if missing:
        raise ValueError(f"{name} lacks {missing}")


def _like(name, src, dst):
    src = np.asarray(src)
    if src.shape != dst.shape or src.dtype != dst.dtype:
        raise ValueError(f"{name} has shape {src.shape} and dtype {src.dtype}, expected "
                         f"{dst.shape} and {dst.dtype}")
    return src


def writable(a):
    """``a``, or a writable, aligned, C-contiguous copy of it when it is not (a state buffer
    unpickled from read-only out-of-band buffers: pickle protocol 5, Ray, Dask, shared memory).
    The state is the optimizer's own, so a copy changes nobody else's memory."""
    flags = a.flags
    if type(a) is np.ndarray and flags.writeable and flags.c_contiguous and flags.aligned:
        return a
    return np.array(a, dtype=a.dtype, order="C", copy=True, subok=False)


def buffers(entry):
    """The arrays of one state entry (a float32/float64 array, or a low-bit state)."""
    return entry.buffers() if isinstance(entry, _LowState) else [entry]


def is_lowbit(entry):
    return isinstance(entry, _LowState)
