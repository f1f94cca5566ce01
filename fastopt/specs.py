"""The one table of optimizer kernels: ``setup.py`` (Tempita), the registry and the tests read it.

Plain Python with no imports from fastopt (as :mod:`fastopt.runtime.levels`): ``setup.py``
loads this file by path before the package is built, and renders from :data:`KERNELS`

* ``src/kernels/_hyper.pxd.tp``: per kernel and dtype the hyperparameter struct the update
  loops read (``<Name>Hyper_f32``, ``_f64``) and its fill function (``_<name>_hyper_<s>``),
  which computes :attr:`Kernel.consts` from the hyperparameters in double and rounds each once
  to the buffers' dtype;
* ``src/kernels/_optim.pyx.tp``: per kernel its parallel task, its several-groups driver and
  its entry points ``<name>_step`` (one flat array) and ``<name>_multi`` (a plan).

The Python side is derived from it too: the step functions of :mod:`fastopt.kernels`,
:mod:`fastopt.kernels.lowbit` and :mod:`fastopt.reference.lowbit` (signatures, checks,
docstrings: ``fastopt/kernels/_make.py``), the state formats' compiled calls
(:mod:`fastopt.optim.formats`), the optimizer classes' hyperparameters, checks and state
buffers (:class:`fastopt.Optimizer`), the registry's buffers and bytes, and the test grids.
Adding an optimizer: see the documentation's "Adding an optimizer" page.

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
    rounding hash rounds it (0: the high 16 bits, 1: the low 16 bits), and its value before
    the first step (``init``: 0 by default, or the name of a hyperparameter, as Adagrad's
    ``initial_accumulator_value``; the optimizers fill new state with it).
``lowbit``
    Whether the kernel also runs with bfloat16 and int8 state: ``src/kernels/_lowbit.pyx.tp``
    then instantiates ``fo_lowbit.h``'s generic passes for it (one- or two-buffer) and renders
    its entry points ``<name>_bf16``, ``<name>_int8`` and ``<name>_{bf16,int8}_multi``.
``optional``
    The condition (a struct field) without which the state buffers are not read or written
    (SGD without momentum), or None.  It is a mode flag; the low-precision passes are
    instantiated only for the modes where it holds.  Its expression is Python too
    (``"momentum != 0.0"``): the wrappers, the classes and the low-precision kernels
    evaluate it.
``doc``
    The step functions' docstring: summary, formula, notes and examples (the Parameters
    section is generated from ``hyper``, with each :class:`Hyper`'s ``doc`` note).

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
    doc: str = ""         # what the generated docstrings add to the rule (a sentence), if anything


class Const(NamedTuple):
    name: str             # the struct field
    kind: str             # "real" (the buffers' dtype) or "bint"
    expr: str             # C expression in double over hyperparameters, step and gscale


class Buffer(NamedTuple):
    name: str
    nonnegative: bool     # int8: the unsigned map (else the signed one)
    half: int             # bfloat16 rounding hash: 0 its high 16 bits, 1 its low 16 bits
    init: float | str = 0.0   # its value before the first step, or the hyperparameter giving it


class Kernel(NamedTuple):
    name: str             # sgd -> sgd_step, sgd_multi, SgdHyper_f32, _sgd_hyper_f32
    struct: str           # the hyperparameter struct's name (without the dtype suffix)
    hyper: tuple
    step: bool
    consts: tuple
    state: tuple
    optional: str | None = None
    lowbit: bool = False  # also bfloat16 and int8 state (fo_lowbit.h's generic passes)
    doc: str = ""         # the wrappers' docstring: summary, formula, notes (Parameters generated)

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



# The wrappers' docstrings (fastopt.kernels.<name>_step; the low-precision ones refer to them):
# summary, formula and notes.  Their Parameters section is generated from the row.

_SGD_DOC = r"""One SGD step (optionally with momentum, Nesterov, weight decay), in place.

