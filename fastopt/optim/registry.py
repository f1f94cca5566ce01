"""The one registry of optimizers.

Every optimizer fastopt has is one :class:`OptimizerSpec` in :data:`SPECS`, declared next to
its class (``_spec = spec(...)`` in :mod:`fastopt.optim.algorithms`; defining the class
registers it, in the order of definition).  ``fastopt train`` takes its ``--optimizer``
choices and how ``--beta`` maps to each from here, the benchmark its rows (bytes moved, the
PyTorch twin), the package its exports and the tests their grids.  What a kernel is (its
hyperparameters and their order, its state buffers, which of them are never negative) is
not repeated here: it comes from the kernel table :data:`fastopt.specs.KERNELS`.  Adding an
optimizer: see the documentation's "Adding an optimizer" page.
"""

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .. import kernels, reference
from ..specs import BY_NAME as _KERNELS

__all__ = ["OptimizerSpec", "SPECS", "spec", "register"]


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
    beta : str or None
        The constructor argument ``fastopt train --beta`` sets (None: the optimizer has no
        such argument, as Adagrad; ``--beta`` does not apply to it).
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
    beta: str | None = "beta"
    label: str = ""
    nonnegative: tuple[str, ...] = ()
    cls: type | None = field(default=None, compare=False, repr=False)

    @property
    def row(self):
        """The kernel's row of :data:`fastopt.specs.KERNELS`."""
        return _KERNELS[self.kernel.removesuffix("_step")]

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
    def reference_fn(self) -> Callable[..., Any]:
        """The NumPy twin in :mod:`fastopt.reference`."""
        return getattr(reference, self.kernel)

    @property
    def optimizer_class(self) -> type:
        """The class :attr:`optimizer`, from the public namespace :mod:`fastopt.optim`.

        Registered by the class itself (the classes import this registry, never the
        reverse: no import cycle); a spec made by hand names a class of that namespace.
        """
        if self.cls is not None:
            return self.cls
        return getattr(sys.modules[__package__], self.optimizer)

    def call(self, impl, param, grad, state, *, step: int = 1, **overrides) -> None:
        """One kernel step with :attr:`example`'s arguments (``impl``: ``fastopt.kernels`` or
        ``fastopt.reference``); ``overrides`` replace some of them."""
        kwargs = {**self.example, **overrides}
        if self.row.step:
            kwargs.setdefault("step", step)
        if self.row.optional and not self.state:
            state = [None] * len(self.row.state)
        getattr(impl, self.kernel)(param, grad, *state, **kwargs)

    def make(self, params, lr, *, beta: float = 0.9, impl: str = "fused", **options):
        """The optimizer on ``params`` with learning rate ``lr`` and ``beta`` as :attr:`beta`;
        ``options`` are the optimizers' common options (``max_grad_norm``, ``skip_nonfinite``,
        ``groups``)."""
        cls = self.optimizer_class
        if self.beta is None:
            return cls(params, lr=lr, impl=impl, **options)
        parts = getattr(cls, "_pairs", {}).get(self.beta)
        if parts:   # (Adam's betas: beta1, the others at the table's defaults)
            defaults = {h.name: h.default for h in self.row.hyper}
            value = (beta, *(defaults[p] for p in parts[1:]))
        else:
            value = beta
        return cls(params, lr=lr, **{self.beta: value}, impl=impl, **options)

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


def spec(name, kernel, **options) -> OptimizerSpec:
    """The registry entry of an optimizer class on the kernel ``kernel`` of
    :data:`fastopt.specs.KERNELS`, which gives its state buffers, which of them are never
    negative, and its passes (param read and written, grad read, each state buffer read and
    written); ``options``: the other fields of :class:`OptimizerSpec`.  The class it is
    declared in (``_spec = spec(...)``) fills in its ``optimizer``."""
    k = _KERNELS[kernel]
    return OptimizerSpec(name, "", f"{kernel}_step", k.state_names, 3 + 2 * len(k.state),
                         nonnegative=tuple(b.name for b in k.state if b.nonnegative), **options)


def register(entry: OptimizerSpec, cls: type) -> OptimizerSpec:
    """Add the optimizer class ``cls`` with its entry ``entry`` (from :func:`spec`) to
    :data:`SPECS`; returns the completed entry."""
    if entry.name in SPECS and SPECS[entry.name].cls is not cls:
        raise ValueError(f"optimizer {entry.name!r} is registered already (by "
                         f"{SPECS[entry.name].optimizer})")
    entry = replace(entry, optimizer=cls.__name__, cls=cls)
    SPECS[entry.name] = entry
    return entry


#: Every optimizer, by name, in the order its class was defined.
SPECS: dict[str, OptimizerSpec] = {}
