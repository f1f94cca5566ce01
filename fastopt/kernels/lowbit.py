r"""Optimizer kernels with low-precision state: bfloat16 or block-wise int8 (compiled, fused).

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

Bytes per parameter of state: bfloat16 2 per buffer (Adam: 4); int8 1 + 4/256 per buffer
(Adam: 2.03125).  Start from :func:`zeros_bf16` / :func:`zeros_int8`.  The choice of format
for small arrays (bitsandbytes keeps arrays under 4,096 elements in float32) belongs to
the optimizer: these kernels take any size.

Every argument is checked before any buffer is touched (dtype, shape, layout, read-only
outputs, aliasing between any two arrays, the absmax size, hyperparameters as the float32
kernels check them, ``step``, ``seed`` and ``index_offset`` ranges); a rejected call raises
``TypeError``/``ValueError`` naming the argument and changes nothing.  The twins in
:mod:`fastopt.reference.lowbit` have the same names and signatures.
"""

import numpy as np

from . import _check
from . import _check_lowbit as _c
from ._formats import (QBLOCK, QuantMap, absmax_size, bf16_to_float32, dequantize_blockwise,
                       dynamic_map, float32_to_bf16, quantize_blockwise, signed_map,
                       unsigned_map, zeros_bf16, zeros_int8)
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads

__all__ = ["adam_step_bf16", "adam_step_int8", "rmsprop_step_bf16", "rmsprop_step_int8",
           "sgd_step_bf16", "sgd_step_int8",
           "QBLOCK", "QuantMap", "dynamic_map", "signed_map", "unsigned_map", "absmax_size",
           "zeros_bf16", "zeros_int8", "bf16_to_float32", "float32_to_bf16",
           "quantize_blockwise", "dequantize_blockwise", "state_bytes"]


def _flat(a):
    return a if a.ndim == 1 else a.reshape(-1)


def state_bytes(n, state_dtype, nbuffers):
    """Bytes of optimizer state for ``n`` parameters and ``nbuffers`` state buffers:
    float32 4, bfloat16 2, int8 1 byte per element and buffer, plus 4 bytes of absmax per
    block of 256 (int8)."""
    per = {"float32": 4 * n, "bfloat16": 2 * n, "int8": n + 4 * absmax_size(n)}
    if state_dtype not in per:
        raise ValueError(f"state_dtype must be one of {list(per)}, got {state_dtype!r}")
    return nbuffers * per[state_dtype]


# ------------------------------------------------------------------ Adam / AdamW


def adam_step_bf16(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                   exp_avg_sq: np.ndarray, *, step: int, lr: float, beta1: float = 0.9,
                   beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   decoupled_weight_decay: bool = False, seed: int = 0,
                   index_offset: int = 0) -> None:
    r"""One Adam (or AdamW) step with bfloat16 moments, in place; ``step`` counts from 1.

    .. math::

        \hat m &= \mathrm{f32}(m), \ \hat v = \mathrm{f32}(v) \\
        m' &= \beta_1 \hat m + (1-\beta_1)\,g, \quad v' = \beta_2 \hat v + (1-\beta_2)\,g^2 \\
        \theta &\leftarrow \theta - \frac{m'}{\sqrt{v'}\,c_2 + \epsilon}\,c_1 \\
        m &\leftarrow \mathrm{SR}_{16}(m';\ \text{seed}, t, i, 0), \quad
        v \leftarrow \mathrm{SR}_{16}(v';\ \text{seed}, t, i, 1)

    with weight decay, ``c1``, ``c2`` as :func:`fastopt.kernels.adam_step` (PyTorch's
    conventions), and :math:`\mathrm{SR}_{16}` stochastic rounding to bfloat16 of element
    ``i = index_offset + j``.

    Parameters
    ----------
    param : ndarray of float32, updated in place
    grad : ndarray of float32 like param, read only
    exp_avg, exp_avg_sq : ndarray of uint16 (bfloat16 bits) like param, updated in place
        (zeros at the start: :func:`zeros_bf16`)
    step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay
        As :func:`fastopt.kernels.adam_step`.
    seed : int in [0, 2**64)
        The stream of rounding bits; the same seed, step and index give the same bits.
    index_offset : int >= 0
        Global index of ``param``'s first element in the hash (distinct offsets for the
        arrays of one model keep their rounding bits independent).
    """
    step, lr, beta1, beta2, eps, weight_decay, decoupled = _c.adam(
        param, grad, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay)
    m = _c.bf16("exp_avg", exp_avg, param)
    v = _c.bf16("exp_avg_sq", exp_avg_sq, param)
    seed, index_offset = _c.seed_offset(seed, index_offset, param.size)
    _check.disjoint(param=param, grad=grad, exp_avg=m, exp_avg_sq=v)
    ext._lowbit.adam_bf16(_flat(param), _flat(grad), _flat(m), _flat(v), lr, beta1, beta2, eps,
                          weight_decay, decoupled, step, seed, index_offset, 1.0,
                          get_num_threads())