.. math::

    g &= \nabla + \lambda\,\theta \\
    b &\leftarrow \mu\,b + (1-\tau)\,g \qquad\text{(if } \mu > 0) \\
    d &= g + \mu\,b \text{ (nesterov) },\quad b \text{ (momentum) },\quad g \text{ (else)} \\
    \theta &\leftarrow \theta - \eta\,d

With ``dampening=0`` this is ``torch.optim.SGD`` step for step (its first
step sets ``b = g``, which is what ``0·b + g`` gives from zeros). With
``dampening=momentum`` it is the seed's exponentially weighted momentum
:math:`v = \beta v + (1-\beta)\,dW,\ w \leftarrow w - \alpha v` (PyTorch
instead copies ``g`` into the buffer on its first step when dampening is
non-zero; fastopt, like the seed, starts from zeros).

Examples
--------
>>> import numpy as np, fastopt.kernels as K
>>> p = np.ones(3, np.float32); g = np.full(3, 0.5, np.float32)
>>> buf = np.zeros(3, np.float32)
>>> K.sgd_step(p, g, buf, lr=0.1, momentum=0.9)
>>> p
array([0.95, 0.95, 0.95], dtype=float32)
"""

_RMSPROP_DOC = r"""One RMSprop step, in place.

.. math::

    g &= \nabla + \lambda\,\theta \\
    s &\leftarrow \alpha\,s + (1-\alpha)\,g^2 \\
    \theta &\leftarrow \theta - \eta\,\frac{g}{\sqrt{s + \epsilon}}
          \quad\text{(seed, eps_inside_sqrt=True)} \quad\text{or}\quad
          \theta - \eta\,\frac{g}{\sqrt{s} + \epsilon} \quad\text{(PyTorch)}

The seed puts ε inside the square root; ``torch.optim.RMSprop`` adds it
outside (``eps_inside_sqrt=False``).  PyTorch's default ``alpha`` is
0.99; fastopt follows the seed's β ≈ 0.9.
"""

_ADAM_DOC = r"""One Adam (or AdamW) step, in place; ``step`` counts from 1.

.. math::

    \theta &\leftarrow (1 - \eta\lambda)\,\theta,\ g = \nabla
             \quad\text{(decoupled, AdamW)} \quad\text{else}\quad
             g = \nabla + \lambda\,\theta \quad\text{(L2, torch.optim.Adam)} \\
    m &\leftarrow \beta_1 m + (1-\beta_1)\,g \\
    v &\leftarrow \beta_2 v + (1-\beta_2)\,g^2 \\
    \theta &\leftarrow \theta - \eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

This is the seed's Adam, and ``torch.optim.Adam``/``AdamW`` step for step.
In the buffers' dtype the last line is computed in the order of Kingma & Ba's efficient
form, as PyTorch orders it,

.. math::

    \theta \leftarrow \theta - \frac{m}{\sqrt{v}\,c_2 + \epsilon}\,c_1, \quad
    c_1 = \frac{\eta}{1-\beta_1^t},\ c_2 = \frac{1}{\sqrt{1-\beta_2^t}}

