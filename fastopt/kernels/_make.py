"""The step functions of a kernel, made from its row of the kernel table (:mod:`fastopt.specs`).

Each kernel of :data:`fastopt.specs.KERNELS` has, in :mod:`fastopt.kernels`,
:mod:`fastopt.kernels.lowbit` and :mod:`fastopt.reference.lowbit`, step functions whose
signatures, checks, docstrings and compiled calls all follow from its row:

``<name>_step(param, grad, *state, *, [step,] <hyperparameters>)``
    float32 or float64 state like ``param`` (variant ``"step"``);
``<name>_step_bf16(param, grad, *state, *, step, <hyperparameters>, seed=0, index_offset=0)``
    bfloat16 state (``uint16`` bits; ``step`` feeds the rounding hash);
``<name>_step_int8(param, grad, s, s_absmax, ..., *, [step,] <hyperparameters>, s_map=None, ...)``
    block-wise int8 state;
``<name>_step_f8(param, grad, s, s_absmax, ..., *, [step,] <hyperparameters>)``
    block-wise float8 state (e3m4 / e4m4 codes by the buffer's sign).

:func:`make` writes such a function with real keyword parameters and defaults (``help()``,
``inspect.signature`` and type checkers see them; a call binds its arguments as Python
does, at Python's speed) and a did-you-mean ``TypeError`` for an unknown keyword; its body
hands the arguments, grouped, to a *runner* (the compiled call or the NumPy twin), which
checks them and runs the step.  The function lives in the module whose namespace it is
made in (``__module__``, ``__globals__``: doctest and Sphinx find it there).
"""

import inspect

import numpy as np

from ..specs import Kernel
from ._check import optional_names
from ._formats import QuantMap
from ._keywords import unexpected_keyword

__all__ = ["VARIANTS", "function_name", "make", "parameters", "docstring"]

#: The step functions of a kernel: dense state, bfloat16 state, int8 state, float8 state.
VARIANTS = ("step", "bf16", "int8", "f8")

#: The variants whose state is block-wise codes plus absmax (int8, float8).
BLOCKWISE = ("int8", "f8")

_P = inspect.Parameter
_RULE_TEXT = {">=0": "float >= 0", ">0": "float > 0", "[0,1)": "float in [0, 1)",
              "[0,1]": "float in [0, 1]", "bool": "bool"}
# what a rule also asks of a value when the buffers are float32 (fastopt.kernels._check)
_F32_NOTE = {">0": "Not 0 in float32 (for float32 buffers).",
             "[0,1)": "Below 1 in float32 too (for float32 buffers)."}


def function_name(kernel: Kernel, variant: str) -> str:
    """``sgd_step``, ``sgd_step_bf16``, ``sgd_step_int8``, ``sgd_step_f8``."""
    return f"{kernel.name}_step" if variant == "step" else f"{kernel.name}_step_{variant}"


def _takes_step(kernel, variant):
    return kernel.step or variant == "bf16"


def _required(kernel, variant):
    """Hyperparameters without a default in ``variant``: those the table leaves required, and,
    with low-precision state, those the state depends on (SGD's momentum)."""
    names = {h.name for h in kernel.hyper if h.default is None}
    if variant != "step":
        names.update(optional_names(kernel))
    return names


def parameters(kernel: Kernel, variant: str) -> list[inspect.Parameter]:
    """The parameters of ``kernel``'s step function ``variant``, in order."""
    state = np.ndarray | None if (variant == "step" and kernel.optional) else np.ndarray
    pos = ["param", "grad"]
    if variant in BLOCKWISE:
        pos += [n for b in kernel.state for n in (b.name, b.name + "_absmax")]
    else:
        pos += list(kernel.state_names)
    params = [_P(n, _P.POSITIONAL_OR_KEYWORD,
                 annotation=state if n in kernel.state_names else np.ndarray) for n in pos]
    if _takes_step(kernel, variant):
        params.append(_P("step", _P.KEYWORD_ONLY, annotation=int))
    required = _required(kernel, variant)
    for h in kernel.hyper:
        params.append(_P(h.name, _P.KEYWORD_ONLY,
                         default=_P.empty if h.name in required else h.default,
                         annotation=bool if h.ctype == "bint" else float))
    if variant == "bf16":
        params += [_P("seed", _P.KEYWORD_ONLY, default=0, annotation=int),
                   _P("index_offset", _P.KEYWORD_ONLY, default=0, annotation=int)]
    elif variant == "int8":
        params += [_P(f"{b.name}_map", _P.KEYWORD_ONLY, default=None,
                      annotation=QuantMap | None) for b in kernel.state]
    return params


