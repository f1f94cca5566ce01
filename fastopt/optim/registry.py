"""The one registry of optimizers.

Every optimizer fastopt has is one :class:`OptimizerSpec` in :data:`SPECS`.  The optimizer
classes take their state buffer names from it, ``fastopt train`` its ``--optimizer`` choices
and how ``--beta`` maps to each, the benchmark its rows (bytes moved, the PyTorch twin), and
the tests their kernel-against-reference list.  What a kernel is (its hyperparameters and
their order, its state buffers, which of them are never negative) is not repeated here: it
comes from the kernel table :data:`fastopt.specs.KERNELS`, which the build renders the
compiled kernels' structs and drivers from.  Adding an optimizer on a new kernel means a row
of that table, its update rule in ``src/kernels/_optim.pyx.tp``, the wrapper and twin
(``fastopt.kernels`` / ``fastopt.reference``), a class, and one entry here.
"""

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import kernels, reference
from ..specs import BY_NAME as _KERNELS

__all__ = ["OptimizerSpec", "SPECS", "MULTI_ARGS", "run_multi", "run_lowbit"]

#: The order in which each compiled ``*_multi`` call takes one group's hyperparameters
#: (the kernels' keyword arguments): :data:`fastopt.specs.KERNELS`' order.
MULTI_ARGS = {f"{k.name}_step": k.hyper_names for k in _KERNELS.values()}


def run_multi(kernel, mt, groups, step, gscale, n_threads):
    """The compiled multi-tensor call of ``kernel`` (e.g. "adam_step") over the MultiTensor
    ``mt``: ``groups`` holds one tuple of hyperparameters (in :data:`MULTI_ARGS` order) per
    hyperparameter group; the gradients are scaled by ``gscale``."""
    from ..runtime.dispatch import ext

    run = getattr(ext._optim, kernel.replace("_step", "_multi"))
    if _KERNELS[kernel.removesuffix("_step")].step:
        run(mt, groups, step, gscale, n_threads)
    else:
        run(mt, groups, gscale, n_threads)


