"""The optimizer base class: hyperparameters, learning rate and schedule, parameter groups,
and the step (clipping, the non-finite guard, then the compiled plan).

The algorithms are in :mod:`fastopt.optim.algorithms`; the compiled calls in
:mod:`fastopt.optim.plan`; the state buffers, state dicts and old pickles in
:mod:`fastopt.optim.state`, each buffer in its :mod:`~fastopt.optim.formats` format.

Each optimizer takes a :class:`fastopt.FlatParams` (``step()`` reads its ``grad``
buffer), or a list, tuple or dict of float32/float64 arrays (``step(grads)`` takes the
matching list or dict of gradients).  Arrays of one dtype are updated by one compiled
call over a table of chunks built at construction (a "multi-tensor" kernel, as
PyTorch's ``foreach``/``fused`` optimizers); arrays of both dtypes make two calls.  Every
element is computed by the same code as the flat path, so a list of arrays and the same
values in one FlatParams give the same bits, for any thread count.
``impl="reference"`` runs the NumPy reference (:mod:`fastopt.reference`) instead, array
by array, for comparison.
"""

import itertools
import math
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ..kernels import _check
from ..kernels._attrs import Checked
from .. import kernels as _kernels
from .. import reference as _reference
from ..nn.flat import FlatParams
from ..runtime.threads import get_num_threads
from . import formats, lowstate
from . import state as _state
from ._keywords import checked_keywords, unexpected_keyword
from .params import ParamSet
from .plan import Plan, split
from .registry import SPECS, register

__all__ = ["Optimizer"]

_IMPLS = {"fused": _kernels, "reference": _reference}

#: The options every optimizer's constructor takes (documented once, in _OPTIONS_DOC).
_OPTION_NAMES = ("impl", "max_grad_norm", "skip_nonfinite", "groups", "state_dtype",
                 "min_lowbit_size", "seed")


