r"""Optimizer kernels with low-precision state: bfloat16, block-wise int8 or float8 (compiled, fused).

The parameters and gradients are C-contiguous float32 arrays (any shape, treated as
flat).  Each step widens the state to float32, computes the update exactly as the float32
kernel of :mod:`fastopt.kernels` does (same operations, same order, same rounding of the
hyperparameters), updates the parameter from the **unrounded** new state, and stores the
new state narrowed.  The formats (see :mod:`fastopt.kernels._formats` for the exact rules):

* ``*_bf16``: bfloat16 state stored as ``uint16`` arrays of the float32 bits' upper half
  (an ``ml_dtypes.bfloat16`` array is accepted too and updated through a ``uint16`` view;
  fastopt does not depend on ml_dtypes).  Stochastic rounding from a counter-based hash
  of ``(seed, step, index_offset + i, buffer)``: the same bits for any thread count, and a
  rerun reproduces them.  NaN and ±inf are stored as NaN and ±inf.
* ``*_int8``: block-wise dynamic quantization as bitsandbytes' 8-bit optimizers
  (Dettmers et al. 2021): ``uint8`` codes of param's shape and one float32 ``absmax`` per
  block of 256 elements (``absmax_size(param.size)`` values); a signed dynamic map for the
  first moment / momentum, an unsigned one for the second moment / square average
  (:func:`signed_map`, :func:`unsigned_map`, bit-identical to bitsandbytes'
  ``create_dynamic_map``).  The absmax is taken from the block's new state, each value
  takes the nearest code, in one pass per block kept in L1.  A block whose new state holds
  a NaN or an infinity stores absmax = NaN (it reads back as NaN).
* ``*_f8``: block-wise float8, the same blocks and absmax as int8 with table-free codes:
  e3m4 minifloats (sign, 3 exponent and 4 mantissa bits) for the first moment /
  momentum, e4m4 for the second moment / square average, the absmax mapped onto the
  largest code; decoded by a shift and a float16 conversion, encoded by rounding the
  float32 bits to nearest (ties to even).  NaN/inf poison a block as with int8.

Bytes per parameter of state: bfloat16 2 per buffer (Adam: 4); int8 1 + 4/256 per buffer
(Adam: 2.03125), float8 the same.  Start from :func:`zeros_bf16` / :func:`zeros_int8` /
:func:`zeros_float8`.  The choice of format
for small arrays (bitsandbytes keeps arrays under 4,096 elements in float32) belongs to
the optimizer: these kernels take any size.

Every argument is checked before any buffer is touched (dtype, shape, layout, read-only
outputs, aliasing between any two arrays, the absmax size, hyperparameters as the float32
kernels check them, ``step``, ``seed`` and ``index_offset`` ranges); a rejected call raises
``TypeError``/``ValueError`` naming the argument and changes nothing.  The twins in
:mod:`fastopt.reference.lowbit` have the same names and signatures.
"""

import numpy as np

from . import _check_lowbit as _c
from ._make import VARIANTS, function_name, make
from ._formats import (QBLOCK, QuantMap, absmax_size, bf16_to_float32, dequantize_blockwise,
                       dequantize_float8, dynamic_map, float32_to_bf16, quantize_blockwise,
                       quantize_float8, signed_map, unsigned_map, zeros_bf16, zeros_float8,
                       zeros_int8)
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads
from ..specs import KERNELS

__all__ = ["QBLOCK", "QuantMap", "dynamic_map", "signed_map", "unsigned_map", "absmax_size",
           "zeros_bf16", "zeros_int8", "bf16_to_float32", "float32_to_bf16",
           "quantize_blockwise", "dequantize_blockwise", "state_bytes", "zeros_float8",
           "quantize_float8", "dequantize_float8"]


def _flat(a):
    return a if a.ndim == 1 else a.reshape(-1)


def state_bytes(n, state_dtype, nbuffers):
    """Bytes of optimizer state for ``n`` parameters and ``nbuffers`` state buffers:
    float32 4, bfloat16 2, int8 and float8 1 byte per element and buffer, plus 4 bytes of
    absmax per block of 256 (int8, float8)."""
    per = {"float32": 4 * n, "bfloat16": 2 * n, "int8": n + 4 * absmax_size(n),
           "float8": n + 4 * absmax_size(n)}
    if state_dtype not in per:
        raise ValueError(f"state_dtype must be one of {list(per)}, got {state_dtype!r}")
    return nbuffers * per[state_dtype]


def _run(kernel, variant, param, grad, states, values, step, extra):
    """A low-precision step function's runner (see :mod:`fastopt.kernels._make`): the
    checks, then the compiled call of ``src/kernels/_lowbit.pyx.tp`` (gradient scale 1)."""
    step, hyper, arrays, extra = _c.step_args(kernel, variant, param, grad, states, values,
                                              step, extra)
    arrays = [_flat(a) for a in arrays]
    run = getattr(ext._lowbit, f"{kernel.name}_{variant}")
    if variant == "bf16":
        run(_flat(param), _flat(grad), *arrays, *hyper, step, *extra, 1.0, get_num_threads())
    else:   # int8: the maps' tables after the state; f8: none
        run(_flat(param), _flat(grad), *arrays, *[m.kernel_tables() for m in extra], *hyper,
            *(() if step is None else (step,)), 1.0, get_num_threads())


# <name>_step_bf16, _int8, _f8: for each row of the kernel table with low-precision state
__all__ = [function_name(k, v) for k in KERNELS if k.lowbit for v in VARIANTS[1:]] + __all__
for _k in KERNELS:
    if _k.lowbit:
        for _v in VARIANTS[1:]:
            globals()[function_name(_k, _v)] = make(_k, _v, _run, globals())
del _k, _v
