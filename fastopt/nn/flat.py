"""FlatParams: a whole model's parameters in one contiguous float32 or float64 buffer."""

import copy
import operator
from collections.abc import Mapping

import numpy as np

from ..runtime.alloc import staggered_zeros

from ..kernels._attrs import Checked
from ..kernels._check import FLOATS

__all__ = ["FlatParams"]

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _shape(name, shape):
    if not isinstance(shape, tuple):
        raise TypeError(f"shape of {name!r} must be a tuple of non-negative ints, "
                        f"got {type(shape).__name__} {shape!r}")
    out = []
    for d in shape:
        if isinstance(d, (bool, np.bool_)):
            raise TypeError(f"shape of {name!r} must be a tuple of non-negative ints, got {shape!r}")
        try:
            d = operator.index(d)
        except TypeError:
            raise TypeError(f"shape of {name!r} must be a tuple of non-negative ints, "
                            f"got {shape!r}") from None
        if d < 0:
            raise ValueError(f"shape of {name!r} must be a tuple of non-negative ints, "
                             f"got {shape!r}")
        out.append(d)
    return tuple(out)


def _dtype(dtype):
    """``dtype`` as a numpy.dtype, float32 or float64 (the dtypes the kernels compute in)."""
    supported = " and ".join(str(d) for d in FLOATS)
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt not in FLOATS:
        got = repr(dtype) if dt is None else str(dt)
        raise TypeError(f"dtype must be one of the supported dtypes {supported}, got {got}")
    return dt


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