class _Members(list):
    """A parameter group's ``params``: a list that refuses changes (the compiled plan maps
    each array to its group, once)."""

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("a parameter group's 'params' cannot change (the optimizer's compiled "
                        "plan maps each array to its group): to regroup, build another "
                        "optimizer, opt.like(params, groups=...)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return _Members, (list(self),)


def _same_members(group, members):
    """``group`` (a param_groups entry) still lists ``members`` (arrays, or names)."""
    now = group.get("params") if isinstance(group, Mapping) else None
    if not isinstance(now, (list, tuple)) or len(now) != len(members):
        return False
    if all(map(operator.is_, now, members)):
        return True
    return all(x is y or (type(x) is str and type(y) is str and x == y)
               for x, y in zip(now, members))


def _reference_stats(grads):
    """(sum of squares in float64, all finite) of ``grads``, in NumPy."""
    total, finite = 0.0, True
    for g in grads:
        g64 = g.astype(np.float64).ravel()
        total += float(np.dot(g64, g64))
        finite = finite and bool(np.isfinite(g).all())
    return total, finite

Params = FlatParams | Sequence[np.ndarray] | Mapping[str, np.ndarray]
LR = float | Callable[[int], float]
Impl = Literal["fused", "reference"]
Groups = Sequence[Mapping[str, Any]]


def _scheduled_lr(schedule, epoch, f32=True):
    """``schedule(epoch)``, checked; any failure of the schedule is a ValueError."""
    try:
        lr = schedule(epoch)
    except Exception as e:  # noqa: BLE001 - a user's schedule may raise anything
        raise ValueError(f"the lr schedule {schedule!r} failed at epoch {epoch}: "
                         f"{type(e).__name__}: {e}") from e
    return _check.at_least(f"lr (schedule at epoch {epoch})", lr, 0.0, float32=f32)


def _plain(value):
    """A checked hyperparameter as a plain Python bool, float or tuple of floats."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (tuple, list)):
        return tuple(float(v) for v in value)
    return float(value)


def _constructor_names(row, pairs, fixed):
    """A class's hyperparameters after ``lr``: the row's, a pair's parts under its name,
    without those the class fixes."""
    names = []
    for h in row.hyper:
        if h.name == "lr":
            continue
        pair = next((p for p, parts in pairs.items() if h.name in parts), None)
        name = pair or h.name
        if h.name not in fixed and name not in names:
            names.append(name)
    return tuple(names)


class Optimizer(Checked):
    """Base class of the optimizers.

    A subclass declares ``_spec = fastopt.optim.registry.spec(name, kernel, ...)`` (its entry
    of :data:`SPECS`; defining the class registers it), and, when its constructor's
    hyperparameters are not exactly the kernel's (:data:`fastopt.specs.KERNELS`, after
    ``lr``), ``_pairs`` (a constructor argument that holds several of them:
    ``{"betas": ("beta1", "beta2")}``) and ``_fixed`` (those the class sets itself:
    ``{"decoupled_weight_decay": True}``).  Its hyperparameters (``_hyper_names``), their
    checks, the kernel's arguments and the state buffers follow from the kernel's row.

    Parameters
    ----------
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays, each writable and its own memory
        (``step(grads)`` then takes the matching list, or dict with the same keys, of
        C-contiguous gradients of the same dtypes and shapes).  Updated in place.
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).
%(options)s

    Attributes
    ----------
    state : dict of str to list (or dict) of ndarray
        The state buffers (like each parameter, zeros at the start), named as in
        :data:`fastopt.optim.SPECS`: a list in the order of ``params``, or a dict keyed
        like ``params`` when it is a dict.  With ``state_dtype`` "bfloat16", "int8" or "float8", the
        large arrays' buffers are :class:`~fastopt.optim.lowstate.BFloat16State` or
        :class:`~fastopt.optim.lowstate.Int8State` objects (``np.asarray(s)`` gives their
        float32 values); for a FlatParams the list then has one entry per run of
        consecutive names kept in one format and group (``state_runs`` gives their slices).
    state_nbytes : int
        Bytes of optimizer state.
    params : ParamSet
        The parameters, read-only (see :class:`~fastopt.optim.params.ParamSet`).
    param_groups : list of dict
        Each group's ``params`` and its own hyperparameters: the values may change between
        steps (checked at the next step), the groups and their members may not.

    Notes
    -----
    Every keyword is checked: an unknown one raises TypeError naming the closest valid
    one (``did you mean 'weight_decay'?``), and PyTorch options fastopt does not have
    (``amsgrad``, ``foreach``, ``fused``, ``maximize``, ``capturable``,
    ``differentiable``; RMSprop's ``momentum`` and ``centered``) are refused as such,
    whatever their value.  The hyperparameters, ``lr``, ``impl``, ``max_grad_norm``,
    ``skip_nonfinite`` and ``seed`` may be set between steps and are checked as the
    constructor checks them (a rejected value changes nothing); ``state_dtype`` and
    ``min_lowbit_size`` are fixed (:meth:`like` builds another optimizer); any other
    public name raises AttributeError (a subclass declares its own public attributes as
    class annotations).

    One optimizer may be stepped from several threads: the steps take turns (a lock),
    each a whole step.  Pickling, :func:`copy.deepcopy` and :func:`copy.copy` give an
    optimizer with its own lock, state and compiled tables.  Unpickled from read-only
    buffers (pickle protocol 5 out of band, as Ray, Dask and shared memory pass arrays),
    the state, which is the optimizer's own, is copied to writable memory; read-only
    parameters are refused by :meth:`step` (use :meth:`like` over writable copies and
    :meth:`load_state_dict`).
    """

    _kernel = None
    _spec = None
    _hyper_names = ()
    _pairs: dict = {}
    _fixed: dict = {}

    # public attributes set in __init__ (a subclass declares its own the same way: a class
    # annotation; setting any other public name raises AttributeError, so that a misspelled
    # ``opt.weight_deacy = 0.5`` does not pass silently)
    skipped_steps: int
    grad_norm: float | None
    param_groups: list[dict[str, Any]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        document(cls)
        if "_spec" in cls.__dict__:       # an optimizer of the registry: its plumbing from the table
            cls._spec = register(cls._spec, cls)
            cls._kernel = cls._spec.name
            cls._hyper_names = _constructor_names(cls._spec.row, cls._pairs, cls._fixed)
        for name in cls._hyper_names:       # public attributes (Checked)
            cls.__annotations__.setdefault(name, Any)
        # unknown keywords of a subclass's constructor raise TypeError with a hint
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = checked_keywords(init, f"{cls.__name__}()", cls.__name__)

    def __init__(self, params: Params, lr: LR, *, impl: Impl = "fused",
                 max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                 groups: Sequence[Mapping[str, Any]] | None = None,
                 state_dtype: str = "float32", min_lowbit_size: int = 4096, seed: int = 0,
                 **hyper) -> None:
        # (the base class takes the subclass's hyperparameters by name: exactly _hyper_names)
        unknown = [k for k in hyper if k not in self._hyper_names]
        if unknown:
            allowed = ("params", "lr", *_OPTION_NAMES, *self._hyper_names)
            raise TypeError(unexpected_keyword(f"{type(self).__name__}()", unknown[0], allowed,
                                               type(self).__name__))
        missing = [k for k in self._hyper_names if k not in hyper]
        if missing:
            raise TypeError(f"{type(self).__name__}() needs the hyperparameters {missing}")
        object.__setattr__(self, "_lock", threading.Lock())
        self.impl = impl
        self.max_grad_norm = max_grad_norm
        self.clip_per_param = None
        self.skip_nonfinite = skip_nonfinite
        self._state_dtype = lowstate.state_format(state_dtype)
        self._format = formats.get(self._state_dtype)
        if self._format.compact and not self._spec.row.lowbit:
            raise ValueError(f"state_dtype={self._state_dtype!r}: {type(self).__name__} keeps "
                             f"its state in float32 (its kernel {self._spec.row.name!r} has no "
                             "low-precision variant)")
        self._min_lowbit_size = _check.integer("min_lowbit_size", min_lowbit_size, 0)
        self.seed = seed
        self.skipped_steps = 0
        self.grad_norm = None
        self._set_params(params, groups)
        self._validate_hyper(hyper)
        for k, v in hyper.items():
            object.__setattr__(self, k, _plain(v))
        self._epoch = 1
        self.lr = lr
        self._step = 0
        self._checked_groups = None
        self._group_hyper()               # checks every group's overrides
        self._states = self._new_states()
        self._plan_calls()
        self._build()

    # ------------------------------------------------------------ options, checked when set
    @property
    def impl(self) -> str:
        """"fused" (the compiled kernels) or "reference" (the NumPy reference); settable."""
        return self._impl

    @impl.setter
    def impl(self, value):
        if not isinstance(value, str) or value not in _IMPLS:
            raise ValueError(f"impl must be one of {sorted(_IMPLS)}, got {value!r}")
        self._impl = value

    @property
    def max_grad_norm(self) -> float | None:
        """The global gradient norm each step clips to (a finite float > 0), or None; settable."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = (None if value is None
                               else _check.positive("max_grad_norm", value))

    @property
    def clip_per_param(self) -> float | None:
        """Clip each parameter's gradient to this norm on its own (a finite float > 0), or
        None (the default); settable.

        Each step, before the global ``max_grad_norm`` and the non-finite guard: a gradient
        (for a FlatParams, each name's slice) whose norm exceeds it is scaled by
        ``clip_per_param / (norm + 1e-6)`` (PyTorch's ``clip_grad_norm_`` rule, per
        parameter; thinc's ``grad_clip``).  The gradient arrays are not changed: a clipped
        one is scaled into a buffer the optimizer keeps (allocated at its first clip), which
        the step then reads (one more pass over the clipped arrays only).
        """
        return self.__dict__.get("_clip_per_param")   # (None in optimizers pickled before it)

    @clip_per_param.setter
    def clip_per_param(self, value):
        self._clip_per_param = (None if value is None
                                else _check.positive("clip_per_param", value))

    def _clip_each(self, grads):
        """``grads`` with each one whose norm exceeds ``clip_per_param`` replaced by a scaled
        copy (in buffers kept between steps)."""
        limit = self.clip_per_param
        scratch = self.__dict__.setdefault("_clip_scratch", {})
        if self.flat is not None:
            g = self.flat.grad
            _check.array("params.grad", g, writable=False, like=self.flat.data,
                         like_name="params.data")
            slices = [self.flat.slice(n) for n in self.flat]
            scales = [self._clip_scale(g[sl], limit) for sl in slices]
            if all(c is None for c in scales):
                return grads
            buf = scratch.get("flat")
            if buf is None or buf.shape != g.shape:
                buf = scratch["flat"] = np.empty_like(g)
            np.copyto(buf, g)
            for sl, c in zip(slices, scales):
                if c is not None:
                    np.multiply(buf[sl], buf.dtype.type(c), out=buf[sl])
            return [buf] if self._runs is None else [buf[r] for r, _, _ in self._runs]
        out = list(grads)
        for i, (g, p, name) in enumerate(zip(grads, self._params, self._names)):
            _check.array(name.replace("params", "grads", 1), g, writable=False, like=p,
                         like_name=name)
            c = self._clip_scale(g, limit)
            if c is not None:
                buf = scratch.get(i)
                if buf is None or buf.shape != g.shape or buf.dtype != g.dtype:
                    buf = scratch[i] = np.empty_like(g)
                np.multiply(g, g.dtype.type(c), out=buf)
                out[i] = buf
        return out

    @staticmethod
    def _clip_scale(g, limit):
        """The factor that clips ``g`` to norm ``limit`` (PyTorch's rule), or None."""
        norm = _kernels.global_norm(g) if g.size else 0.0
        return limit / (norm + 1e-6) if norm > limit else None

    @property
    def skip_nonfinite(self) -> bool:
        """Skip steps whose gradients hold a NaN or an infinity (True or False); settable."""
        return self._skip_nonfinite

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        self._skip_nonfinite = _check.flag("skip_nonfinite", value)

    @property
    def seed(self) -> int:
        """The bfloat16 rounding stream (an int in [0, 2**64)); settable."""
        return self._seed

    @seed.setter
    def seed(self, value):
        self._seed = _check.integer("seed", value, 0, 2**64 - 1)

    @property
    def state_dtype(self) -> str:
        """How the state is stored: "float32", "bfloat16", "int8" or "float8" (fixed at construction)."""
        return self._state_dtype

    @state_dtype.setter
    def state_dtype(self, value):
        raise AttributeError("state_dtype is fixed at construction (the state buffers are "
                             "allocated in it): build another optimizer, "
                             "opt.like(params, state_dtype=...)")

    @property
    def min_lowbit_size(self) -> int:
        """Arrays smaller than this keep float32 state (fixed at construction)."""
        return self._min_lowbit_size

    @min_lowbit_size.setter
    def min_lowbit_size(self, value):
        raise AttributeError("min_lowbit_size is fixed at construction (it decides which "
                             "buffers are low-precision): build another optimizer, "
                             "opt.like(params, min_lowbit_size=...)")

    # ------------------------------------------------------------ parameters
    def _set_params(self, params, groups):
        self._pset = ps = ParamSet(params, groups)
        arrays, names = ps.arrays, ps.names
        self.param_groups = [{**g, "params": _Members(g["params"])} for g in ps.param_groups]
        # each group's members, as built (param_groups may change values, not membership)
        self._members = [g["params"] for g in self.param_groups]
        pgroup = ps.entry_groups
        # the compiled calls' tensors: the arrays, or runs of a FlatParams (one group, and
        # with low-precision state one format: small arrays keep float32 state)
        lowbit = self._format.compact
        if self.flat is not None and (len(self.param_groups) > 1 or lowbit):
            self._runs = self._flat_runs(pgroup)
            self._tensors = [self.flat.data[r] for r, _, _ in self._runs]
            self._tensor_group = [k for _, k, _ in self._runs]
            big = [b for _, _, b in self._runs]
        else:
            self._runs = None
            self._tensors = self._params
            self._tensor_group = pgroup if self.flat is None else [0]
            big = [lowbit and p.size >= self.min_lowbit_size for p in arrays]
        if lowbit:
            wide = [n for n, p in zip(names, arrays) if not _check.is_f32(p)]
            if wide:
                raise ValueError(f"state_dtype={self.state_dtype!r} keeps the state of float32 "
                                 f"parameters; {wide[0]} is {arrays[names.index(wide[0])].dtype} "
                                 "(use state_dtype='float32' or float32 parameters)")
        self._tensor_lowbit = big
        # global index of each tensor's first element (the bfloat16 rounding hash)
        self._offsets = list(itertools.accumulate((t.size for t in self._tensors[:-1]), initial=0))
        # hyperparameters must keep their meaning in the narrowest dtype
        self._f32 = ps.f32

    # the container, as the ParamSet read it
    @property
    def params(self) -> ParamSet:
        """The parameters (a :class:`~fastopt.optim.params.ParamSet`): a read-only sequence
        of the arrays updated, in order, with ``.keys``, ``.names``, ``.flat``, ``.kind``
        and ``.layout()``."""
        return self._pset

    @property
    def flat(self):
        """The FlatParams this optimizer updates, or None (arrays)."""
        return self._pset.flat

    @property
    def _params(self):
        return self._pset._arrays

    @property
    def _names(self):
        return self._pset.names

    @property
    def _keys(self):
        return self._pset.keys

    def _plan_calls(self):
        """Which compiled call each tensor goes to: by dtype, and by state format (when the
        optimizer has state)."""
        compact = self._tensor_lowbit if self._state_names else [False] * len(self._tensors)
        self._call_index = split(self._tensors, compact)

    def _state_formats(self):
        """The state format of each entry of a state buffer's list (``_states[name]``)."""
        return _state.entry_formats(self._format, self._tensor_lowbit, len(self._params))

    def _new_states(self):
        """New state: per parameter, or with a compact format per compiled tensor; each buffer
        at its initial value (the kernel row's ``init``: zero, or a hyperparameter's value)."""
        fmts = self._state_formats()
        like = self._tensors if self._format.compact else self._params
        states = _state.zeros(self._state_names, fmts, like, self._spec.nonnegative)
        for b in self._spec.row.state:
            value = self._initial_value(b)
            if b.name in states and value != 0:
                _state.fill(states[b.name], fmts, value)
        return states

    def _initial_value(self, buffer):
        """A state buffer's value before the first step: the row's number, or the optimizer's
        hyperparameter it names (which a parameter group may not override: the state of
        every group is made at once)."""
        if not isinstance(buffer.init, str):
            return buffer.init
        value = getattr(self, buffer.init)
        for i, g in enumerate(self.param_groups):
            if g.get(buffer.init, value) != value:
                raise ValueError(f"param_groups[{i}]: {buffer.init} is the optimizer's (the "
                                 f"initial value of {buffer.name}), not a group's")
        return value

    def _flat_runs(self, pgroup):
        """(slice of the flat buffer, group, low-precision state) for each run of consecutive
        names of one group and one state format."""
        runs = []
        lowbit = self._format.compact
        for name, k in zip(self.flat, pgroup):
            sl = self.flat.slice(name)
            big = lowbit and sl.stop - sl.start >= self.min_lowbit_size
            if runs and runs[-1][1:] == (k, big) and runs[-1][0].stop == sl.start:
                runs[-1] = (slice(runs[-1][0].start, sl.stop), k, big)
            else:
                runs.append((sl, k, big))
        return runs

    @property
    def state_runs(self):
        """For a FlatParams: the slice of the flat buffer each state entry covers."""
        if self.flat is None:
            raise TypeError("state_runs describes an optimizer built on a FlatParams")
        if self._runs is None or not self._format.compact:
            return [slice(0, self.flat.data.size)]
        return [r for r, _, _ in self._runs]

    def _tensor_states(self):
        """The state buffers per compiled tensor (views of the flat state for runs)."""
        if self._runs is None or self._format.compact:
            return self._states
        return {n: [bufs[0][r] for r, _, _ in self._runs] for n, bufs in self._states.items()}

    @property
    def state_nbytes(self):
        """Bytes of optimizer state (for int8 and float8 state, the codes and the absmax)."""
        return _state.nbytes(self._states, self._state_formats())

    def _build(self):
        """The compiled plan: its calls' tables and the aliasing guard."""
        guarded = dict(zip(self._names, self._params))
        for n, i, f, e in _state.rows(self._states, self._state_formats()):
            for j, b in enumerate(f.rows(e)):
                guarded[f"{n}[{i}]" + (f".{j}" if f.compact else "")] = b
        flat_grads = None
        if self.flat is not None:
            flat_grads = ([self.flat.grad] if self._runs is None
                          else [self.flat.grad[r] for r, _, _ in self._runs])
        self._plan = Plan(self._call_index, self._format, self._tensors, self._tensor_group,
                          self._offsets, self._tensor_states(), guarded, flat_grads)

    @property
    def _calls(self):
        return self._plan.calls

    @property
    def _state_names(self):
        """The state buffers: the kernel's, or none when no group uses them (SGD without
        momentum: its row's ``optional`` condition holds for no group)."""
        row = self._spec.row
        if row.optional is None:
            return self._spec.state
        base = self.hyper()
        for g in (base, *self.param_groups):
            h = {**base, **{k: v for k, v in g.items() if k in base}}
            if _check.uses_state(row, dict(zip(row.hyper_names, self._kernel_values(h)))):
                return self._spec.state
        return ()

    @property
    def state(self):
        """The state buffers: name -> list of arrays (a dict keyed like ``params`` for a dict)."""
        if self._keys is None:
            return self._states
        return {n: dict(zip(self._keys, bufs)) for n, bufs in self._states.items()}

    # ------------------------------------------------------------ hyperparameters
    @property
    def lr(self):
        """The learning rate in use (settable: a number, or a schedule ``f(epoch) -> lr``)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if callable(value):
            self._lr = _scheduled_lr(value, self._epoch, self._f32)
            self._schedule = value
        else:
            self._lr = _check.at_least("lr", value, 0.0, float32=self._f32)
            self._schedule = None

    @property
    def schedule(self):
        """The learning-rate schedule (see :mod:`fastopt.schedules`), or None for a fixed lr."""
        return self._schedule

    @property
    def epoch(self):
        """The epoch number the schedule was last evaluated at (starts at 1)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (from 1): with a schedule, ``lr`` becomes ``schedule(epoch)``.

        A schedule that raises, or returns a bad learning rate, raises
        ValueError and changes nothing.
        """
        epoch = _check.integer("epoch", epoch, 0, _check.C_LLONG_MAX)
        if self._schedule is not None:
            self._lr = _scheduled_lr(self._schedule, epoch, self._f32)
        self._epoch = epoch

    @property
    def step_count(self) -> int:
        """Number of steps taken."""
        return self._step

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters, as a dict of plain Python values."""
        return {"lr": self.lr, **{k: getattr(self, k) for k in self._hyper_names}}

    # ------------------------------------------------------------ stepping
    def _grad_list(self, grads):
        """The gradients as a list in the order of params (not checked yet)."""
        if self.flat is not None:
            if grads is not None:
                raise TypeError("this optimizer reads the FlatParams' grad buffer: call step() "
                                "with no argument")
            return self._plan.flat_grads
        if grads is None:
            raise TypeError("step(grads) needs the gradients matching params")
        return self._pset.unpack(grads, "grads")

    def _check_grads(self, grads):
        """The full checks, with errors naming the array (the fast path found a problem)."""
        for n, i, f, e in _state.rows(self._states, self._state_formats()):
            for b in f.rows(e):
                if not b.flags.writeable:
                    raise ValueError(f"state {n}[{i}] is read-only, but the step updates "
                                     "it in place")
        if self.flat is not None:
            _check.array("params.data", self.flat.data, writable=True)
            _check.array("params.grad", self.flat.grad, writable=False, like=self.flat.data,
                         like_name="params.data")
            return
        for i, (p, g, name) in enumerate(zip(self._params, grads, self._names)):
            _check.array(name, p, writable=True)
            gi = name.replace("params", "grads", 1)
            _check.array(gi, g, writable=False, like=p, like_name=name)
            shared = self._plan.extents.overlapping(g)
            if shared is not None:
                raise ValueError(f"{gi} and {shared} share memory; "
                                 "each buffer must be its own array")

    def _bind(self, grads):
        """Check the gradients and point the plan at them; changes nothing else."""
        if self._runs is not None and not self._flat_writable():
            self._check_grads(grads)    # (the tables hold views, which keep their own flags)
        self._plan.bind(grads, self._check_grads)

    def step(self, grads: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None, *,
             max_grad_norm: float | None = None,
             grad_stats: tuple[float, bool] | None = None) -> None:
        """Update every parameter in place from its gradient.

        Everything is checked before the first parameter is updated: a rejected
        call changes no parameter, no state and not ``step_count``.

        With ``max_grad_norm`` (here, or the optimizer's), the gradients are clipped to that
        global norm inside the step (``g * max_norm / (norm + 1e-6)`` when the norm is
        larger, PyTorch's ``clip_grad_norm_`` rule): one read-only pass computes the norm,
        then the update reads each gradient once, scaled.  The gradient arrays themselves
        are not changed.  With ``skip_nonfinite`` a step whose gradients hold a NaN or an
        infinity changes nothing (the step count does not advance; ``skipped_steps`` counts
        it).  ``grad_norm`` holds the norm the last step computed (None without either).

        ``grad_stats=(sum_of_squares, finite)`` gives the clipping and the guard the
        statistics of a larger gradient this step's gradients are part of, instead of their
        own (ZeRO-1: each rank updates a slice, with the whole gradient's norm); the clip
        factor is then computed from it by the same rule.
        """
        # One step at a time: the compiled tables hold the gradients bound last, so two
        # threads stepping one optimizer (Hogwild style) take turns.
        with self._lock:
            self._locked_step(grads, max_grad_norm, grad_stats)

    def _flat_writable(self):
        """The FlatParams' buffer and the state arrays are writable (the views in the
        tables of runs do not see a flag set later on the arrays they view)."""
        return (self.flat.data.flags.writeable
                and all(b.flags.writeable
                        for _, _, f, e in _state.rows(self._states, self._state_formats())
                        for b in f.rows(e)))

    def _locked_step(self, grads, max_grad_norm, grad_stats=None):
        grads = given = self._grad_list(grads)
        if self.clip_per_param is not None:
            grads = self._clip_each(grads)
        if max_grad_norm is None:
            max_norm = self.max_grad_norm
        else:
            max_norm = _check.positive("max_grad_norm", max_grad_norm)
        if grad_stats is not None:
            if (not isinstance(grad_stats, tuple) or len(grad_stats) != 2
                    or not isinstance(grad_stats[0], (int, float, np.floating))
                    or isinstance(grad_stats[0], bool)
                    or not isinstance(grad_stats[1], (bool, np.bool_))
                    or not grad_stats[0] >= 0 and not math.isnan(grad_stats[0])):
                raise TypeError("grad_stats must be a tuple (sum of squares: a float >= 0, "
                                f"finite: a bool), got {grad_stats!r}")
        t = self._step + 1
        kwargs = [self._kernel_kwargs(t, h) for h in self._group_hyper()]
        seed = _check.integer("seed", self._seed, 0, 2**64 - 1)
        fused = self.impl == "fused"
        if fused:
            if self._calls:
                self._bind(grads)
        else:
            self._check_grads(grads)
        if self.flat is None:
            self._last_grads = list(given)      # what zero_grad() zeroes (not clipped copies)
        gscale = 1.0
        if max_norm is not None or self.skip_nonfinite:
            if grad_stats is not None:
                sumsq, finite = float(grad_stats[0]), bool(grad_stats[1])
            elif fused:
                sumsq, finite = self._plan.grad_stats(grads)
            else:
                sumsq, finite = _reference_stats(grads)
            norm = math.sqrt(sumsq)
            self.grad_norm = norm
            if self.skip_nonfinite and not finite:
                self.skipped_steps += 1
                return
            if max_norm is not None and norm > max_norm:
                gscale = max_norm / (norm + 1e-6)
        kernel = self._spec.row
        if fused:
            groups = [tuple(kw[k] for k in kernel.hyper_names) for kw in kwargs]
            self._plan.run(kernel, groups, t, gscale, get_num_threads(), seed)
        else:
            if gscale != 1.0:   # clip first, in the gradient's dtype (as the kernels do)
                # (every array, before the first update; out= keeps a 0-d array an array)
                grads = [np.multiply(g, g.dtype.type(gscale), out=np.empty_like(g))
                         for g in grads]
            bufs = list(self._tensor_states().values())
            fmts = _state.tensor_formats(self._format, self._tensor_lowbit)
            for i, (p, g) in enumerate(zip(self._tensors, grads)):
                state = [b[i] for b in bufs] or [None]
                kw = kwargs[self._tensor_group[i]]
                fmts[i].run_reference(kernel, p, g, state, kw, t, self._offsets[i], seed)
        self._step = t

    def _group_hyper(self):
        """Each parameter group's hyperparameters: the optimizer's, with the group's own values.

        A group's values (``opt.param_groups[k]["weight_decay"] = 0.0``) are checked when they
        change, as the constructor checks them.
        """
        groups = self.param_groups
        members = self._members
        if type(groups) is not list or len(groups) != len(members):
            self._refuse_regrouping()
        for g, m in zip(groups, members):
            if type(g) is not dict or g.get("params") is not m:
                # (the member lists refuse changes; a group given a list of its own members
                # again gets the original back)
                if not _same_members(g, m):
                    self._refuse_regrouping()
                g["params"] = m
        base = self.hyper()
        if len(groups) == 1 and len(groups[0]) == 1:
            return [base]                  # no groups: the fast path
        snapshot = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        if snapshot != self._checked_groups:
            allowed = {"lr", *self._hyper_names}
            for k, ov in enumerate(snapshot):
                unknown = set(ov) - allowed
                if unknown:
                    raise ValueError(f"param_groups[{k}] has unknown hyperparameters "
                                     f"{sorted(unknown)}; a group may set {sorted(allowed)}")
                if "lr" in ov:
                    if callable(ov["lr"]):
                        raise TypeError(f"param_groups[{k}]['lr'] must be a number (a schedule "
                                        "is the optimizer's lr, for the groups without their own)")
                    _check.at_least(f"param_groups[{k}]['lr']", ov["lr"], 0.0, float32=self._f32)
                self._validate_hyper({**base, **ov}, loading=True)
            self._checked_groups = snapshot
        return [{**base, **{k: _plain(v) for k, v in ov.items()}} for ov in snapshot]

    # ------------------------------------------------------------ the same optimizer elsewhere
    def _config(self) -> dict[str, Any]:
        """The constructor's keyword arguments that rebuild this optimizer's configuration
        (not its parameters, groups or progress): ``type(self)(params, **self._config())``.

        A subclass whose constructor takes other arguments overrides this.
        """
        return {"lr": self._schedule if self._schedule is not None else self._lr,
                **{k: getattr(self, k) for k in self._hyper_names},
                "impl": self.impl, "max_grad_norm": self.max_grad_norm,
                "skip_nonfinite": self.skip_nonfinite, "state_dtype": self.state_dtype,
                "min_lowbit_size": self.min_lowbit_size, "seed": self.seed}

    def _carried_groups(self, params):
        """(params, groups=) that give ``params`` this optimizer's parameter groups, or raise."""
        overrides = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        if len(overrides) == 1 and not overrides[0]:
            return params, None
        ps = self._pset
        if ps.kind == "list":
            # PyTorch-style groups: the same positions in a list of as many arrays
            if (isinstance(params, (list, tuple)) and len(params) == len(ps)
                    and not any(isinstance(x, Mapping) for x in params)):
                where = ps.entry_groups
                return [{"params": [p for p, k in zip(params, where) if k == j], **ov}
                        for j, ov in enumerate(overrides)], None
        elif isinstance(params, (FlatParams, Mapping)):
            names = set(params)
            if all(n in names for g in self.param_groups[1:] for n in g["params"]):
                return params, [{**ov, "params": list(g["params"])}
                                for g, ov in zip(self.param_groups[1:], overrides[1:])]
        raise ValueError(f"like(): this optimizer's {len(overrides)} parameter groups cannot be "
                         f"carried over to {type(params).__name__} params (groups name "
                         "entries of a FlatParams or dict, or positions of a list of as many "
                         "arrays): pass groups= (None for none), or PyTorch-style groups as "
                         "params")

    def like(self, params: Params, **overrides) -> "Optimizer":
        """A new optimizer of this class and configuration over other parameters, fresh state.

        The new optimizer has this one's hyperparameters, learning rate (or schedule),
        options (``impl``, ``max_grad_norm``, ``skip_nonfinite``, ``state_dtype``,
        ``min_lowbit_size``, ``seed``) and parameter groups with their current values,
        except what ``overrides`` changes; its state is zeros, at step 0 and epoch 1
        (:meth:`load_state_dict` of this one's :meth:`state_dict` carries the progress
        over when the layouts match).

        Parameters
        ----------
        params : FlatParams, or list, tuple or dict of ndarray, or list of dict
            The new parameters, as for the constructor.
        **overrides
            Constructor keyword arguments to change (``lr=0.1``, ``impl="reference"``,
            ``groups=None``, ...).  Parameter groups are carried over when ``params``
            allows it: by name for a FlatParams or a dict that has every grouped name, by
            position for a list of as many arrays as this optimizer's PyTorch-style
            groups; otherwise pass ``groups=`` (None for none) or groups as ``params``.

        Returns
        -------
        Optimizer
            A new ``type(self)``.

        Raises
        ------
        TypeError
            An override that is not a constructor keyword, or bad parameters.
        ValueError
            A bad value, or groups that cannot be carried over.

        Examples
        --------
        >>> import numpy as np, fastopt
        >>> opt = fastopt.AdamW([np.zeros(3)], lr=0.01, weight_decay=0.1)
        >>> twin = opt.like([np.ones(3)], lr=0.02)
        >>> type(twin).__name__, twin.lr, twin.weight_decay, twin.step_count
        ('AdamW', 0.02, 0.1, 0)
        """
        config = self._config()
        allowed = (*config, "groups")
        for k in overrides:
            if k not in allowed:
                raise TypeError(unexpected_keyword(f"{type(self).__name__}.like()", k, allowed))
        if "groups" not in overrides:
            params, groups = self._carried_groups(params)
            if groups is not None:
                config["groups"] = groups
        config.update(overrides)
        new = type(self)(params, **config)
        new.clip_per_param = self.clip_per_param
        if "groups" not in overrides and new._pset.kind != "list":
            # group 0 (the names no group lists) may hold overrides set since construction
            ov0 = {k: v for k, v in self.param_groups[0].items() if k != "params"}
            if ov0:
                new.param_groups[0].update(ov0)
                new._group_hyper()
        return new

    def _refuse_regrouping(self):
        groups, members = self.param_groups, self._members
        if not isinstance(groups, list):
            what = f"it is a {type(groups).__name__}, not the list of dicts it was"
        elif len(groups) != len(members):
            what = f"it has {len(groups)} groups, not {len(members)}"
        else:
            k = next(k for k, (g, m) in enumerate(zip(groups, members))
                     if not _same_members(g, m))
            what = f"the 'params' of group {k} changed"
        raise ValueError(f"param_groups must keep the groups and members this optimizer was "
                         f"built with (its compiled plan maps each array to its group): "
                         f"{what}.  Change a group's hyperparameters in place "
                         "(opt.param_groups[k]['lr'] = ...); to regroup, build another "
                         "optimizer: opt.like(params, groups=...)")

    def zero_grad(self, grads: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None
                  ) -> None:
        """Set the gradients to zero, in place, as ``torch.optim.Optimizer.zero_grad()`` does.

        Parameters
        ----------
        grads : list or dict of ndarray, optional
            For list or dict parameters: the gradient arrays to zero (matching ``params``, as
            ``step(grads)`` takes them).  Default: the arrays the last :meth:`step` read (a
            loop that accumulates into the same arrays zeroes them as a PyTorch loop does);
            before the first step there is nothing to zero.  For a FlatParams: its ``grad``
            buffer (give no argument).

        Raises
        ------
        TypeError, ValueError
            ``grads`` does not match ``params``, or a gradient array is read-only or shares
            memory with a parameter (checked for every array before the first is zeroed: a
            refused call changes nothing).

        Notes
        -----
        Unlike PyTorch's default ``set_to_none=True``, fastopt does not own the gradients
        of list and dict parameters: the arrays stay yours and are filled with zeros.  The
        optimizer keeps references to the gradients of the last step (released when the
        next step binds others).
        """
        if self.flat is not None:
            if grads is not None:
                raise TypeError("zero_grad() of an optimizer over a FlatParams zeroes its grad "
                                "buffer: call it with no argument")
            _check.array("params.grad", self.flat.grad, writable=True)
            self.flat.grad.fill(0.0)
            return
        if grads is None:
            arrays = getattr(self, "_last_grads", None) or []
        else:
            arrays = self._pset.unpack(grads, "grads")
        names = [n.replace("params", "grads", 1) for n in self._names]
        for name, p, g in zip(names, self._params, arrays):
            _check.array(name, g, writable=True, like=p, like_name=name.replace("grads", "params", 1))
        if grads is not None:          # (zero_grad(params) by mistake must not wipe the model)
            extents = _check.Extents(**dict(zip(self._names, self._params)))
            for name, g in zip(names, arrays):
                shared = extents.overlapping(g)
                if shared is not None:
                    raise ValueError(f"{name} and {shared} share memory: zero_grad() zeroes "
                                     "gradients, not parameters")
        for g in arrays:
            g.fill(0)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies) of the step count, hyperparameters and state buffers.

        ``state`` maps each buffer name to a list of arrays (in the order of ``params``),
        or to a dict keyed like ``params`` when it is a dict.  A low-precision buffer is a
        dict recording its format: ``{"format": "bfloat16", "bits": uint16 array}`` or
        ``{"format": "int8", "block": 256, "map": "signed" | "unsigned", "codes": uint8
        array, "absmax": float32 array}`` or ``{"format": "float8", "block": 256, "code":
        "e3m4" | "e4m4", "codes": uint8 array, "absmax": float32 array}``.

        Returns
        -------
        dict
            ``type`` (the class name), ``step``, ``epoch``, ``hyper`` (:meth:`hyper`),
            ``state``, ``skipped_steps``, ``groups`` (each parameter group's own
            hyperparameters, a list of dicts, group 0 first), ``state_dtype``,
            ``min_lowbit_size`` and ``seed``: everything :meth:`load_state_dict` restores
            or checks.  (State dicts of earlier versions, which left out ``groups`` when
            there were none and the last three with float32 state, load too.)
        """
        state = _state.entries(self._states, self._state_formats(), self._keys)
        groups = [{k: _plain(v) for k, v in g.items() if k != "params"}
                  for g in self.param_groups]
        return {"type": type(self).__name__, "step": self._step, "epoch": self._epoch,
                "hyper": self.hyper(), "state": state, "skipped_steps": self.skipped_steps,
                "groups": groups, "state_dtype": self.state_dtype,
                "min_lowbit_size": self.min_lowbit_size, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` in place; continuing gives the same bits as never stopping.

        All or nothing: the step count, epoch, hyperparameters, state buffers
        and, with a schedule, the learning rate at the restored epoch are all
        checked before anything changes; a bad state_dict raises ValueError or
        TypeError and leaves the optimizer as it was.
        """
        if not isinstance(state_dict, dict) or not {"type", "step", "hyper", "state"} <= set(state_dict):
            raise ValueError("state_dict must be a dict from Optimizer.state_dict()")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['type']}, not {type(self).__name__}")
        # The next step is step + 1, which must fit the kernels' step counter.
        step = _check.integer("step", state_dict["step"], 0, _check.C_LLONG_MAX - 1)
        epoch = _check.integer("epoch", state_dict.get("epoch", 1), 0, _check.C_LLONG_MAX)
        fmt = state_dict.get("state_dtype", "float32")
        if fmt != self.state_dtype:
            raise ValueError(f"state_dict holds state_dtype={fmt!r}; this optimizer keeps "
                             f"state_dtype={self.state_dtype!r}: build it with the same setting")
        if self._format.compact and "min_lowbit_size" in state_dict:
            size = _check.integer("min_lowbit_size", state_dict["min_lowbit_size"], 0)
            if size != self.min_lowbit_size:
                raise ValueError(f"state_dict holds min_lowbit_size={size}; this optimizer "
                                 f"keeps min_lowbit_size={self.min_lowbit_size}: build it "
                                 "with the same setting")
        seed = _check.integer("seed", state_dict.get("seed", self.seed), 0, 2**64 - 1)
        fmts = self._state_formats()
        reason = (f" (state_dtype={self.state_dtype!r}, min_lowbit_size="
                  f"{self.min_lowbit_size})")
        sources = _state.check_entries(state_dict["state"], self._states, fmts, self._keys,
                                       reason)
        hyper = state_dict["hyper"]
        if not isinstance(hyper, dict):
            raise ValueError(f"state_dict['hyper'] must be a dict, got {type(hyper).__name__}")
        hyper, lr = self._checked_hyper(dict(hyper), epoch)
        groups = state_dict.get("groups", [{} for _ in self.param_groups])
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, expected "
                             f"{len(self.param_groups)}")
        skipped = _check.integer("skipped_steps", state_dict.get("skipped_steps", 0), 0)
        # the groups' values, checked against the restored hyperparameters
        saved_hyper = {k: getattr(self, k) for k in self._hyper_names}
        saved_lr, saved_checked = self._lr, self._checked_groups
        saved_groups = self.param_groups
        try:
            for k, v in hyper.items():
                object.__setattr__(self, k, v)
            self._lr = lr
            self.param_groups = [{"params": g["params"], **dict(ov)}
                                 for g, ov in zip(saved_groups, groups)]
            self._checked_groups = None
            self._group_hyper()
        except Exception:
            for k, v in saved_hyper.items():
                object.__setattr__(self, k, v)
            self._lr, self._checked_groups = saved_lr, saved_checked
            self.param_groups = saved_groups
            raise
        # Everything is checked (hyperparameters, lr and groups are set): nothing can fail now.
        self.skipped_steps = skipped
        self.seed = seed
        _state.load(self._states, fmts, sources)
        self._step = step
        self._epoch = epoch

    def _checked_hyper(self, hyper, epoch):
        """(hyperparameters to set, lr at ``epoch``) from a state_dict's ``hyper``, all checked."""
        unknown = set(hyper) - {"lr", *self._hyper_names}
        if unknown:
            raise ValueError(f"state_dict has unknown hyperparameters {sorted(unknown)}")
        lr = _check.at_least("lr", hyper.pop("lr", self._lr), 0.0, float32=self._f32)
        # Re-run the constructor's checks on the merged values before changing anything.
        self._validate_hyper({**self.hyper(), **hyper}, loading=True)
        if self._schedule is not None:
            lr = _scheduled_lr(self._schedule, epoch, self._f32)  # with a schedule, lr follows the epoch
        return {k: _plain(v) for k, v in hyper.items()}, lr

    # ------------------------------------------------------------ the kernel's row
    def _kernel_values(self, h, lr=None):
        """The kernel's hyperparameters in the row's order, from the constructor's names
        ``h`` (``lr``: instead of ``h["lr"]``)."""
        values = dict(self._fixed)
        for name, parts in self._pairs.items():
            values.update(zip(parts, h[name]))
        for name in self._hyper_names:
            if name not in self._pairs:
                values[name] = h[name]
        values["lr"] = h["lr"] if lr is None else lr
        return tuple(values[n] for n in self._spec.row.hyper_names)

    def _validate_hyper(self, h, loading=False):
        """Check the hyperparameters ``h`` (the constructor's names; ``lr`` is checked
        apart) by the rules of the kernel's row; ``loading``: values set after construction,
        which may not switch the kernel's state buffers on or off."""
        row = self._spec.row
        for name, parts in self._pairs.items():
            value = h[name]
            if not isinstance(value, (tuple, list)) or len(value) != len(parts):
                what = "a pair" if len(parts) == 2 else f"a tuple of {len(parts)}"
                raise TypeError(f"{name} must be {what} ({', '.join(parts)}), got {value!r}")
        names = {part: f"{name}[{i}]" for name, parts in self._pairs.items()
                 for i, part in enumerate(parts)}
        checked = _check.hyper(row, self._kernel_values(h, lr=_check.UNCHECKED), self._f32,
                               names=names)
        if not (loading and row.optional):
            return
        used = _check.uses_state(row, dict(zip(row.hyper_names, checked)))
        states = self.__dict__.get("_states")
        for n in _check.optional_names(row):
            if used and states is not None and not set(row.state_names) <= set(states):
                raise ValueError(f"{n} cannot become non-zero: this optimizer was built "
                                 f"without {n}, so it has no {n} buffers")
            if not used and states and any(self._tensor_lowbit):
                raise ValueError(f"{n} must stay > 0 with state_dtype={self.state_dtype!r} "
                                 f"(the low-precision {n} kernels need {n} > 0)")

    def _kernel_kwargs(self, t, h):
        """The kernel's keyword arguments for step ``t`` with hyperparameters ``h`` (a dict of
        ``lr`` and the ``_hyper_names``, checked; a kernel whose constants depend on the step
        count has them checked for step ``t``)."""
        row = self._spec.row
        values = self._kernel_values(h)
        kwargs = dict(zip(row.hyper_names, values))
        if row.step:
            checked = self.__dict__.setdefault("_checked_steps", {})
            if checked.get(values, t + 1) > t:
                # (Adam's lr / (1 - beta1**t) only shrinks as t grows: one check holds for
                # later steps until the hyperparameters change, or the step count goes back)
                _check.hyper(row, values, self._f32, step=t)
                if len(checked) > 64:
                    checked.clear()
                checked[values] = t
            kwargs["step"] = t
        return kwargs

    def __setattr__(self, name, value):
        # A hyperparameter set between steps (``opt.eps = 1e-6``) is checked as the
        # constructor checks it, with the others; a bad value raises and changes nothing.
        # Options are properties that check themselves.  Any other public name must be
        # declared (Checked: a class attribute, or an annotation of the class or a base; the
        # hyperparameters are annotated by __init_subclass__): a misspelled
        # ``opt.weight_deacy = 0.5`` raises instead of training with the default.
        if name in self._hyper_names and name in self.__dict__:
            self._validate_hyper({**self.hyper(), name: value}, loading=True)
            value = _plain(value)
        super().__setattr__(name, value)

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_plan", "_tensors", "_lock", "_format", "_last_grads"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        if "_pset" not in state:
            _state.upgrade_pickle(state, _Members)
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._format = formats.get(self._state_dtype)
        ps = self._pset
        if ps.flat is not None:
            # (a FlatParams unpickled from read-only buffers has copied them)
            ps._arrays[:] = [ps.flat.data]
        # The state buffers are the optimizer's own: unpickled from read-only (out-of-band)
        # buffers, they are copied to writable memory.  The parameters are the caller's:
        # read-only ones are refused by step(), never written.
        _state.writable(self._states, self._state_formats())
        self._tensors = (self._params if self._runs is None
                         else [self.flat.data[r] for r, _, _ in self._runs])
        self._build()

    def __repr__(self):
        hyper = self.hyper()
        if self._schedule is not None:
            hyper["lr"] = self._schedule
        args = ", ".join(f"{k}={v!r}" for k, v in hyper.items())
        if self.flat is not None:
            target = "FlatParams"
        else:
            target = f"{len(self._params)} arrays" + (" (dict)" if self._keys is not None else "")
        extra = "" if self.state_dtype == "float32" else f", state_dtype={self.state_dtype!r}"
        return f"{type(self).__name__}({target}, {args}, impl={self.impl!r}{extra})"



