"""FlatParams: a whole model's parameters in one contiguous float32 buffer."""

import operator
from collections.abc import Mapping

import numpy as np

__all__ = ["FlatParams"]


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


class FlatParams:
    """Named parameter arrays that are views into one contiguous float32 buffer.

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

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"W": (3, 2), "b": (2,)})
    >>> fp.data.shape, fp.params["W"].shape
    ((8,), (3, 2))
    >>> fp.params["b"][...] = 1.0
    >>> fp.data
    array([0., 0., 0., 0., 0., 0., 1., 1.], dtype=float32)
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        if not isinstance(shapes, Mapping):
            raise TypeError(f"shapes must be a dict of name -> shape tuple, "
                            f"got {type(shapes).__name__}")
        layout = {}
        offset = 0
        for name, shape in shapes.items():
            if not isinstance(name, str):
                raise TypeError(f"parameter names must be str, got {type(name).__name__} {name!r}")
            shape = _shape(name, shape)
            size = int(np.prod(shape, dtype=np.int64))
            layout[name] = (offset, shape)
            offset += size
        self._layout = layout
        self.data = np.zeros(offset, dtype=np.float32)
        self.grad = np.zeros(offset, dtype=np.float32)
        self.params = self._views(self.data)
        self.grads = self._views(self.grad)

    def _views(self, buf):
        return {name: buf[off:off + int(np.prod(shape, dtype=np.int64))].reshape(shape)
                for name, (off, shape) in self._layout.items()}

    @classmethod
    def from_arrays(cls, arrays):
        """A FlatParams holding a float32 copy of each array of ``arrays`` (a dict)."""
        if not isinstance(arrays, Mapping):
            raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
                raise TypeError(f"array {k!r} has dtype {v.dtype}, expected a real numeric dtype")
        fp = cls({k: v.shape for k, v in arrays.items()})
        for k, v in arrays.items():
            fp.params[k][...] = v
        return fp

    @property
    def shapes(self):
        """Name -> shape, in layout order."""
        return {name: shape for name, (_, shape) in self._layout.items()}

    def slice(self, name):
        """The ``slice`` of ``data`` / ``grad`` that holds parameter ``name``."""
        off, shape = self._layout[name]
        return slice(off, off + int(np.prod(shape, dtype=np.int64)))

    @property
    def size(self):
        """Total number of parameters."""
        return self.data.size

    def zero_grad(self):
        """Set every gradient to zero (in place)."""
        self.grad.fill(0.0)

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
        return f"FlatParams({{{inner}}}, size={self.size})"
