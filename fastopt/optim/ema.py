"""Weight averaging (an exponential moving average of the parameters), for any optimizer.

:class:`EMA` keeps an average of each parameter array and updates all of them in one fused
compiled pass per dtype (``ema = ema + (1 - decay) * (param - ema)``: the kernel
:func:`fastopt.kernels.ema_update` over a multi-tensor table), as thinc's ``use_averages``,
PyTorch's ``swa_utils.AveragedModel`` with an EMA or timm's ``ModelEmaV2`` do.
"""

import contextlib
from collections.abc import Callable

import numpy as np

from .._plan import MultiTensor
from ..kernels import _check
from ..runtime.dispatch import ext
from ..runtime.threads import get_num_threads
from .optimizer import Optimizer
from .params import ParamSet

__all__ = ["EMA"]


class EMA:
    """An exponential moving average of parameters, updated in one fused pass.

    Parameters
    ----------
    params : Optimizer, FlatParams, or list, tuple or dict of ndarray
        What to average: an optimizer's parameters (:attr:`Optimizer.params`), or the
        parameters themselves (C-contiguous float32/float64 arrays; a FlatParams' buffer).
    decay : float in [0, 1] or callable, default 0.999
        The weight of the old average, or a function ``f(t) -> decay`` of the update count
        ``t`` (1 at the first :meth:`update`): thinc's warm-up is
        ``lambda t: min((1 + t) / (10 + t), 0.9999)``.
    init : {"copy", "zeros"}, default "copy"
        Start from a copy of the parameters (PyTorch's ``AveragedModel``) or from zeros
        (thinc's averages).
    averages : list of ndarray, optional
        Arrays to keep the averages in (used as they are, not copied: one per parameter, of
        its shape and dtype, C-contiguous, writable, sharing no memory with the others or
        the parameters); ``init`` is then ignored.

    Attributes
    ----------
    averages : list or dict of ndarray
        The averages, in the order of the parameters (a dict keyed like them for a dict).
    num_updates : int
        Updates made (settable, an int >= 0: a schedule's ``t`` is ``num_updates + 1``).

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> from fastopt.optim import EMA
    >>> w = np.zeros(3)
    >>> opt = fastopt.SGD([w], lr=1.0)
    >>> ema = EMA(opt, decay=0.5)
    >>> opt.step([np.full(3, -2.0)])
    >>> ema.update()
    >>> ema.averages[0]
    array([1., 1., 1.])
    >>> with ema.swapped():           # evaluate with the averages
    ...     w
    array([1., 1., 1.])
    >>> w
    array([2., 2., 2.])
    """

    # a misspelled attribute (ema.decy = 0.5) raises AttributeError instead of being ignored
    __slots__ = ("_pset", "_decay", "_params", "_avgs", "_num_updates", "_tables")

    def __init__(self, params, decay: float | Callable[[int], float] = 0.999, *,
                 init: str = "copy", averages=None) -> None:
        ps = params.params if isinstance(params, Optimizer) else ParamSet(params)
        if init not in ("copy", "zeros"):
            raise ValueError(f"init must be 'copy' or 'zeros', got {init!r}")
        self._pset = ps
        self.decay = decay
        self._params = list(ps)
        if averages is None:
            self._avgs = [p.copy() if init == "copy" else np.zeros_like(p) for p in self._params]
        else:
            if not isinstance(averages, (list, tuple)) or len(averages) != len(self._params):
                raise TypeError(f"averages must be a list of {len(self._params)} arrays")
            for i, (a, p) in enumerate(zip(averages, self._params)):
                _check.array(f"averages[{i}]", a, writable=True, like=p,
                             like_name=ps.names[0] if ps.flat is not None else ps.names[i])
            _check.Extents(**{f"averages[{i}]": a for i, a in enumerate(averages)},
                           **{n: p for n, p in zip(ps.names, self._params)})
            self._avgs = list(averages)
        self.num_updates = 0
        self._tables = []
        for dtype in (np.float32, np.float64):
            ix = [i for i, p in enumerate(self._params) if p.dtype == dtype]
            if ix:
                self._tables.append(MultiTensor([[self._avgs[i] for i in ix],
                                                 [self._params[i] for i in ix]]))

    @property
    def decay(self):
        """The decay (a float in [0, 1]) or schedule ``f(t) -> decay``; settable, checked."""
        return self._decay

    @decay.setter
    def decay(self, value):
        self._decay = value if callable(value) else _check.unit_interval(
            "decay", value, closed_right=True)

    @property
    def num_updates(self):
        """Updates made (an int >= 0; settable, checked)."""
        return self._num_updates

    @num_updates.setter
    def num_updates(self, value):
        self._num_updates = _check.integer("num_updates", value, 0)

    @property
    def averages(self):
        if self._pset.kind == "dict":
            return dict(zip(self._pset.keys, self._avgs))
        return list(self._avgs)

    def update(self, decay: float | None = None) -> None:
        """Fold the current parameters into the averages (one fused pass per dtype).

        Parameters
        ----------
        decay : float in [0, 1], optional
            This update's decay, instead of :attr:`decay`.
        """
        t = self.num_updates + 1
        if decay is None:
            decay = self._decay(t) if callable(self._decay) else self._decay
            name = f"decay (schedule at update {t})" if callable(self._decay) else "decay"
        else:
            name = "decay"
        decay = _check.unit_interval(name, decay, closed_right=True)
        nt = get_num_threads()
        for mt in self._tables:
            ext._ema.ema_update_multi(mt, decay, nt)
        self.num_updates = t

    def copy_to(self, params=None) -> None:
        """Write the averages into ``params`` (default: the parameters averaged)."""
        targets = self._params if params is None else list(ParamSet(params))
        if len(targets) != len(self._avgs) or any(
                t.shape != a.shape or t.dtype != a.dtype for t, a in zip(targets, self._avgs)):
            raise ValueError("copy_to needs parameters of the averaged shapes and dtypes")
        for t, a in zip(targets, self._avgs):
            np.copyto(t, a)

    def swap(self) -> None:
        """Exchange the values of the parameters and the averages (call again to undo)."""
        for p, a in zip(self._params, self._avgs):
            tmp = p.copy()
            np.copyto(p, a)
            np.copyto(a, tmp)

    @contextlib.contextmanager
    def swapped(self):
        """A block in which the parameters hold the averages (swapped back after it)."""
        self.swap()
        try:
            yield self
        finally:
            self.swap()

    def state_dict(self) -> dict:
        """``num_updates`` and copies of the averages."""
        return {"num_updates": self.num_updates, "averages": [a.copy() for a in self._avgs]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (all checked before anything changes)."""
        n = _check.integer("num_updates", state["num_updates"], 0)
        avgs = state["averages"]
        if len(avgs) != len(self._avgs):
            raise ValueError(f"state has {len(avgs)} averages, expected {len(self._avgs)}")
        for i, (s, a) in enumerate(zip(avgs, self._avgs)):
            s = np.asarray(s)
            if s.shape != a.shape or s.dtype != a.dtype:
                raise ValueError(f"averages[{i}] has {s.dtype} {s.shape}, expected "
                                 f"{a.dtype} {a.shape}")
        for s, a in zip(avgs, self._avgs):
            np.copyto(a, s)
        self.num_updates = n