class FlatParams(Checked):
    """Named parameter arrays that are views into one contiguous float32 or float64 buffer.

    ``data`` holds every parameter back to back and ``grad`` their gradients,
    in the same layout, so an optimizer updates the whole model with one
    fused kernel call.  ``params[name]`` and ``grads[name]`` are views of the
    given shapes: write into them in place (``grads["W1"][...] = dW1``, or
    ``np.matmul(..., out=grads["W1"])``), never rebind them.

    Parameters
    ----------
    shapes : mapping of str to tuple of int
        Name -> shape, in the order the parameters are laid out. Parameters
        start at zero; see :func:`fastopt.init` to fill them.
    dtype : numpy.float32 (default) or numpy.float64
        The dtype of ``data``, ``grad`` and every view.  Anything else is a
        TypeError.

    Notes
    -----
    **Pickling and copying** give a FlatParams with its *own* ``data`` and
    ``grad`` (copies of the original's) whose views are views of those new
    buffers, so an optimizer on the copy and code reading the copy's
    ``params`` see the same numbers.  This holds for :mod:`pickle` (every
    protocol), :func:`copy.deepcopy`, :func:`copy.copy` and :meth:`copy`.
    ``copy.copy`` copies the buffers, as it does for a NumPy array: the
    parameters are the contents of ``data``, not objects a shallow copy could
    share.  For a second handle on the *same* buffers, use the same object.

    Inside one :func:`copy.deepcopy` or one pickle, every reference to
    ``data`` or ``grad`` becomes the copy's buffer (pickle's and deepcopy's
    memo keep identity), so an object holding both the FlatParams and its
    buffers (an optimizer) stays consistent.  The named views need more care,
    because NumPy copies a view as an independent array: ``copy.deepcopy``
    keeps a view linked when it meets the FlatParams first (in
    ``{"fp": fp, "W": fp.params["W"]}``, ``W`` is then ``copy["fp"].params["W"]``
    itself); a view met before its FlatParams, and any view pickled on its
    own, becomes an independent array.  After unpickling, take the views from
    the FlatParams (``fp.params["W"]``).

    **Attributes** are checked when set: ``data`` and ``grad`` cannot be rebound (write
    into them), ``params``, ``grads``, ``shapes``, ``dtype`` and ``size`` cannot be set, and
    any other public name raises AttributeError (a misspelled ``fp.gard = g`` is not
    ignored).  A subclass declares its own public attributes as class annotations
    (``tags: dict``); they are pickled and copied with it.

    Examples
    --------
    >>> import copy, pickle, numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"W": (3, 2), "b": (2,)})
    >>> fp.data.shape, fp.params["W"].shape
    ((8,), (3, 2))
    >>> fp.params["b"][...] = 1.0
    >>> fp.data
    array([0., 0., 0., 0., 0., 0., 1., 1.], dtype=float32)
    >>> fp64 = fastopt.FlatParams({"W": (3, 2)}, dtype=np.float64)
    >>> fp64
    FlatParams({W: (3, 2)}, size=6, dtype=float64)
    >>> fp2 = pickle.loads(pickle.dumps(fp))      # or copy.deepcopy(fp), copy.copy(fp), fp.copy()
    >>> fp2.data[-2:] = 5.0                       # the copy's views follow the copy's buffer ...
    >>> fp2.params["b"], fp.params["b"]           # ... and the original is untouched
    (array([5., 5.], dtype=float32), array([1., 1.], dtype=float32))
    """

    data: np.ndarray          # (declared: Checked; rebinding is refused by __setattr__)
    grad: np.ndarray

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], dtype=np.float32) -> None:
        if not isinstance(shapes, Mapping):
            raise TypeError(f"shapes must be a dict of name -> shape tuple, "
                            f"got {type(shapes).__name__}")
        dtype = _dtype(dtype)
        layout = {}
        offset = 0
        for name, shape in shapes.items():
            if not isinstance(name, str):
                raise TypeError(f"parameter names must be str, got {type(name).__name__} {name!r}")
            shape = _shape(name, shape)
            layout[name] = (offset, shape)
            offset += _size(shape)
        self._layout = layout
        self.data = np.zeros(offset, dtype=dtype)
        # (offset from data within a page: see fastopt.runtime.alloc)
        self.grad = staggered_zeros(offset, dtype, like=self.data, k=3)
        self._link()

    def _views(self, buf):
        return {name: buf[off:off + _size(shape)].reshape(shape)
                for name, (off, shape) in self._layout.items()}

    def _link(self):
        """(Re)build ``params`` and ``grads`` as views of ``data`` and ``grad``."""
        self._params = _Views("params", self._views(self.data))
        self._grads = _Views("grads", self._views(self.grad))

    @property
    def params(self):
        """Name -> writable view of ``data``, of the parameter's shape (a read-only mapping:
        write into a view, ``fp.params["W"][...] = W``, never rebind it)."""
        return self._params

    @property
    def grads(self):
        """Name -> writable view of ``grad``, of the parameter's shape (a read-only mapping:
        write into a view, ``fp.grads["W"][...] = dW`` or ``np.matmul(..., out=fp.grads["W"])``;
        ``fp.grads["W"] = dW`` would leave the optimizer's buffer as it was, so it raises)."""
        return self._grads

    @classmethod
    def from_arrays(cls, arrays, dtype=None):
        """A FlatParams holding a copy of each array of ``arrays`` (a dict name -> array).

        Parameters
        ----------
        arrays : mapping of str to array_like
            Real-valued (floating or integer) arrays, laid out in this order.
        dtype : numpy.float32, numpy.float64 or None (default)
            The FlatParams' dtype.  ``None`` chooses **float64 when every
            array is float64** (e.g. a scikit-learn or autograd model), and
            float32 otherwise (any float32, float16 or integer array, or no
            arrays at all), so a float32 model with one stray float64 array
            (``np.zeros(n)``) stays float32.  Pass ``dtype`` to decide
            yourself; converting float64 values to float32 rounds them.

        Examples
        --------
        >>> import numpy as np, fastopt
        >>> fastopt.FlatParams.from_arrays({"W": np.ones((2, 2)), "b": np.zeros(2)}).dtype
        dtype('float64')
        >>> W32 = np.ones((2, 2), np.float32)
        >>> fastopt.FlatParams.from_arrays({"W": W32, "b": np.zeros(2)}).dtype
        dtype('float32')
        """
        if not isinstance(arrays, Mapping):
            raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
                raise TypeError(f"array {k!r} has dtype {v.dtype}, expected a real numeric dtype")
        if dtype is None:
            dtype = _F64 if arrays and all(v.dtype == _F64 for v in arrays.values()) else _F32
        fp = cls({k: v.shape for k, v in arrays.items()}, dtype=dtype)
        for k, v in arrays.items():
            fp.params[k][...] = v
        return fp

    @property
    def dtype(self):
        """The dtype of ``data``, ``grad`` and every view (float32 or float64)."""
        return self.data.dtype

    @property
    def shapes(self):
        """Name -> shape, in layout order."""
        return {name: shape for name, (_, shape) in self._layout.items()}

    def slice(self, name):
        """The ``slice`` of ``data`` / ``grad`` that holds parameter ``name``."""
        off, shape = self._layout[name]
        return slice(off, off + _size(shape))

    @property
    def size(self):
        """Total number of parameters."""
        return self.data.size

    def zero_grad(self):
        """Set every gradient to zero (in place)."""
        self.grad.fill(0.0)

    # ------------------------------------------------------------ gradient hooks
    def add_grad_hook(self, hook):
        """Call ``hook(names)`` whenever :meth:`grads_ready` is called; returns a function
        that removes it.

        For data-parallel training with overlap: :class:`fastopt.distributed.DataParallel`
        (``overlap=True``) starts reducing those gradients while the backward pass goes on.
        Hooks are not copied or pickled with the FlatParams.
        """
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        hooks = self.__dict__.setdefault("_grad_hooks", [])
        hooks.append(hook)

        def remove():
            if hook in hooks:
                hooks.remove(hook)
        return remove

    def grads_ready(self, *names):
        """Say that the gradients of ``names`` are final for this step (a model's backward
        pass calls it per layer); nothing happens unless a hook was added."""
        for hook in self.__dict__.get("_grad_hooks", ()):
            hook(names)

    def __setattr__(self, name, value):
        # ``data`` and ``grad`` are the buffers every view (and an optimizer) points into:
        # rebinding one would leave them on the old buffer, so it raises.  Any other public
        # name must be declared (Checked: a subclass annotates its own, ``tags: dict``), so a
        # misspelled ``fp.gard = ...`` raises instead of being ignored.
        if name in ("data", "grad") and name in self.__dict__:
            raise AttributeError(f"FlatParams.{name} cannot be rebound (the views and the "
                                 f"optimizer point into it): write into it, "
                                 f"fp.{name}[...] = values")
        super().__setattr__(name, value)

    # ------------------------------------------------------------ pickling and copying
    # The state is the instance dict without the views (NumPy would pickle or copy each view
    # as an independent array); __setstate__ rebuilds them on the restored buffers.  Pickles
    # written before this existed (whose state still holds "params" and "grads") load too.

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_params", "_grads", "_grad_hooks")}

    def __setstate__(self, state):
        state = dict(state)
        for key in ("params", "grads", "_params", "_grads"):
            state.pop(key, None)
        layout = state.get("_layout")
        if not isinstance(layout, dict):
            raise ValueError("not a FlatParams state: it has no layout")
        size = sum(_size(shape) for _, shape in layout.values())
        for key in ("data", "grad"):
            state[key] = _buffer(key, state.get(key), size)
        if state["grad"].dtype != state["data"].dtype:
            raise ValueError(f"not a FlatParams state: data is {state['data'].dtype} but grad "
                             f"is {state['grad'].dtype}")
        self.__dict__.update(state)
        self._link()

    def copy(self):
        """A FlatParams with copies of ``data`` and ``grad`` and views of those copies.

        The same as :func:`copy.copy` (other attributes, e.g. of a subclass, are shared).
        """
        return self.__copy__()

    def __copy__(self):
        new = type(self).__new__(type(self))
        state = self.__getstate__()
        state["data"] = self.data.copy()
        state["grad"] = self.grad.copy()
        new.__setstate__(state)
        return new

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = {}
        for k, v in self.__getstate__().items():
            if k in ("data", "grad"):
                # A copy made earlier in this deepcopy (an optimizer listing fp.data before
                # fp) is the copy's buffer, so both stay the same object.
                earlier = memo.get(id(v))
                state[k] = earlier if earlier is not None else v.copy()
            else:
                state[k] = copy.deepcopy(v, memo)
        new.__setstate__(state)
        # Later references to the buffers or views, within this deepcopy, get the copy's.
        keep = memo.setdefault(id(memo), [])
        for old, cpy in ((self.data, new.data), (self.grad, new.grad),
                         *zip(self.params.values(), new.params.values()),
                         *zip(self.grads.values(), new.grads.values())):
            if id(old) not in memo:
                memo[id(old)] = cpy
                keep.append(old)  # (as copy.deepcopy does: the id must stay in use)
        return new

    # ------------------------------------------------------------ mapping-like access
    def __len__(self):
        return len(self._layout)

    def __iter__(self):
        return iter(self._layout)

    def __contains__(self, name):
        return name in self._layout

    def __getitem__(self, name):
        return self.params[name]

    def __repr__(self):
        inner = ", ".join(f"{k}: {s}" for k, s in self.shapes.items())
        dtype = "" if self.dtype == _F32 else f", dtype={self.dtype}"
        return f"FlatParams({{{inner}}}, size={self.size}{dtype})"