def adam_step_int8(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                   exp_avg_absmax: np.ndarray, exp_avg_sq: np.ndarray,
                   exp_avg_sq_absmax: np.ndarray, *, step: int, lr: float, beta1: float = 0.9,
                   beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   decoupled_weight_decay: bool = False, exp_avg_map: QuantMap | None = None,
                   exp_avg_sq_map: QuantMap | None = None) -> None:
    r"""One Adam (or AdamW) step with block-wise int8 moments, in place.

    .. math::

        \hat m_j &= \mathrm{map}_m[c^m_j]\, a^m_{b(j)}, \quad
        \hat v_j = \mathrm{map}_v[c^v_j]\, a^v_{b(j)} \\
        m' &= \beta_1 \hat m + (1-\beta_1)\,g, \quad v' = \beta_2 \hat v + (1-\beta_2)\,g^2 \\
        \theta &\leftarrow \theta - \frac{m'}{\sqrt{v'}\,c_2 + \epsilon}\,c_1 \\
        a^m_b &= \max_{j \in b} |m'_j|, \quad c^m_j = \operatorname{nearest}(m'_j / a^m_b)
        \quad\text{(and likewise for } v')

    over blocks b of 256 elements, with weight decay, ``c1``, ``c2`` as
    :func:`fastopt.kernels.adam_step`.

    Parameters
    ----------
    param : ndarray of float32, updated in place
    grad : ndarray of float32 like param, read only
    exp_avg, exp_avg_sq : ndarray of uint8 like param (codes), updated in place
    exp_avg_absmax, exp_avg_sq_absmax : ndarray of float32, shape (absmax_size(param.size),),
        updated in place.  Zeros at the start: :func:`zeros_int8`.
    step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay
        As :func:`fastopt.kernels.adam_step`.
    exp_avg_map, exp_avg_sq_map : QuantMap or None
        None: :func:`signed_map` for exp_avg, :func:`unsigned_map` for exp_avg_sq.
    """
    step, lr, beta1, beta2, eps, weight_decay, decoupled = _c.adam(
        param, grad, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay)
    _c.int8("exp_avg", exp_avg, exp_avg_absmax, param)
    _c.int8("exp_avg_sq", exp_avg_sq, exp_avg_sq_absmax, param)
    qm = _c.qmap("exp_avg_map", exp_avg_map, signed_map)
    qv = _c.qmap("exp_avg_sq_map", exp_avg_sq_map, unsigned_map)
    _check.disjoint(param=param, grad=grad, exp_avg=exp_avg, exp_avg_absmax=exp_avg_absmax,
                    exp_avg_sq=exp_avg_sq, exp_avg_sq_absmax=exp_avg_sq_absmax)
    ext._lowbit.adam_int8(_flat(param), _flat(grad), _flat(exp_avg), exp_avg_absmax,
                          _flat(exp_avg_sq), exp_avg_sq_absmax, qm.kernel_tables(),
                          qv.kernel_tables(), lr, beta1, beta2, eps, weight_decay, decoupled,
                          step, 1.0, get_num_threads())


# ------------------------------------------------------------------ RMSprop


def rmsprop_step_bf16(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, *,
                      step: int, lr: float, alpha: float = 0.9, eps: float = 1e-8,
                      eps_inside_sqrt: bool = True, weight_decay: float = 0.0, seed: int = 0,
                      index_offset: int = 0) -> None:
    r"""One RMSprop step with a bfloat16 square average, in place.

    .. math::

        s' = \alpha\,\mathrm{f32}(s) + (1-\alpha)\,g^2, \quad
        \theta \leftarrow \theta - \eta\,\frac{g}{\sqrt{s' + \epsilon}}
        \ \text{or}\ \theta - \eta\,\frac{g}{\sqrt{s'} + \epsilon}, \quad
        s \leftarrow \mathrm{SR}_{16}(s';\ \text{seed}, t, i, 1)

    as :func:`fastopt.kernels.rmsprop_step` (``g`` with weight decay; ε inside the square
    root by default, outside as PyTorch with ``eps_inside_sqrt=False``).  ``step`` (an int
    >= 1, the caller's step count) only feeds the rounding hash.  Other parameters as
    :func:`adam_step_bf16`.
    """
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _c.rmsprop(
        param, grad, lr, alpha, eps, eps_inside_sqrt, weight_decay)
    s = _c.bf16("square_avg", square_avg, param)
    step = _c.step(step)
    seed, index_offset = _c.seed_offset(seed, index_offset, param.size)
    _check.disjoint(param=param, grad=grad, square_avg=s)
    ext._lowbit.rmsprop_bf16(_flat(param), _flat(grad), _flat(s), lr, alpha, eps,
                             eps_inside_sqrt, weight_decay, step, seed, index_offset, 1.0,
                             get_num_threads())


