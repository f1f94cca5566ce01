"""Buffers placed so that a kernel's streams do not collide in the cache.

A fused optimizer step walks several arrays in lock step (Adam: param, grad, m, v).  Large
NumPy arrays all start at the same offset within a 4 KiB page (malloc hands out fresh
pages), so element ``i`` of every array maps to the same L1 cache set, and a load can wait
on an unrelated store to the same address modulo 4 KiB ("4K aliasing").  The buffers fastopt
allocates itself (optimizer state, a FlatParams' gradient) therefore start at staggered
offsets within the page: the values and layout are those of ``np.zeros``; only the address
differs.
"""

import math

import numpy as np

__all__ = ["staggered_zeros", "PAGE", "STAGGER"]

PAGE = 4096
#: The distance, within a page, between consecutive staggered buffers (a multiple of 64:
#: cache-line and AVX-512 aligned).
STAGGER = 1024 + 64
#: Below this many bytes a buffer fits in cache anyway: plain np.zeros.
_MIN_BYTES = 1 << 16


def staggered_zeros(shape, dtype, like=None, k=1):
    """C-contiguous zeros of ``shape`` and ``dtype`` whose address is ``k * STAGGER`` bytes past
    ``like``'s (an array) modulo 4 KiB, or past a page boundary without ``like``.

    The array is a view of a slightly larger allocation (one page more).
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _MIN_BYTES:
        return np.zeros(shape, dtype)
    base = like.ctypes.data if like is not None else 0
    raw = np.zeros(nbytes + PAGE, np.uint8)
    start = (base + k * STAGGER - raw.ctypes.data) % PAGE
    return raw[start:start + nbytes].view(dtype).reshape(shape)
