"""``torch.optim`` optimizers whose step runs on fastopt's fused kernels, zero copy.

One line changes::

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)                      # before
    opt = fastopt.integrations.torch.Adam(model.parameters(), lr=1e-3)      # after

Each class is a :class:`torch.optim.Optimizer` subclass (PyTorch's base class keeps the
parameter groups, ``add_param_group``, ``zero_grad``, the hooks and the state dicts), with
the same constructor arguments and defaults as the ``torch.optim`` class of the same name.
Its :meth:`~FastoptTorchOptimizer.step` hands the parameters and gradients to a fastopt
optimizer as NumPy views of the tensors' memory (``tensor.numpy()``: no copy), which updates
them in place in one compiled call per dtype; the state buffers are fastopt's, and
``opt.state[p]`` holds them as tensors over the same memory, under PyTorch's names.

There is one class per optimizer of :data:`fastopt.optim.SPECS`: the ones with a PyTorch
twin under the twin's name and defaults (``SGD``, ``RMSprop``, ``Adam``, ``AdamW``, ...),
the others under fastopt's class name and defaults; a new entry of the registry appears here
with no edit.

What PyTorch users rely on, and how it maps:

* **Parameter groups** as PyTorch takes them (a list of dicts with ``params`` and any
  hyperparameter), ``add_param_group``, and named parameters.  The values of a group may
  change between steps (LR schedulers write ``group["lr"]``): each step reads them.
* **State dicts** in PyTorch's layout: ``state`` keyed by parameter index, each a dict of
  ``step`` (a float32 scalar tensor) and the buffers (``exp_avg``, ``exp_avg_sq``,
  ``square_avg``, ``momentum_buffer``); ``param_groups`` with every hyperparameter.  A state
  dict of this class loads into the ``torch.optim`` twin and back.  With
  ``state_dtype="bfloat16"``, ``"int8"`` or ``"float8"`` the compact buffers are not tensors: the state dict
  then holds them under the extra key ``"fastopt_state"`` (index -> buffer name -> fastopt's
  entry, see :meth:`fastopt.optim.Optimizer.state_dict`), and ``state`` only the step counts;
  it round-trips through this class (not through the ``torch.optim`` twin).
* ``step(closure)``, ``zero_grad(set_to_none=True)``; ``state[p]["step"]`` is current after
  each step.  A parameter whose memory is replaced (``p.data = t``) is stepped in its new
  memory, its state carried over (a new dtype or shape is refused, as torch fails too).
* Parameters without a gradient are skipped, and each parameter keeps its own step count, as
  in PyTorch: parameters at the same step count are stepped by one fused call.

* ``Adam``/``AdamW`` with ``amsgrad=True`` (per group) step with :class:`fastopt.AMSGrad`
  (state ``max_exp_avg_sq`` as torch's), and torch's ``Adam(decoupled_weight_decay=True)``
  with :class:`fastopt.AdamW`.  A group's ``amsgrad`` may change between steps as in torch
  (turned on at step > 0 it is refused: there is no ``max_exp_avg_sq``, torch fails too).

What fastopt does not do is refused at construction (ValueError naming the option), unless
it has PyTorch's default value: ``maximize``, ``capturable``, ``differentiable``, RMSprop's
``momentum`` and ``centered``, ...; written into a group later, at the next step, before
anything moves.  ``foreach`` and ``fused`` are accepted and ignored (fastopt's step is always
fused).  Parameters must be CPU tensors
of float32 or float64 (C-contiguous, as ``nn.Module`` parameters are); a non-contiguous
gradient is copied.  One difference from PyTorch: with ``dampening != 0``, PyTorch's SGD
starts its momentum buffer at the first gradient, fastopt's at ``(1 - dampening)`` times it.
"""

import inspect

import numpy as np
import torch
from torch.optim.optimizer import required

from ..optim import registry as _registry
from ..optim.algorithms import AMSGrad as _AMSGrad, AdamW as _AdamW
from ..optim.lowstate import state_format as _state_format

__all__ = ["FastoptTorchOptimizer"]

