"""The parameter set: the one place that reads the container a user gave an optimizer.

An optimizer takes its parameters as a :class:`fastopt.FlatParams`, a list or tuple of
arrays, a dict of arrays, or PyTorch-style parameter groups (a list of dicts with
``"params"``), and, for a FlatParams or a dict, groups by name (``groups=``).
:class:`ParamSet` turns any of them into what the layers below and beside the optimizer
need: the arrays in order, a name for each (for messages), the dict keys, the FlatParams,
the kind of container, the group of each entry, a layout signature that compares two
processes' models, and the way back to the user's shape (:meth:`ParamSet.pack`,
:meth:`ParamSet.unpack`).
"""

from collections.abc import Mapping, Sequence

import numpy as np

from ..kernels import _check
from ..nn.flat import FlatParams

__all__ = ["ParamSet"]


class ParamSet(Sequence):
    """The parameters of an optimizer, read once from the container the user gave.

    A read-only sequence of the arrays the optimizer updates, in order (for a
    FlatParams, its one ``data`` buffer).

    Parameters
    ----------
    params : FlatParams, list, tuple or dict of ndarray, or list of dict
        The model: a :class:`fastopt.FlatParams`; C-contiguous, writable float32 or
        float64 arrays, each its own memory, in a list, tuple or dict; or PyTorch-style
        parameter groups ``[{"params": [W1, W2]}, {"params": [b], "lr": 0.01}]``.
    groups : list of dict, optional
        Groups by name, for a FlatParams or a dict: ``[{"params": ["b1", "b2"],
        "weight_decay": 0.0}, ...]``; names not listed form group 0.

    Attributes
    ----------
    names : list of str
        A name for each array, for messages: ``"params[0]"``, ``"params['W']"``,
        ``"params.data"``.
    keys : list or None
        The dict's keys, in order (None unless ``kind == "dict"``).
    flat : FlatParams or None
        The FlatParams (None unless ``kind == "flat"``).
    kind : {"flat", "list", "dict"}
        The container (a tuple, and PyTorch-style groups, are "list").
    entries : list
        What groups refer to: the names of a FlatParams, the dict's keys, or the arrays.
    entry_groups : list of int
        The group index of each entry (each name of a FlatParams, each array otherwise).
    param_groups : list of dict
        The groups as an optimizer exposes them: ``{"params": [...], **overrides}`` each,
        group 0 first (for ``groups=``, the entries no group names).

    Raises
    ------
    TypeError, ValueError
        A container, array or group that is not one of the above, named.

    Examples
    --------
    >>> import numpy as np
    >>> from fastopt.optim.params import ParamSet
    >>> ps = ParamSet({"W": np.zeros((2, 3)), "b": np.zeros(3, np.float32)})
    >>> ps.kind, ps.keys, ps.names
    ('dict', ['W', 'b'], ["params['W']", "params['b']"])
    >>> ps.layout()
    ('dict', [('W', 'float64', (2, 3)), ('b', 'float32', (3,))])
    >>> ps.pack([1, 2])
    {'W': 1, 'b': 2}
    """

    __slots__ = ("_arrays", "names", "keys", "flat", "kind", "entries", "entry_groups",
                 "param_groups")

    def __init__(self, params, groups=None):
        self.flat = None
        self.keys = None
        torch_groups = (isinstance(params, (list, tuple)) and len(params) > 0
                        and all(isinstance(x, Mapping) for x in params))
        if torch_groups:
            if groups is not None:
                raise TypeError("give the parameter groups either as params (a list of dicts) "
                                "or as groups=, not both")
            arrays, pgroup, param_groups = [], [], []
            for k, grp in enumerate(params):
                ps = grp.get("params")
                if isinstance(ps, np.ndarray) or not isinstance(ps, (list, tuple)):
                    raise TypeError(f"params[{k}]['params'] must be a list of arrays, "
                                    f"got {type(ps).__name__}")
                arrays += list(ps)
                pgroup += [k] * len(ps)
                param_groups.append({**grp, "params": list(ps)})
            names = [f"params[{i}]" for i in range(len(arrays))]
            self.kind = "list"
        elif isinstance(params, FlatParams):
            self.flat = params
            arrays = [params.data]
            names = ["params.data"]
            self.kind = "flat"
        elif isinstance(params, Mapping):
            self.keys = list(params)
            arrays = list(params.values())
            names = [f"params[{k!r}]" for k in self.keys]
            self.kind = "dict"
        elif isinstance(params, (list, tuple)):
            arrays = list(params)
            names = [f"params[{i}]" for i in range(len(arrays))]
            self.kind = "list"
        else:
            raise TypeError("params must be a FlatParams, or a list, tuple or dict of float32 "
                            f"or float64 arrays (or a list of parameter groups: dicts with "
                            f"'params'), got {type(params).__name__}")
        for name, p in zip(names, arrays):
            _check.array(name, p, writable=True)
        _check.Extents(**dict(zip(names, arrays)))
        self._arrays = arrays
        self.names = names
        self.entries = (list(self.flat) if self.flat is not None
                        else self.keys if self.keys is not None else arrays)
        if torch_groups:
            self.entry_groups, self.param_groups = pgroup, param_groups
        else:
            self.entry_groups, self.param_groups = self._named_groups(groups)

    def _named_groups(self, groups):
        """(group index per entry, param_groups) from ``groups=`` (names)."""
        names = None if self.kind == "list" else self.entries
        if groups is None:
            return [0] * len(self.entries), [{"params": list(self.entries)}]
        if names is None:
            raise TypeError("groups= names parameters of a FlatParams or a dict; for a list of "
                            "arrays pass the groups as params: [{'params': [...], ...}, ...]")
        if isinstance(groups, Mapping) or not isinstance(groups, (list, tuple)):
            raise TypeError(f"groups must be a list of dicts, got {type(groups).__name__}")
        where = {}
        for k, grp in enumerate(groups, 1):
            if not isinstance(grp, Mapping) or "params" not in grp:
                raise TypeError(f"groups[{k - 1}] must be a dict with 'params': a list of names")
            members = grp["params"]
            if isinstance(members, str) or not isinstance(members, (list, tuple)):
                raise TypeError(f"groups[{k - 1}]['params'] must be a list of names")
            for name in members:
                if name not in names:
                    raise ValueError(f"groups[{k - 1}] names {name!r}, which params does not have")
                if name in where:
                    raise ValueError(f"{name!r} is in two groups")
                where[name] = k
        rest = [n for n in names if n not in where]
        param_groups = [{"params": rest}] + [{**g, "params": list(g["params"])} for g in groups]
        return [where.get(n, 0) for n in names], param_groups

    # ------------------------------------------------------------ the sequence of arrays
    def __len__(self):
        return len(self._arrays)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._arrays[i]
        return self._arrays[i]

    @property
    def arrays(self):
        """The arrays, in order (a new list)."""
        return list(self._arrays)

    @property
    def f32(self):
        """True when any array is float32 (or there are none): hyperparameters must then keep
        their meaning in float32."""
        return any(_check.is_f32(p) for p in self._arrays) or not self._arrays

    def layout(self):
        """A signature of the model's layout, equal for equal layouts in any process.

        Returns
        -------
        tuple
            ``(kind, [(key, dtype, shape), ...])``: per name of a FlatParams (each with
            the FlatParams' dtype), per dict key, or per list position (the key is the
            index); ``dtype`` a string, ``shape`` a tuple of ints.
        """
        if self.flat is not None:
            dt = str(self.flat.dtype)
            return ("flat", [(k, dt, tuple(s)) for k, s in self.flat.shapes.items()])
        keys = self.keys if self.keys is not None else range(len(self._arrays))
        return (self.kind, [(k, str(p.dtype), tuple(p.shape))
                            for k, p in zip(keys, self._arrays)])

    # ------------------------------------------------------------ the user's shape
    def pack(self, values):
        """``values`` (one per array, in order) in the user's shape: a dict keyed like
        ``params`` for a dict, else a list."""
        values = list(values)
        if len(values) != len(self._arrays):
            raise ValueError(f"expected {len(self._arrays)} values (one per array), "
                             f"got {len(values)}")
        return dict(zip(self.keys, values)) if self.keys is not None else values

    def unpack(self, values, what="grads"):
        """A user's list or dict matching ``params`` (e.g. the gradients) as a list in order.

        Only the container is checked (the dict's keys, the list's length), not the arrays.

        Parameters
        ----------
        values : list, tuple or dict
            One value per array: a dict with the keys of ``params`` when it is a dict,
            else a list or tuple.
        what : str
            Its name in messages.

        Raises
        ------
        TypeError
            ``values`` is not the right kind of container.
        ValueError
            It has other keys, or another length.
        """
        if self.keys is not None:
            if not isinstance(values, Mapping):
                raise TypeError(f"{what} must be a dict with the keys of params, "
                                f"got {type(values).__name__}")
            if len(values) != len(self.keys) or any(k not in values for k in self.keys):
                missing = [k for k in self.keys if k not in values]
                extra = [k for k in values if k not in self.keys]
                raise ValueError(f"{what} must have the keys of params: missing {missing}, "
                                 f"unexpected {extra}")
            return [values[k] for k in self.keys]
        if isinstance(values, np.ndarray) or not isinstance(values, (list, tuple)):
            raise TypeError(f"{what} must be a list of arrays, got {type(values).__name__}")
        if len(values) != len(self._arrays):
            raise ValueError(f"{what} has {len(values)} arrays, expected {len(self._arrays)} "
                             "like params")
        return values

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def __repr__(self):
        if self.kind == "flat":
            return f"ParamSet({self.flat!r})"
        return f"ParamSet({len(self)} arrays ({self.kind}))"
