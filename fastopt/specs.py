"""The one table of optimizer kernels: ``setup.py`` (Tempita), the registry and the tests read it.

Plain Python with no imports from fastopt (as :mod:`fastopt.runtime.levels`): ``setup.py``
loads this file by path before the package is built, and renders from :data:`KERNELS`

* ``src/kernels/_hyper.pxd.tp``: per kernel and dtype the hyperparameter struct the update
  loops read (``<Name>Hyper_f32``, ``_f64``) and its fill function (``_<name>_hyper_<s>``),
  which computes :attr:`Kernel.consts` from the hyperparameters in double and rounds each once
  to the buffers' dtype;
* ``src/kernels/_optim.pyx.tp``: per kernel its parallel task, its several-groups driver and
  its entry points ``<name>_step`` (one flat array) and ``<name>_multi`` (a plan).

:mod:`fastopt.optim.registry` takes ``MULTI_ARGS`` (the order of one group's
hyperparameters) and each optimizer's state buffers from here.

A kernel is described by

``hyper``
    Its hyperparameters in the order the compiled calls take them: name, C type of the
    entry point's argument (``double`` or ``bint``), the rule a value must meet (checked by
    ``fastopt.kernels._check``; the strings document it: ``">=0"``, ``">0"``, ``"[0,1)"``,
    ``"[0,1]"``, ``"bool"``), and its default in the Python wrappers (None: required).
``step``
    Whether the per-step constants depend on the step count (Adam's bias corrections).
``consts``
    The fields of the hyperparameter struct, in order: name, ``"real"`` (the buffers'
    dtype) or ``"bint"``, and the C expression (over the hyperparameters, ``step`` and
    ``gscale``, evaluated in double) it holds.  Changing an expression changes result bits.
    A ``"bint"`` constant is a *mode flag*: the update rule branches on it, and every loop
    over elements is compiled once per combination of the flags (:attr:`Kernel.modes`: bit
    ``i`` of the kernel's mode is its ``i``-th flag; ``fo_hyper.h`` names the bits
    ``FO_<NAME>_<FLAG>`` and computes a struct's mode), so no flag is tested per element.
``state``
    The state buffers after ``param, grad``: name, whether it is never negative (int8 state
    quantizes it with the unsigned map, else the signed one), and which half of the bfloat16
    rounding hash rounds it (0: the high 16 bits, 1: the low 16 bits).
``lowbit``
    Whether the kernel also runs with bfloat16 and int8 state: ``src/kernels/_lowbit.pyx.tp``
    then instantiates ``fo_lowbit.h``'s generic passes for it (one- or two-buffer) and renders
    its entry points ``<name>_bf16``, ``<name>_int8`` and ``<name>_{bf16,int8}_multi``.
``optional``
    The condition (a struct field) without which the state buffers are not read or written
    (SGD without momentum), or None.  It is a mode flag; the low-precision passes
    are instantiated only for the modes where it holds.

The update rule itself is C, written once in ``src/kernels/fo_rules.h`` (for float, double
and the vectors of ``fo_simd.h``) and read by the dense loops of ``_optim`` and the passes of
``fo_lowbit.h``; its NumPy twin is in ``fastopt/reference``.  The C structs the rules read
(``<Struct>_f32``, ``<Struct>_f64`` and the broadcast ``<Struct>_vec``) are rendered from this
table into ``src/kernels/fo_hyper.h``.
"""

from typing import NamedTuple


class Hyper(NamedTuple):
    name: str
    ctype: str            # "double" or "bint": the entry points' argument type
    rule: str             # ">=0", ">0", "[0,1)", "[0,1]", "bool"
    default: object       # the wrappers' default (None: required, as lr)


class Const(NamedTuple):
    name: str             # the struct field
    kind: str             # "real" (the buffers' dtype) or "bint"
    expr: str             # C expression in double over hyperparameters, step and gscale


class Buffer(NamedTuple):
    name: str
    nonnegative: bool     # int8: the unsigned map (else the signed one)
    half: int             # bfloat16 rounding hash: 0 its high 16 bits, 1 its low 16 bits