(``c1``, ``c2`` computed in double and rounded once), so no intermediate
overflows for the moments Adam produces (forming :math:`m/(1-\beta_1^t)`
alone can) and subnormal moments keep their bits; the reference computes
the same operations.
"""

# RAdam's rho_inf, rho_t (of step t) and rectification, in double (Cython and Python alike)
_RADAM_RHO_INF = "(2.0 / (1.0 - beta2) - 1.0)"
_RADAM_RHO_T = f"({_RADAM_RHO_INF} - 2.0 * step * beta2 ** step / (1.0 - beta2 ** step))"
_RADAM_RECT = (f"sqrt(({_RADAM_RHO_T} - 4.0) * ({_RADAM_RHO_T} - 2.0) * {_RADAM_RHO_INF}"
               f" / (({_RADAM_RHO_INF} - 4.0) * ({_RADAM_RHO_INF} - 2.0) * {_RADAM_RHO_T}))")

# The rows' shared entries, written once: a row names them and adds its own.
_LR = Hyper("lr", "double", ">=0", None)
_WD = Hyper("weight_decay", "double", ">=0", 0.0, "The weight decay (see the formula).")
_GSCALE = Const("gscale", "real", "gscale")          # every struct's first field
_WD_CONST = Const("wd", "real", "weight_decay")
_HAS_WD = Const("has_wd", "bint", "weight_decay != 0.0")
_EPS_CONST = Const("eps", "real", "eps")
_DECAY = Const("decay", "real", "1.0 - lr * weight_decay")   # decoupled: theta *= decay

# The Adam family (Adam, Adamax, RAdam, NAdam, AMSGrad): the hyperparameters lr, beta1,
# beta2, eps, weight_decay (then a row's own, and decoupled_weight_decay where it has it),
# the two moments' buffers and constants, the weight decay's constants.  A new member is a
# row over these, with its formula's constants after _GSCALE.
_BETA1 = Hyper("beta1", "double", "[0,1)", 0.9)
_ADAM_HYPER = (_LR, _BETA1, Hyper("beta2", "double", "[0,1)", 0.999),
               Hyper("eps", "double", ">0", 1e-8), _WD)
# (Adam and AMSGrad form lr / (1 - beta1**step) in the buffers' dtype)
_ADAM_HYPER_C1 = (_LR._replace(doc="With lr / (1 - beta1**step) finite in the buffers' dtype."),
                  *_ADAM_HYPER[1:])
_DECOUPLED = Hyper("decoupled_weight_decay", "bint", "bool", False)
_MOMENTS = (Const("beta1", "real", "beta1"),
            Const("one_minus_beta1", "real", "1.0 - beta1"),
            Const("beta2", "real", "beta2"),
            Const("one_minus_beta2", "real", "1.0 - beta2"))
# eps, then L2 (wd) or decoupled (decay) weight decay, and which of them the step applies
_ADAM_DECAY = (_EPS_CONST, _WD_CONST, _DECAY, _HAS_WD,
               Const("decoupled", "bint", "decoupled_weight_decay"))
_ADAM_STATE = (Buffer("exp_avg", False, 0), Buffer("exp_avg_sq", True, 1))

KERNELS = (
    Kernel(
        "sgd", "SgdHyper",
        hyper=(_LR,
               Hyper("momentum", "double", "[0,1)", 0.0),
               Hyper("dampening", "double", "[0,1]", 0.0),
               Hyper("nesterov", "bint", "bool", False,
                     "Needs momentum > 0 and dampening == 0."),
               _WD),
        step=False,
        consts=(_GSCALE,
                Const("lr", "real", "lr"),
                Const("momentum", "real", "momentum"),
                Const("one_minus_damp", "real", "1.0 - dampening"),
                _WD_CONST,
                # branches are decided on the double values (as the reference does)
                _HAS_WD,
                Const("has_mom", "bint", "momentum != 0.0"),
                Const("nesterov", "bint", "nesterov")),
        state=(Buffer("momentum_buf", False, 0),),
        optional="has_mom",
        lowbit=True,
        doc=_SGD_DOC),
    Kernel(
        "rmsprop", "RmspropHyper",
        hyper=(_LR,
               Hyper("alpha", "double", "[0,1)", 0.9),
               Hyper("eps", "double", ">0", 1e-8),
               Hyper("eps_inside_sqrt", "bint", "bool", True,
                     "The seed's g / sqrt(s + eps); False: PyTorch's g / (sqrt(s) + eps)."),
               _WD),
        step=False,
        consts=(_GSCALE,
                Const("lr", "real", "lr"),
                Const("alpha", "real", "alpha"),
                Const("one_minus_alpha", "real", "1.0 - alpha"),
                _EPS_CONST,
                _WD_CONST,
                _HAS_WD,
                Const("eps_inside", "bint", "eps_inside_sqrt")),
        state=(Buffer("square_avg", True, 1),),
        lowbit=True,
        doc=_RMSPROP_DOC),
    Kernel(
        "adam", "AdamHyper",
        hyper=(*_ADAM_HYPER_C1, _DECOUPLED),
        step=True,
        consts=(_GSCALE,
                # bias corrections: c1 = lr / (1 - beta1^t), c2 = 1 / sqrt(1 - beta2^t)
                Const("c1", "real", "lr / (1.0 - beta1 ** step)"),
                Const("c2", "real", "1.0 / sqrt(1.0 - beta2 ** step)"),
                *_MOMENTS,
                *_ADAM_DECAY),
        state=_ADAM_STATE,
        lowbit=True,
        doc=_ADAM_DOC),
    Kernel(
        "adagrad", "AdagradHyper",
        hyper=(_LR,
               Hyper("lr_decay", "double", ">=0", 0.0,
                     "The step t uses lr / (1 + (t - 1) lr_decay)."),
               Hyper("eps", "double", ">0", 1e-10),
               _WD,
               Hyper("initial_accumulator_value", "double", ">=0", 0.0,
                     "The value the optimizers start sum at (the step does not read it).")),
        step=True,
        consts=(_GSCALE,
                Const("clr", "real", "lr / (1.0 + (step - 1) * lr_decay)"),
                _EPS_CONST,
                _WD_CONST,
                _HAS_WD),
        state=(Buffer("sum", True, 1, init="initial_accumulator_value"),),
        lowbit=True,
        doc=r"""One Adagrad step, in place; ``step`` counts from 1.

        .. math::

            g &= \nabla + \lambda\,\theta \\
            s &\leftarrow s + g^2 \\
            \theta &\leftarrow \theta - \frac{\eta}{1 + (t-1)\,\delta}\,\frac{g}{\sqrt{s} + \epsilon}

        ``torch.optim.Adagrad`` step for step, in its order of operations (its defaults:
        ``lr=1e-2``, ``eps=1e-10``).  ``initial_accumulator_value`` is where the optimizers
        start ``s``; a direct call takes ``sum`` as given.
        """),
    Kernel(
        "lion", "LionHyper",
        hyper=(_LR,
               _BETA1,
               Hyper("beta2", "double", "[0,1)", 0.99),
               Hyper("weight_decay", "double", ">=0", 0.0,
                     "Decoupled: the parameters shrink by lr * weight_decay each step.")),
        step=False,
        consts=(_GSCALE,
                Const("lr", "real", "lr"),
                *_MOMENTS,
                _DECAY,
                _HAS_WD),
        state=(Buffer("exp_avg", False, 0),),
        lowbit=True,
        doc=r"""One Lion step (Chen et al. 2023, "Symbolic Discovery of Optimization
        Algorithms"), in place.

        .. math::

            \theta &\leftarrow (1 - \eta\lambda)\,\theta \\
            c &= \beta_1 m + (1-\beta_1)\,\nabla \\
            \theta &\leftarrow \theta - \eta\,\operatorname{sign}(c) \\
            m &\leftarrow \beta_2 m + (1-\beta_2)\,\nabla

        ``sign`` as :func:`numpy.sign` (0 for 0, NaN for NaN: a non-finite gradient reaches
        the parameters, where ``skip_nonfinite`` guards them).
        """),
    Kernel(
        "adamax", "AdamaxHyper",
        hyper=_ADAM_HYPER,
        step=True,
        consts=(_GSCALE,
                # clr = lr / (1 - beta1^t), as torch computes it (in double)
                Const("clr", "real", "lr / (1.0 - beta1 ** step)"),
                Const("beta2", "real", "beta2"),
                Const("one_minus_beta1", "real", "1.0 - beta1"),
                _EPS_CONST,
                _WD_CONST,
                Const("zero", "real", "0.0"),   # |g| = max(g, 0 - g)
                _HAS_WD),
        state=(Buffer("exp_avg", False, 0), Buffer("exp_inf", True, 1)),
        lowbit=True,
        doc=r"""One Adamax step (Kingma & Ba 2015, section 7.1), in place; ``step`` counts from 1.

        .. math::

            g &= \nabla + \lambda\,\theta \\
            m &\leftarrow m + (1-\beta_1)\,(g - m) \\
            u &\leftarrow \max(\beta_2\,u,\ |g| + \epsilon) \\
            \theta &\leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,\frac{m}{u}

        ``torch.optim.Adamax`` step for step, in its order of operations (its ``lerp`` for
        :math:`m`, :math:`\epsilon` added to :math:`|g|` inside the maximum; its defaults:
        ``lr=2e-3``, ``betas=(0.9, 0.999)``, ``eps=1e-8``).  :math:`u` is never negative.
        """),
    Kernel(
        "radam", "RadamHyper",
        hyper=(*_ADAM_HYPER,
               _DECOUPLED._replace(doc="True: the parameters shrink by lr * weight_decay each "
                                       "step (AdamW's decay); False: L2 added to the gradient.")),
        step=True,
        consts=(_GSCALE,
                Const("lr", "real", "lr"),
                Const("bc1", "real", "1.0 - beta1 ** step"),
                Const("sqrt_bc2", "real", "sqrt(1.0 - beta2 ** step)"),
                # the variance rectification of step t (0 where the step is not rectified)
                Const("rect", "real", f"{_RADAM_RECT} if {_RADAM_RHO_T} > 5.0 else 0.0"),
                Const("one", "real", "1.0"),
                Const("beta2", "real", "beta2"),
                Const("one_minus_beta1", "real", "1.0 - beta1"),
                Const("one_minus_beta2", "real", "1.0 - beta2"),
                *_ADAM_DECAY,
                Const("rectified", "bint", f"{_RADAM_RHO_T} > 5.0")),
        state=_ADAM_STATE,
        lowbit=True,
        doc=r"""One RAdam step (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate
        and Beyond"), in place; ``step`` counts from 1.

        .. math::

            \theta &\leftarrow (1 - \eta\lambda)\,\theta,\ g = \nabla
                     \quad\text{(decoupled)} \quad\text{else}\quad
                     g = \nabla + \lambda\,\theta \\
            m &\leftarrow m + (1-\beta_1)\,(g - m) \\
            v &\leftarrow \beta_2 v + (1-\beta_2)\,g^2 \\
            \rho_\infty &= \frac{2}{1-\beta_2} - 1,\quad
            \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t} \\
            \theta &\leftarrow \theta - \eta\,\frac{m}{1-\beta_1^t}\,
                     \frac{\sqrt{1-\beta_2^t}}{\sqrt{v}+\epsilon}\,r_t
                     \quad\text{if } \rho_t > 5, \quad\text{else}\quad
                     \theta - \eta\,\frac{m}{1-\beta_1^t} \\
            r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\,\rho_\infty}
                               {(\rho_\infty-4)(\rho_\infty-2)\,\rho_t}}

        ``torch.optim.RAdam`` step for step, in its order of operations (its ``lerp`` for
        :math:`m`, ``(m / (1 - beta1^t)) * lr * (1 / (sqrt(v) + eps)) * sqrt(1 - beta2^t) * r``;
        the per-step constants, :math:`r_t` and whether the step is rectified are computed in
        double from ``step``; its defaults: ``lr=1e-3``, ``betas=(0.9, 0.999)``, ``eps=1e-8``).
        """),
    Kernel(
        "nadam", "NadamHyper",
        hyper=(*_ADAM_HYPER,
               Hyper("momentum_decay", "double", ">=0", 4e-3,
                     "The momentum cache mu_t = beta1 (1 - 0.5 * 0.96^(t momentum_decay))."),
               _DECOUPLED),
        step=True,
        consts=(_GSCALE,
                # lr (1 - mu_t) / (1 - prod mu) and lr mu_{t+1} / (1 - prod mu · mu_{t+1}),
                # torch.optim.NAdam's two scales (its product a float32 scalar, as torch's)
                Const("cg", "real",
                      "lr * (1.0 - _nadam_mu(beta1, momentum_decay, step))"
                      " / (1.0 - _nadam_mu_product(beta1, momentum_decay, step))"),
                Const("cm", "real",
                      "lr * _nadam_mu(beta1, momentum_decay, step + 1)"
                      " / (1.0 - _nadam_mu_product(beta1, momentum_decay, step)"
                      " * _nadam_mu(beta1, momentum_decay, step + 1))"),
                Const("bc2", "real", "1.0 - beta2 ** step"),
                *_MOMENTS,
                *_ADAM_DECAY),
        state=_ADAM_STATE,
        lowbit=True,
        doc=r"""One NAdam step (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), in
        place, as ``torch.optim.NAdam``; ``step`` counts from 1.

        .. math::

            \mu_t &= \beta_1\,(1 - \tfrac12\,0.96^{t\psi}),\quad
                 \Pi_t = \textstyle\prod_{i \le t} \mu_i \\
            g &= \nabla + \lambda\,\theta \quad\text{(or } \theta \leftarrow (1-\eta\lambda)\,\theta
                 \text{, decoupled)} \\
            m &\leftarrow \beta_1 m + (1-\beta_1)\,g,\quad
                 v \leftarrow \beta_2 v + (1-\beta_2)\,g^2,\quad
                 d = \sqrt{v / (1-\beta_2^t)} + \epsilon \\
            \theta &\leftarrow \theta - \frac{\eta\,(1-\mu_t)}{1-\Pi_t}\,\frac{g}{d}
                 - \frac{\eta\,\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m}{d}

        (:math:`\psi`: ``momentum_decay``), in torch's order of operations.  As torch (with its
        default dtype float32), :math:`\Pi_t` is a float32 product, each :math:`\mu_i` rounded
        to float32 (for float64 buffers too); the step's constants take O(t) to compute.
        """),
    Kernel(
        "amsgrad", "AmsgradHyper",
        hyper=(*_ADAM_HYPER_C1, _DECOUPLED),
        step=True,
        consts=(_GSCALE,
                # torch's step_size = lr / (1 - beta1^t), bias_correction2_sqrt = (1 - beta2^t)^0.5
                Const("c1", "real", "lr / (1.0 - beta1 ** step)"),
                Const("bc2_sqrt", "real", "pow(1.0 - beta2 ** step, 0.5)"),
                *_MOMENTS,
                *_ADAM_DECAY),
        state=(*_ADAM_STATE, Buffer("max_exp_avg_sq", True, 0)),
        lowbit=False,
        doc=r"""One AMSGrad step (Reddi et al. 2018), in place, as ``torch.optim.Adam`` and
        ``AdamW`` with ``amsgrad=True``; ``step`` counts from 1.

        .. math::

            m &\leftarrow \beta_1 m + (1-\beta_1)\,g,\quad
                 v \leftarrow \beta_2 v + (1-\beta_2)\,g^2,\quad
                 \hat v \leftarrow \max(\hat v, v) \\
            \theta &\leftarrow \theta - \frac{m}{\sqrt{\hat v} / \sqrt{1-\beta_2^t} + \epsilon}
                 \,\frac{\eta}{1-\beta_1^t}

        with Adam's weight decay (L2, or decoupled as AdamW's), in torch's order of operations
        (a NaN v reaches the maximum; torch.maximum also keeps a NaN maximum, which this
        kernel's max, as maxps, replaces with v).  Three state buffers: float32
        or float64 state only (the low-precision passes take one or two buffers).
        """),
)

BY_NAME = {k.name: k for k in KERNELS}

#: The dtypes every dense kernel is instantiated for: suffix, C type, square root.
DTYPES = (("f32", "float", "sqrtf"), ("f64", "double", "sqrt"))