def rmsprop_step_int8(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
                      square_avg_absmax: np.ndarray, *, lr: float, alpha: float = 0.9,
                      eps: float = 1e-8, eps_inside_sqrt: bool = True, weight_decay: float = 0.0,
                      square_avg_map: QuantMap | None = None) -> None:
    r"""One RMSprop step with a block-wise int8 square average, in place.

    The update of :func:`rmsprop_step_bf16` with ``s`` dequantized, the parameter updated
    from the unrounded ``s'``, then ``s'`` quantized per block of 256 (absmax of the new
    values, nearest code of ``square_avg_map``; None: :func:`unsigned_map`).
    """
    lr, alpha, eps, eps_inside_sqrt, weight_decay = _c.rmsprop(
        param, grad, lr, alpha, eps, eps_inside_sqrt, weight_decay)
    _c.int8("square_avg", square_avg, square_avg_absmax, param)
    q = _c.qmap("square_avg_map", square_avg_map, unsigned_map)
    _check.disjoint(param=param, grad=grad, square_avg=square_avg,
                    square_avg_absmax=square_avg_absmax)
    ext._lowbit.rmsprop_int8(_flat(param), _flat(grad), _flat(square_avg), square_avg_absmax,
                             q.kernel_tables(), lr, alpha, eps, eps_inside_sqrt, weight_decay,
                             1.0, get_num_threads())


# ------------------------------------------------------------------ SGD with momentum


def sgd_step_bf16(param: np.ndarray, grad: np.ndarray, momentum_buf: np.ndarray, *, step: int,
                  lr: float, momentum: float, dampening: float = 0.0, nesterov: bool = False,
                  weight_decay: float = 0.0, seed: int = 0, index_offset: int = 0) -> None:
    r"""One SGD-with-momentum step with a bfloat16 momentum buffer, in place.

    .. math::

        b' = \mu\,\mathrm{f32}(b) + (1-\tau)\,g, \quad
        \theta \leftarrow \theta - \eta\,(g + \mu b') \ \text{(nesterov)}
        \ \text{or}\ \theta - \eta\,b', \quad b \leftarrow \mathrm{SR}_{16}(b';\ \text{seed}, t, i, 0)

    as :func:`fastopt.kernels.sgd_step` (``dampening=momentum`` is the Momentum optimizer);
    ``momentum`` must be > 0 (without momentum there is no state).  ``step`` only feeds
    the rounding hash.  Other parameters as :func:`adam_step_bf16`.
    """
    lr, momentum, dampening, nesterov, weight_decay = _c.sgd(
        param, grad, lr, momentum, dampening, nesterov, weight_decay)
    b = _c.bf16("momentum_buf", momentum_buf, param)
    step = _c.step(step)
    seed, index_offset = _c.seed_offset(seed, index_offset, param.size)
    _check.disjoint(param=param, grad=grad, momentum_buf=b)
    ext._lowbit.sgd_bf16(_flat(param), _flat(grad), _flat(b), lr, momentum, dampening, nesterov,
                         weight_decay, step, seed, index_offset, 1.0, get_num_threads())


def sgd_step_int8(param: np.ndarray, grad: np.ndarray, momentum_buf: np.ndarray,
                  momentum_buf_absmax: np.ndarray, *, lr: float, momentum: float,
                  dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                  momentum_buf_map: QuantMap | None = None) -> None:
    r"""One SGD-with-momentum step with a block-wise int8 momentum buffer, in place.

    The update of :func:`sgd_step_bf16` with ``b`` dequantized, the parameter updated from
    the unrounded ``b'``, then ``b'`` quantized per block of 256 (``momentum_buf_map``;
    None: :func:`signed_map`).
    """
    lr, momentum, dampening, nesterov, weight_decay = _c.sgd(
        param, grad, lr, momentum, dampening, nesterov, weight_decay)
    _c.int8("momentum_buf", momentum_buf, momentum_buf_absmax, param)
    q = _c.qmap("momentum_buf_map", momentum_buf_map, signed_map)
    _check.disjoint(param=param, grad=grad, momentum_buf=momentum_buf,
                    momentum_buf_absmax=momentum_buf_absmax)
    ext._lowbit.sgd_int8(_flat(param), _flat(grad), _flat(momentum_buf), momentum_buf_absmax,
                         q.kernel_tables(), lr, momentum, dampening, nesterov, weight_decay, 1.0,
                         get_num_threads())