class Kernel(NamedTuple):
    name: str             # sgd -> sgd_step, sgd_multi, SgdHyper_f32, _sgd_hyper_f32
    struct: str           # the hyperparameter struct's name (without the dtype suffix)
    hyper: tuple
    step: bool
    consts: tuple
    state: tuple
    optional: str | None = None
    lowbit: bool = False  # also bfloat16 and int8 state (fo_lowbit.h's generic passes)

    @property
    def hyper_names(self):
        return tuple(h.name for h in self.hyper)

    @property
    def state_names(self):
        return tuple(b.name for b in self.state)

    @property
    def modes(self):
        """The mode flags (the ``"bint"`` constants), bit ``i`` of the mode the ``i``-th."""
        return tuple(c.name for c in self.consts if c.kind == "bint")


_WD = Hyper("weight_decay", "double", ">=0", 0.0)

KERNELS = (
    Kernel(
        "sgd", "SgdHyper",
        hyper=(Hyper("lr", "double", ">=0", None),
               Hyper("momentum", "double", "[0,1)", 0.0),
               Hyper("dampening", "double", "[0,1]", 0.0),
               Hyper("nesterov", "bint", "bool", False),
               _WD),
        step=False,
        consts=(Const("gscale", "real", "gscale"),
                Const("lr", "real", "lr"),
                Const("momentum", "real", "momentum"),
                Const("one_minus_damp", "real", "1.0 - dampening"),
                Const("wd", "real", "weight_decay"),
                # branches are decided on the double values (as the reference does)
                Const("has_wd", "bint", "weight_decay != 0.0"),
                Const("has_mom", "bint", "momentum != 0.0"),
                Const("nesterov", "bint", "nesterov")),
        state=(Buffer("momentum_buf", False, 0),),
        optional="has_mom",
        lowbit=True),
    Kernel(
        "rmsprop", "RmspropHyper",
        hyper=(Hyper("lr", "double", ">=0", None),
               Hyper("alpha", "double", "[0,1)", 0.9),
               Hyper("eps", "double", ">0", 1e-8),
               Hyper("eps_inside_sqrt", "bint", "bool", True),
               _WD),
        step=False,
        consts=(Const("gscale", "real", "gscale"),
                Const("lr", "real", "lr"),
                Const("alpha", "real", "alpha"),
                Const("one_minus_alpha", "real", "1.0 - alpha"),
                Const("eps", "real", "eps"),
                Const("wd", "real", "weight_decay"),
                Const("has_wd", "bint", "weight_decay != 0.0"),
                Const("eps_inside", "bint", "eps_inside_sqrt")),
        state=(Buffer("square_avg", True, 1),),
        lowbit=True),
    Kernel(
        "adam", "AdamHyper",
        hyper=(Hyper("lr", "double", ">=0", None),
               Hyper("beta1", "double", "[0,1)", 0.9),
               Hyper("beta2", "double", "[0,1)", 0.999),
               Hyper("eps", "double", ">0", 1e-8),
               _WD,
               Hyper("decoupled_weight_decay", "bint", "bool", False)),
        step=True,
        consts=(Const("gscale", "real", "gscale"),
                # bias corrections: c1 = lr / (1 - beta1^t), c2 = 1 / sqrt(1 - beta2^t)
                Const("c1", "real", "lr / (1.0 - beta1 ** step)"),
                Const("c2", "real", "1.0 / sqrt(1.0 - beta2 ** step)"),
                Const("beta1", "real", "beta1"),
                Const("one_minus_beta1", "real", "1.0 - beta1"),
                Const("beta2", "real", "beta2"),
                Const("one_minus_beta2", "real", "1.0 - beta2"),
                Const("eps", "real", "eps"),
                Const("wd", "real", "weight_decay"),
                Const("decay", "real", "1.0 - lr * weight_decay"),
                Const("has_wd", "bint", "weight_decay != 0.0"),
                Const("decoupled", "bint", "decoupled_weight_decay")),
        state=(Buffer("exp_avg", False, 0), Buffer("exp_avg_sq", True, 1)),
        lowbit=True),
)

BY_NAME = {k.name: k for k in KERNELS}

#: The dtypes every dense kernel is instantiated for: suffix, C type, square root.
DTYPES = (("f32", "float", "sqrtf"), ("f64", "double", "sqrt"))