#: The docstrings' shared parts: an optimizer class's docstring says %(params)s, %(lr)s and
#: %(options)s where they go (see :func:`document`).
_PARAMS_DOC = """\
    params : FlatParams, or list, tuple or dict of ndarray
        The model: a :class:`fastopt.FlatParams` (``step()`` reads its grad buffer), or
        C-contiguous float32 or float64 arrays (``step(grads)`` then takes the matching
        list or dict of gradients).  Updated in place.\
"""

_LR_DOC = """\
    lr : float >= 0 or callable
        The learning rate, or a schedule ``f(epoch) -> lr`` (:mod:`fastopt.schedules`).\
"""

_OPTIONS_DOC = """\
    impl : {"fused", "reference"}, default "fused"
        The compiled kernels or the NumPy reference (:mod:`fastopt.reference`).
    max_grad_norm : float > 0 or None, default None
        Clip the gradients to this global norm inside each step (see :meth:`Optimizer.step`).
    skip_nonfinite : bool, default False
        Skip, changing nothing, a step whose gradients hold a NaN or an infinity.
    groups : list of dict, optional
        Parameter groups by name, for a FlatParams or a dict: ``[{"params": ["b1", "b2"],
        "weight_decay": 0.0}, ...]``; each group sets some of the hyperparameters (``lr``
        too); names not listed use the optimizer's.  For a list of arrays, pass PyTorch-style
        groups as ``params`` instead: ``[{"params": [W1, W2]}, {"params": [b1], "lr": 0.01}]``.
    state_dtype : {"float32", "bfloat16", "int8", "float8"}, default "float32"
        How the state of float32 parameters is stored (see :mod:`fastopt.kernels.lowbit`):
        "bfloat16" with stochastic rounding (2 bytes per value), "int8" with block-wise
        dynamic quantization (1 byte per value plus one float32 per block of 256), as
        bitsandbytes' 8-bit optimizers, or "float8" with the same blocks and minifloat codes
        (e3m4 / e4m4, decoded without tables: faster than int8).  The update is computed in float32 either way.
        Needs float32 parameters.
    min_lowbit_size : int >= 0, default 4096
        Arrays (names of a FlatParams) with fewer elements keep float32 state.
    seed : int, default 0
        The bfloat16 rounding stream: the same seed gives the same bits, for any thread count.\
"""

def document(cls):
    """Fill in the shared parts of ``cls``'s docstring (%(params)s, %(lr)s, %(options)s)."""
    if cls.__doc__:   # (None under python -OO)
        cls.__doc__ = (cls.__doc__.replace("%(params)s", _PARAMS_DOC)
                       .replace("%(lr)s", _LR_DOC).replace("%(options)s", _OPTIONS_DOC))
    return cls


document(Optimizer)