def _param_doc(kernel, variant):
    """The numpydoc Parameters section of ``kernel``'s step function ``variant``."""
    lines = ["Parameters", "----------"]
    if variant == "step":
        lines += ["param : ndarray of float32 or float64, updated in place",
                  "grad : ndarray like param, read only"]
        for b in kernel.state:
            if kernel.optional:
                when = " and ".join(f"{n} == 0" for n in optional_names(kernel))
                lines += [f"{b.name} : ndarray like param, or None, updated in place",
                          f"    Zeros at the start. May be None when {when} (it is not used)."]
            else:
                lines.append(f"{b.name} : ndarray like param, updated in place (zeros at the start)")
    else:
        lines += ["param : ndarray of float32, updated in place",
                  "grad : ndarray of float32 like param, read only"]
        for b in kernel.state:
            if variant == "bf16":
                lines += [f"{b.name} : ndarray of uint16 (bfloat16 bits) like param, updated in place",
                          "    Zeros at the start (:func:`zeros_bf16`); an ``ml_dtypes.bfloat16`` "
                          "array is updated through a uint16 view."]
            else:
                code = ("" if variant == "int8" else
                        ", e4m4" if b.nonnegative else ", e3m4")
                zeros = "zeros_int8" if variant == "int8" else "zeros_float8"
                lines += [f"{b.name} : ndarray of uint8 (codes{code}) like param, updated in place",
                          f"{b.name}_absmax : ndarray of float32, shape (absmax_size(param.size),), "
                          "updated in place",
                          f"    Zeros at the start: :func:`{zeros}`."]
    if _takes_step(kernel, variant):
        what = ("the step count: the rounding hash's, and the per-step constants'"
                if variant == "bf16" and kernel.step else
                "the caller's step count; it only feeds the rounding hash"
                if variant == "bf16" else "the step count, from 1")
        lines += ["step : int, 1 <= step <= 2**63 - 1", f"    {what.capitalize()}."]
    required = _required(kernel, variant)
    for h in kernel.hyper:
        default = "" if h.name in required else f", default {h.default!r}"
        lines.append(f"{h.name} : {_RULE_TEXT[h.rule]}{default}")
        notes = [h.doc] if h.doc else []
        if variant == "step" and h.rule in _F32_NOTE:
            notes.append(_F32_NOTE[h.rule])
        if variant != "step" and h.name in optional_names(kernel):
            notes.append("Must be > 0: without it there is no state.")
        if notes:
            lines.append("    " + " ".join(notes))
    if variant == "bf16":
        lines += ["seed : int in [0, 2**64), default 0",
                  "    The stream of rounding bits; the same seed, step and index give the same "
                  "bits.",
                  "index_offset : int >= 0, default 0",
                  "    Global index of ``param``'s first element in the hash (distinct offsets for "
                  "the arrays of one model keep their rounding bits independent)."]
    elif variant == "int8":
        for b in kernel.state:
            m = "unsigned_map" if b.nonnegative else "signed_map"
            lines += [f"{b.name}_map : QuantMap or None, default None",
                      f"    The code values of {b.name}; None: :func:`{m}`."]
    return "\n".join(lines)


