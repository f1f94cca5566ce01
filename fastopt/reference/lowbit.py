"""NumPy twins of :mod:`fastopt.kernels.lowbit`: optimizer steps with bfloat16, int8 or float8 state.

Same names, keyword-only signatures, checks and in-place semantics as the compiled kernels.
Each step is written from the formulas: widen the state to float32
(:func:`bf16_to_float32`, :func:`dequantize_blockwise`, :func:`dequantize_float8`), run the float32 reference update of
:mod:`fastopt.reference` (same operations, same order), update the parameter from the
unrounded new state, narrow it (:func:`float32_to_bf16` with ``rounding="stochastic"``,
:func:`quantize_blockwise`, which finds codes with a sorted search over the thresholds, not
the kernels' bucket table; :func:`quantize_float8`, the nearest code by a sorted search over
the code values, not the kernels' bit rule).  The formats are specified in :mod:`fastopt.kernels._formats`.
"""

from .. import reference as _reference
from ..kernels import _check_lowbit as _c
from ..kernels._make import VARIANTS, function_name, make
from ..kernels._formats import (QBLOCK, QuantMap, absmax_size, bf16_to_float32,
                                dequantize_blockwise, dequantize_float8, dynamic_map,
                                float32_to_bf16, quantize_blockwise, quantize_float8,
                                signed_map, unsigned_map, zeros_bf16, zeros_float8, zeros_int8)
from ..kernels.lowbit import state_bytes
from ..specs import KERNELS

__all__ = ["QBLOCK", "QuantMap", "dynamic_map", "signed_map", "unsigned_map", "absmax_size",
           "zeros_bf16", "zeros_int8", "bf16_to_float32", "float32_to_bf16",
           "quantize_blockwise", "dequantize_blockwise", "state_bytes", "zeros_float8",
           "quantize_float8", "dequantize_float8"]


def _run(kernel, variant, param, grad, states, values, step, extra):
    """A low-precision twin's runner (see :mod:`fastopt.kernels._make`): the kernel's checks,
    then the float32 twin of :mod:`fastopt.reference` on the widened state, then the new
    state narrowed (each buffer rounded with its half of the hash, or quantized with its map)."""
    step, hyper, arrays, extra = _c.step_args(kernel, variant, param, grad, states, values,
                                              step, extra)
    if variant == "bf16":
        wide = [bf16_to_float32(a) for a in arrays]
    elif variant == "f8":
        wide = [dequantize_float8(arrays[2 * i], arrays[2 * i + 1], not b.nonnegative)
                for i, b in enumerate(kernel.state)]
    else:
        wide = [dequantize_blockwise(arrays[2 * i], arrays[2 * i + 1], m)
                for i, m in enumerate(extra)]
    kwargs = dict(zip(kernel.hyper_names, hyper))
    if kernel.step:
        kwargs["step"] = step
    getattr(_reference, f"{kernel.name}_step")(param, grad, *wide, **kwargs)
    for i, (b, w) in enumerate(zip(kernel.state, wide)):
        if variant == "bf16":
            seed, index_offset = extra
            arrays[i][...] = float32_to_bf16(w, rounding="stochastic", seed=seed, step=step,
                                             buffer=b.half, offset=index_offset)
        elif variant == "f8":
            quantize_float8(w, not b.nonnegative, arrays[2 * i], arrays[2 * i + 1])
        else:
            quantize_blockwise(w, extra[i], arrays[2 * i], arrays[2 * i + 1])


# <name>_step_bf16, _int8, _f8: for each row of the kernel table with low-precision state
__all__ = [function_name(k, v) for k in KERNELS if k.lowbit for v in VARIANTS[1:]] + __all__
for _k in KERNELS:
    if _k.lowbit:
        for _v in VARIANTS[1:]:
            globals()[function_name(_k, _v)] = make(_k, _v, _run, globals())
del _k, _v