#: PyTorch's names of fastopt's state buffers, where they differ.
_TORCH_NAMES = {"momentum_buf": "momentum_buffer"}

#: PyTorch options fastopt accepts whatever their value (its step is always fused).
_IGNORED = ("foreach", "fused")


def _positional(fn, skip=("self", "params")):
    """The names of ``fn``'s arguments that may be given by position."""
    return tuple(k for k, p in inspect.signature(fn).parameters.items()
                 if k not in skip and p.kind == p.POSITIONAL_OR_KEYWORD)


def _defaults(fn, skip=("self", "params")):
    """The keyword defaults of ``fn``'s signature."""
    sig = inspect.signature(fn)
    return {k: p.default for k, p in sig.parameters.items()
            if k not in skip and p.default is not inspect.Parameter.empty
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _plain(value):
    """A group value as fastopt takes it (a tensor lr or beta becomes a float)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value


class FastoptTorchOptimizer(torch.optim.Optimizer):
    """Base class of the ``torch.optim`` drop-ins; one subclass per registry entry.

    Parameters
    ----------
    params : iterable of Tensor, of (name, Tensor), or of dict
        As for ``torch.optim``: CPU float32/float64 tensors, or parameter groups.
    **hyper
        The ``torch.optim`` twin's arguments (see the subclass), plus
    state_dtype : {"float32", "bfloat16", "int8", "float8"}, default "float32"
        How fastopt stores the state of float32 parameters (see
        :class:`fastopt.optim.Optimizer`).
    min_lowbit_size : int, default 4096
        Parameters with fewer elements keep float32 state.
    """

    _spec = None          # the OptimizerSpec
    _torch_defaults = {}  # the twin's keyword defaults (or fastopt's, without a twin)
    _fixed = {}           # fastopt hyperparameters the twin does not have, fixed to its rule
    _positional = ()      # the arguments after params that may be given by position

    def __init__(self, params, *args, state_dtype="float32", min_lowbit_size=4096, **kwargs):
        names = list(self._torch_defaults)
        if len(args) > len(self._positional):
            raise TypeError(f"{type(self).__name__}() takes at most {len(self._positional)} "
                            f"positional arguments after params, got {len(args)}")
        given = dict(zip(self._positional, args))
        for k, v in kwargs.items():
            if k in given:
                raise TypeError(f"{type(self).__name__}() got multiple values for {k!r}")
            if k not in self._torch_defaults:
                import difflib
                close = difflib.get_close_matches(k, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                                f"{k!r}{hint}")
            given[k] = v
        self._state_dtype = _state_format(state_dtype)
        if isinstance(min_lowbit_size, bool) or not isinstance(min_lowbit_size, int) \
                or min_lowbit_size < 0:
            raise ValueError(f"min_lowbit_size must be an int >= 0, got {min_lowbit_size!r}")
        self._min_lowbit_size = min_lowbit_size
        defaults = {**self._torch_defaults, **given}
        self._check_group(defaults, "the constructor")
        self._inner = []          # [(fastopt optimizer, [params], [torch group index])]
        self._key = None
        self._steps = {}          # param -> its step count (also in state[p]["step"])
        self._lowstate = {}       # param -> {buffer name: fastopt entry} (compact formats)
        super().__init__(params, defaults)
        # a probe: the fastopt class takes these values (raises ValueError/TypeError as it)
        for group in self.param_groups:
            self._make([{"params": [np.zeros(1, np.float32)], **self._hyper(group)}],
                       self._class_of(group))

    # ------------------------------------------------------------ checks
    @property
    def state_dtype(self):
        """How fastopt stores the state: "float32", "bfloat16", "int8" or "float8" (fixed)."""
        return self._state_dtype

    def _class_of(self, group):
        """The fastopt class that steps ``group``: the registry entry's, except for the Adam
        kernel's twins, where ``amsgrad=True`` selects AMSGrad and torch's
        ``Adam(decoupled_weight_decay=True)`` AdamW (as ``torch.optim`` does)."""
        cls = self._spec.optimizer_class
        if self._spec.kernel != "adam_step":
            return cls
        if _plain(group.get("amsgrad", False)):
            return _AMSGrad
        if _plain(group.get("decoupled_weight_decay", False)):
            return _AdamW
        return cls

    def _hyper(self, group):
        """The fastopt hyperparameters (``lr`` and the class's) of a torch group."""
        cls = self._class_of(group)
        fixed = {**self._spec.optimizer_class._fixed, **self._fixed}
        h = {"lr": _plain(group["lr"])}
        for k in cls._hyper_names:
            h[k] = _plain(group[k]) if k in group else fixed[k]
        return h

    def _check_group(self, group, where):
        """Refuse values of options fastopt does not have (other than PyTorch's default)."""
        hyper = set(self._spec.optimizer_class._hyper_names) | {"lr"}
        if self._spec.kernel == "adam_step":
            hyper |= {"amsgrad", "decoupled_weight_decay"}      # see _class_of
        for k, default in self._torch_defaults.items():
            if k in hyper or k in _IGNORED or k not in group:
                continue
            v = group[k]
            if not (v is default or v == default):
                raise ValueError(f"{type(self).__name__}: {k}={v!r} (in {where}) is not "
                                 f"supported by fastopt; only {k}={default!r} (PyTorch's "
                                 f"default) is")

    def add_param_group(self, param_group):
        """Add a parameter group (as ``torch.optim.Optimizer.add_param_group``), checked."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        k = len(self.param_groups) - 1
        try:
            self._check_group(group, f"param_groups[{k}]")
            for i, p in enumerate(group["params"]):
                if p.device.type != "cpu":
                    raise ValueError(f"param_groups[{k}]['params'][{i}] is on {p.device}: "
                                     "fastopt steps CPU tensors")
                if p.dtype not in (torch.float32, torch.float64):
                    raise ValueError(f"param_groups[{k}]['params'][{i}] is {p.dtype}: "
                                     "fastopt steps float32 and float64 tensors")
                if not p.is_contiguous():
                    raise ValueError(f"param_groups[{k}]['params'][{i}] is not contiguous")
                if p.is_sparse:
                    raise ValueError(f"param_groups[{k}]['params'][{i}] is sparse")
        except ValueError:
            self.param_groups.pop()
            raise
        self._key = None

    # ------------------------------------------------------------ the fastopt optimizers
    def _make(self, groups, cls):
        base = {k: v for k, v in groups[0].items() if k != "params"}
        return cls(groups, **base, state_dtype=self._state_dtype,
                   min_lowbit_size=self._min_lowbit_size)

    def _state_names(self, opt):
        return list(opt.state)

    def _collect(self):
        """Move the live state of the fastopt optimizers into ``self.state`` / ``_lowstate``."""
        for opt, members, _ in self._inner:
            if not self._compact(opt):
                continue                     # self.state[p] already views the live buffers
            entries = opt.state_dict()["state"]
            for i, p in enumerate(members):
                self._lowstate[p] = {n: e[i] for n, e in entries.items()}

    @staticmethod
    def _compact(opt):
        return opt.state_dtype != "float32"

    def _rebuild(self, active):
        """One fastopt optimizer per step count and fastopt class over the ``active``
        (group, param) pairs."""
        self._collect()
        classes = {}
        for gi, p in active:
            cls = self._class_of(self.param_groups[gi])
            classes.setdefault((self._steps.get(p, 0), cls.__name__), (cls, []))[1].append((gi, p))
        inner = []
        for (step, _), (cls, members) in sorted(classes.items()):
            gidx = sorted({gi for gi, _ in members})
            groups = [{"params": [p.detach().numpy() for g, p in members if g == gi],
                       **self._hyper(self.param_groups[gi])} for gi in gidx]
            params = [p for gi in gidx for g, p in members if g == gi]
            opt = self._make(groups, cls)
            if step or any(p in self.state and self.state[p] for p in params):
                self._load(opt, params, step)
            inner.append((opt, params, gidx))
            # the torch-facing state: views of fastopt's buffers (float32 state)
            for i, p in enumerate(params):
                st = self.state[p]
                st["step"] = torch.tensor(float(step))
                if not self._compact(opt):
                    for n, bufs in opt.state.items():
                        st[_TORCH_NAMES.get(n, n)] = torch.from_numpy(bufs[i])
        self._inner = inner

    def _load(self, opt, params, step):
        """Load the state kept for ``params`` (in ``self.state`` / ``_lowstate``) into ``opt``."""
        sd = opt.state_dict()
        sd["step"] = step
        for n, entries in sd["state"].items():
            tname = _TORCH_NAMES.get(n, n)
            for i, p in enumerate(params):
                if self._compact(opt):
                    saved = self._lowstate.get(p, {}).get(n)
                else:
                    t = self.state[p].get(tname) if p in self.state else None
                    saved = None if t is None else t.detach().numpy()
                if saved is not None:
                    entries[i] = saved
                elif step and n != "momentum_buf":   # (torch's SGD starts it at the gradient)
                    raise ValueError(f"the state of a parameter at step {step} has no "
                                     f"{tname!r} (a state dict of another optimizer or "
                                     f"option, as amsgrad?); torch.optim would fail too")
        opt.load_state_dict(sd)

    # ------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure=None):
        """One step of every parameter that has a gradient (as ``torch.optim``'s ``step``).

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (called with gradients enabled).

        Returns
        -------
        The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        active, grads = [], {}
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise ValueError("fastopt steps dense gradients; a gradient is sparse")
                if not g.is_contiguous():
                    g = g.contiguous()
                active.append((gi, p))
                grads[p] = g.numpy()
        if not active:
            return loss
        # options written into a group since the last step are checked (or take effect) now
        for gi, group in enumerate(self.param_groups):
            self._check_group(group, f"param_groups[{gi}]")
        # a parameter's memory is part of the key: after ``p.data = t`` (or ``module.double()``)
        # the fastopt optimizers are rebuilt over the new memory, the state carried over
        key = (tuple((id(p), p.data_ptr(), p.dtype, p.shape, p.stride()) for _, p in active),
               tuple(self._class_of(group) for group in self.param_groups))
        if key != self._key:
            self._rebuild(active)
            self._key = key
        for opt, params, gidx in self._inner:
            for ig, gi in enumerate(gidx):
                opt.param_groups[ig].update(self._hyper(self.param_groups[gi]))
            opt.step([grads[p] for p in params])
        for opt, params, _ in self._inner:
            t = opt.step_count
            for p in params:
                self._steps[p] = t
                self.state[p]["step"].fill_(t)      # as torch's, current after each step
        return loss

    # ------------------------------------------------------------ state dicts
    def _sync(self):
        """Write the step counts (and compact state) into ``self.state``."""
        self._collect()
        for p, t in self._steps.items():
            self.state[p]["step"] = torch.tensor(float(t))
        if self._spec.row.name == "nadam":     # torch.optim.NAdam's state also holds mu_product
            for group in self.param_groups:
                for p in group["params"]:
                    if p in self._steps:
                        self.state[p]["mu_product"] = torch.tensor(_nadam_mu_product(
                            _plain(group["betas"][0]), _plain(group["momentum_decay"]),
                            self._steps[p]))

    def state_dict(self):
        """PyTorch's state dict (see the module's notes; compact state under "fastopt_state")."""
        self._sync()
        sd = super().state_dict()
        if self._state_dtype != "float32":
            index = {}
            for group in self.param_groups:
                for p in group["params"]:
                    index.setdefault(p, len(index))
            sd["fastopt_state"] = {index[p]: {n: e for n, e in entries.items()}
                                   for p, entries in self._lowstate.items() if p in index}
            sd["fastopt_state_dtype"] = self._state_dtype
        return sd

    def load_state_dict(self, state_dict):
        """Load a state dict of this class (or of the ``torch.optim`` twin, float32 state)."""
        state_dict = dict(state_dict)
        low = state_dict.pop("fastopt_state", None)
        fmt = state_dict.pop("fastopt_state_dtype", "float32")
        if fmt != self._state_dtype:
            raise ValueError(f"state_dict holds state_dtype={fmt!r}; this optimizer keeps "
                             f"state_dtype={self._state_dtype!r}")
        for gi, group in enumerate(state_dict.get("param_groups", [])):
            self._check_group(group, f"state_dict['param_groups'][{gi}]")
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        steps = {}
        for p in params:
            st = self.state.get(p)
            if st and "step" in st:
                steps[p] = int(_plain(st["step"]))
        lowstate = {}
        if low is not None:
            for i, entries in low.items():
                lowstate[params[int(i)]] = dict(entries)
        self._steps = steps
        self._lowstate = lowstate
        self._inner = []
        self._key = None


#: (beta1, momentum_decay) -> (step, product) of the last _nadam_mu_product call
_NADAM_LAST = {}


def _nadam_mu_product(beta1, momentum_decay, step):
    """prod_{i<=step} mu_i as torch.optim.NAdam keeps it (a float32 scalar); the last product
    of the same beta1 and momentum_decay is continued (a state dict per step: O(1))."""
    last, prod = _NADAM_LAST.get((beta1, momentum_decay), (0, np.float32(1.0)))
    if last > step:
        last, prod = 0, np.float32(1.0)
    for i in range(last + 1, step + 1):
        nxt = np.float32(prod * np.float32(beta1 * (1.0 - 0.5 * 0.96 ** (i * momentum_decay))))
        if nxt == prod:          # mu_i never decreases: the product stays
            break
        prod = nxt
    _NADAM_LAST[(beta1, momentum_decay)] = (step, prod)
    return float(prod)


def _make_class(spec):
    """The torch.optim drop-in of one registry entry."""
    cls = spec.optimizer_class
    hyper = ("lr", *cls._hyper_names)
    init = inspect.signature(cls.__init__).parameters
    if not all(k in init for k in hyper):
        return None        # a class that maps its own arguments (Momentum's beta): SGD covers it
    fastopt_defaults = _defaults(cls.__init__)
    if spec.torch is not None:
        tname, tkwargs = spec.torch
        tcls = getattr(torch.optim, tname, None)
        if tcls is None:
            return None
        defaults = _defaults(tcls.__init__)
        positional = _positional(tcls.__init__)
        name = tname
        twin = f"``torch.optim.{tname}``"
    else:
        defaults = {k: fastopt_defaults.get(k, required) for k in hyper}
        positional = tuple(k for k in _positional(cls.__init__) if k in defaults)
        name = cls.__name__
        twin = None
    # fastopt hyperparameters the twin does not have: the rule that makes it PyTorch's
    fixed = {k: spec.example.get(k, fastopt_defaults.get(k)) for k in cls._hyper_names
             if k not in defaults}
    doc = (f"{twin}, stepped by :class:`fastopt.{cls.__name__}` (zero copy).\n\n"
           f"    Same arguments and defaults as {twin}" if twin else
           f":class:`fastopt.{cls.__name__}` as a ``torch.optim.Optimizer`` (zero copy).\n\n"
           f"    Same arguments and defaults as :class:`fastopt.{cls.__name__}`")
    doc += (", plus ``state_dtype`` and ``min_lowbit_size`` (see\n"
            "    :class:`FastoptTorchOptimizer` and :mod:`fastopt.integrations.torch`).\n")
    if fixed:
        doc += "    Fixed to PyTorch's rule: " + ", ".join(f"``{k}={v!r}``" for k, v in fixed.items()) + ".\n"
    return type(name, (FastoptTorchOptimizer,),
                {"__doc__": "    " + doc, "__module__": __name__, "_spec": spec,
                 "_torch_defaults": defaults, "_fixed": fixed,
                  "_positional": positional, "__qualname__": name})


#: The drop-in classes, by name (one per registry entry that has a class of its own).
CLASSES = {}
for _spec in _registry.SPECS.values():
    _cls = _make_class(_spec)
    if _cls is not None and _cls.__name__ not in CLASSES:
        CLASSES[_cls.__name__] = _cls
        globals()[_cls.__name__] = _cls
        __all__.append(_cls.__name__)
del _spec, _cls