class _Views(Mapping):
    """A FlatParams' named views: a read-only mapping of writable arrays."""

    __slots__ = ("_what", "_views")

    def __init__(self, what, views):
        self._what = what
        self._views = views

    def __getitem__(self, name):
        return self._views[name]

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __setitem__(self, name, value):
        raise TypeError(f"FlatParams.{self._what}[{name!r}] cannot be rebound (the view is "
                        f"where the optimizer reads and writes): write into it, "
                        f"fp.{self._what}[{name!r}][...] = value, or pass "
                        f"out=fp.{self._what}[{name!r}] to a NumPy function")

    def __delitem__(self, name):
        raise TypeError(f"FlatParams.{self._what} is a fixed layout: {name!r} cannot be deleted")

    def __reduce__(self):
        # pickled alone, it is a plain dict of independent arrays (as NumPy pickles views)
        return dict, (dict(self._views),)

    def __repr__(self):
        return repr(self._views)


def _buffer(key, a, size):
    """``a`` as the FlatParams buffer ``key``: 1-D, ``size`` long, float32/float64, writable,
    C-contiguous and aligned (copied when it is not, e.g. a read-only out-of-band pickle buffer)."""
    if not isinstance(a, np.ndarray) or a.dtype not in FLOATS or a.shape != (size,):
        got = (f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray)
               else type(a).__name__)
        raise ValueError(f"not a FlatParams state: {key} must be a float32 or float64 array of "
                         f"shape ({size},), got {got}")
    flags = a.flags
    if type(a) is not np.ndarray or not (flags.writeable and flags.c_contiguous and flags.aligned):
        a = np.array(a, dtype=a.dtype, order="C", copy=True, subok=False)
    return a