def docstring(kernel: Kernel, variant: str) -> str:
    """The numpydoc docstring of ``kernel``'s step function ``variant``: the row's ``doc``
    (the dense one; the low-precision ones refer to it), the generated Parameters, then
    the ``doc``'s Examples, if any."""
    text = inspect.cleandoc(kernel.doc) if kernel.doc else f"One {kernel.name} step, in place."
    body, sep, examples = text.partition("\nExamples\n")
    dense = f":func:`fastopt.kernels.{kernel.name}_step`"
    if variant == "bf16":
        body = (f"One {kernel.name} step with bfloat16 state, in place.\n\n"
                f"The update of {dense} in float32 on the state widened from bfloat16; the "
                "parameter is updated from the **unrounded** new state, which is then stored "
                "by stochastic rounding (a counter-based hash of ``(seed, step, "
                "index_offset + i, buffer)``: the same bits for any thread count).")
        sep = ""
    elif variant == "int8":
        body = (f"One {kernel.name} step with block-wise int8 state, in place.\n\n"
                f"The update of {dense} in float32 on the state dequantized (code value times "
                "its block's absmax); the parameter is updated from the **unrounded** new "
                "state, which is then quantized per block of 256 elements (absmax of the new "
                "values, nearest code of the buffer's map).")
        sep = ""
    elif variant == "f8":
        body = (f"One {kernel.name} step with block-wise float8 state, in place.\n\n"
                f"The update of {dense} in float32 on the state decoded (a minifloat code's "
                "unit value times its block's absmax / 1.9375); the parameter is updated from "
                "the **unrounded** new state, which is then encoded per block of 256 elements "
                "(absmax of the new values, nearest e3m4 code for signed state, e4m4 for "
                "non-negative state; :mod:`fastopt.kernels._formats`).")
        sep = ""
    doc = body.rstrip() + "\n\n" + _param_doc(kernel, variant)
    if sep:
        doc += "\n\nExamples\n" + examples
    return doc + "\n"


def make(kernel: Kernel, variant: str, runner, namespace: dict):
    """The step function ``variant`` of ``kernel``, made in the module of globals ``namespace``.

    A call checks its keywords (an unknown one raises TypeError with the closest name),
    then returns ``runner(kernel, variant, param, grad, states, values, step, extra)``:
    ``states`` the state arrays in signature order, ``values`` the hyperparameters in the
    row's order, ``step`` the step count (None when not taken), ``extra`` ``(seed,
    index_offset)`` (bf16), the maps (int8) or ().
    """
    name = function_name(kernel, variant)
    params = parameters(kernel, variant)
    names = [p.name for p in params]
    pos = [p.name for p in params if p.kind is _P.POSITIONAL_OR_KEYWORD]
    kw = [f"{p.name}={p.name}_" if p.default is not _P.empty else p.name
          for p in params if p.kind is _P.KEYWORD_ONLY]
    if variant == "bf16":
        extra = "(seed, index_offset)"
    elif variant == "int8":
        extra = "(" + "".join(f"{b.name}_map, " for b in kernel.state) + ")"
    else:
        extra = "()"
    source = (
        f"def _factory(_kernel, _run, _refuse, {', '.join(p.name + '_' for p in params if p.default is not _P.empty)}):\n"
        f"    def {name}({', '.join(pos)}, *, {', '.join(kw)}, **_unknown):\n"
        f"        if _unknown:\n"
        f"            _refuse(_unknown)\n"
        f"        return _run(_kernel, {variant!r}, param, grad, ({''.join(n + ', ' for n in pos[2:])}), "
        f"({''.join(h + ', ' for h in kernel.hyper_names)}), "
        f"{'step' if _takes_step(kernel, variant) else 'None'}, {extra})\n"
        f"    return {name}\n")
    local = {}
    exec(source, namespace, local)   # (the function's globals: its module's namespace)

    def refuse(unknown):
        raise TypeError(unexpected_keyword(f"{name}()", next(iter(unknown)), names, name))

    fn = local["_factory"](kernel, runner, refuse,
                           *[p.default for p in params if p.default is not _P.empty])
    fn.__module__ = namespace["__name__"]
    fn.__qualname__ = name
    fn.__signature__ = inspect.Signature(params, return_annotation=None)
    fn.__doc__ = docstring(kernel, variant)
    return fn