def run_lowbit(kernel, state_dtype, table, ntasks, groups, step, seed, offsets, tables, gscale,
               n_threads):
    """The compiled low-precision step of ``kernel`` over a MultiTensor plan (``table``: its
    ``table_capsule()``, rows param, grad, then each state buffer's bits (bfloat16) or codes
    and absmax (int8)); ``groups`` holds one tuple in :data:`MULTI_ARGS` order per group;
    bfloat16 rounding hashes (seed, step, offsets[t] + i); ``tables``: each int8 buffer's
    ``QuantMap.kernel_tables()``."""
    from ..runtime.dispatch import ext

    if state_dtype == "bfloat16":
        run = getattr(ext._lowbit, kernel.replace("_step", "_bf16_multi"))
        run(table, ntasks, groups, step, seed, offsets, gscale, n_threads)
    else:
        run = getattr(ext._lowbit, kernel.replace("_step", "_int8_multi"))
        run(table, ntasks, *tables, groups, step, gscale, n_threads)


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: its names, buffers, functions and cost.

    Parameters
    ----------
    name : str
        The name in ``fastopt train --optimizer`` and in the benchmark.
    optimizer : str
        The class in :mod:`fastopt.optim`.
    kernel : str
        The function in both :mod:`fastopt.kernels` and :mod:`fastopt.reference`.
    state : tuple of str
        The state buffers, in the kernel's argument order after ``param, grad``: C-contiguous
        arrays like ``param`` (same shape and dtype), zeros at the start.
    passes : int
        Buffer passes one step must make: each buffer read or written once (Adam reads
        param, grad, m, v and writes param, m, v: 7).  Bytes moved per parameter are
        ``passes`` times the dtype's size (:meth:`bytes_per_element`).
    example : dict
        Keyword arguments of a typical kernel call; with them the kernel does what ``torch``
        does (the benchmark and the parity tests use both).
    torch : (str, dict) or None
        The ``torch.optim`` class and its arguments that take the same step, or None.
    beta : str
        The constructor argument ``fastopt train --beta`` sets.
    label : str
        The benchmark's row name, when it differs from ``name``.
    nonnegative : tuple of str
        The state buffers that never go below zero (int8 state quantizes them with the
        unsigned map; the others with the signed one).
    """

    name: str
    optimizer: str
    kernel: str
    state: tuple[str, ...]
    passes: int
    example: dict[str, Any] = field(default_factory=dict)
    torch: tuple[str, dict[str, Any]] | None = None
    beta: str = "beta"
    label: str = ""
    nonnegative: tuple[str, ...] = ()

    @property
    def bench_name(self) -> str:
        return self.label or self.name

    def bytes_per_element(self, dtype=np.float32) -> int:
        """Bytes one step moves per parameter with buffers of ``dtype``."""
        return self.passes * np.dtype(dtype).itemsize

    @property
    def kernel_fn(self) -> Callable[..., Any]:
        """The compiled kernel (through its checking wrapper in :mod:`fastopt.kernels`)."""
        return getattr(kernels, self.kernel)

    @property
    def hyper_check(self) -> Callable[..., Any]:
        """The hyperparameter constraints (``fastopt.kernels._check.<kernel>_hyper``) that the
        kernels, the reference, :mod:`fastopt.functional` and the classes share."""
        from ..kernels import _check

        return getattr(_check, self.kernel.replace("_step", "_hyper"))

    @property
    def reference_fn(self) -> Callable[..., Any]:
        """The NumPy twin in :mod:`fastopt.reference`."""
        return getattr(reference, self.kernel)

    @property
    def optimizer_class(self) -> type:
        """The class :attr:`optimizer`, from the public namespace :mod:`fastopt.optim`.

        Looked up, not imported: the classes import this registry (their state buffers and
        compiled calls), so the registry names them and never imports them (no import cycle).
        The package has always finished loading by then: importing this module runs
        ``fastopt/optim/__init__.py``, which imports the classes, first.
        """
        return getattr(sys.modules[__package__], self.optimizer)

    def call(self, impl, param, grad, state, *, step: int = 1, **overrides) -> None:
        """One kernel step with :attr:`example`'s arguments (``impl``: ``fastopt.kernels`` or
        ``fastopt.reference``); ``overrides`` replace some of them."""
        kwargs = {**self.example, **overrides}
        if _KERNELS[self.kernel.removesuffix("_step")].step:
            kwargs.setdefault("step", step)
        if _KERNELS[self.kernel.removesuffix("_step")].optional and not self.state:
            state = [None] * len(_KERNELS[self.kernel.removesuffix("_step")].state)
        getattr(impl, self.kernel)(param, grad, *state, **kwargs)

    def make(self, params, lr, *, beta: float = 0.9, impl: str = "fused", **options):
        """The optimizer on ``params`` with learning rate ``lr`` and ``beta`` as :attr:`beta`;
        ``options`` are the optimizers' common options (``max_grad_norm``, ``skip_nonfinite``,
        ``groups``)."""
        value = (beta, 0.999) if self.beta == "betas" else beta
        return self.optimizer_class(params, lr=lr, **{self.beta: value}, impl=impl, **options)

    def torch_step(self, torch, param, grad) -> Callable[[], Any]:
        """A PyTorch optimizer's ``step`` on copies of ``param`` and ``grad``."""
        cls, kwargs = self.torch
        return self.torch_optimizer(torch, [param], [grad]).step

    def torch_optimizer(self, torch, params, grads):
        """The PyTorch twin over copies of the arrays ``params`` with gradients ``grads``."""
        cls, kwargs = self.torch
        tps = []
        for p, g in zip(params, grads):
            tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
            tp.grad = torch.from_numpy(g.copy())
            tps.append(tp)
        return getattr(torch.optim, cls)(tps, **kwargs)


def _spec(name, optimizer, kernel, **options):
    """An optimizer on the kernel ``kernel`` of :data:`fastopt.specs.KERNELS`, which gives its
    state buffers, which of them are never negative, and its passes (param read and written,
    grad read, each state buffer read and written)."""
    k = _KERNELS[kernel]
    return OptimizerSpec(name, optimizer, f"{kernel}_step", k.state_names, 3 + 2 * len(k.state),
                         nonnegative=tuple(b.name for b in k.state if b.nonnegative), **options)


#: Every optimizer, by name.
SPECS: dict[str, OptimizerSpec] = {s.name: s for s in (
    _spec("sgd", "SGD", "sgd", example=dict(lr=1e-3, momentum=0.9),
          torch=("SGD", dict(lr=1e-3, momentum=0.9, fused=True)), beta="momentum",
          label="sgd-momentum"),
    _spec("momentum", "Momentum", "sgd", example=dict(lr=1e-3, momentum=0.9, dampening=0.9),
          beta="beta"),
    _spec("rmsprop", "RMSprop", "rmsprop", example=dict(lr=1e-3, alpha=0.99, eps_inside_sqrt=False),
          torch=("RMSprop", dict(lr=1e-3, alpha=0.99)), beta="alpha"),
    _spec("adam", "Adam", "adam", example=dict(lr=1e-3),
          torch=("Adam", dict(lr=1e-3, fused=True)), beta="betas"),
    _spec("adamw", "AdamW", "adam",
          example=dict(lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True),
          torch=("AdamW", dict(lr=1e-3, weight_decay=1e-2, fused=True)), beta="betas"),
)}
