"""Keyword arguments checked as Python checks them, with a hint: the closest valid name, or
what fastopt does instead of a PyTorch option it does not have.

The optimizer classes and the functional API have explicit signatures (``help()``, ``repr``
and type checkers show them); :func:`checked_keywords` wraps such a function so that an
unknown keyword raises ``TypeError`` naming the close match (``did you mean
'weight_decay'?``), as Python 3.12+ does for names but not for keyword arguments.
"""

import difflib
import functools
import inspect

__all__ = ["checked_keywords", "unexpected_keyword", "TORCH_ONLY"]

_FUSED = ("fastopt always runs its fused kernels (one multi-tensor call per dtype); "
          "impl='reference' runs the NumPy reference instead")

#: PyTorch optimizer options fastopt does not have, and what to do instead.  They are
#: refused whatever their value (also PyTorch's no-op defaults, ``amsgrad=False``,
#: ``foreach=None``): a signature that lists only what the function does stays true.
TORCH_ONLY = {
    "amsgrad": "AMSGrad is its own optimizer in fastopt: fastopt.AMSGrad (also "
               "fastopt.Adam(..., amsgrad=True)), functional.amsgrad, kernels.amsgrad_step",
    "maximize": "fastopt minimizes (as maximize=False): negate the gradients to maximize",
    "foreach": _FUSED,
    "fused": _FUSED,
    "capturable": "fastopt runs on the CPU: there are no CUDA graphs to capture",
    "differentiable": "fastopt's steps are not differentiable (there is no autograd)",
    "centered": "fastopt's RMSprop has no centered variant (it behaves as centered=False)",
    "decoupled_weight_decay": "use AdamW (fastopt.AdamW, or functional.adamw) for decoupled "
                              "weight decay",
}

#: Options of some PyTorch optimizers that are a different thing (or absent) in fastopt's
#: class of the same name.
TORCH_ONLY_FOR = {
    "RMSprop": {"momentum": "fastopt's RMSprop has no momentum (it behaves as momentum=0)"},
    "rmsprop": {"momentum": "fastopt's RMSprop has no momentum (it behaves as momentum=0)"},
}


def unexpected_keyword(where, name, allowed, owner=None):
    """The message for keyword ``name`` that ``where`` (e.g. ``"AdamW()"``) does not take.

    Parameters
    ----------
    where : str
        The callable, as the message names it.
    name : str
        The keyword given.
    allowed : iterable of str
        The keywords it takes.
    owner : str, optional
        The class or function name, for options only some PyTorch optimizers have.
    """
    foreign = {**TORCH_ONLY, **TORCH_ONLY_FOR.get(owner, {})}
    if name in foreign:
        return (f"{where} got the PyTorch option {name!r}, which fastopt does not support: "
                f"{foreign[name]}")
    close = difflib.get_close_matches(name, sorted(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where} got an unexpected keyword argument {name!r}{hint}"


def keyword_names(fn):
    """The names ``fn`` takes by keyword, or None when it takes ``**kwargs``."""
    names = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return frozenset(names)


def checked_keywords(fn, where=None, owner=None):
    """``fn`` with its keyword arguments checked first (a TypeError with a hint).

    The wrapper keeps ``fn``'s signature (``inspect.signature``, ``help()``) and docstring.
    A function that takes ``**kwargs`` is returned as it is (whatever it passes them to
    checks them).
    """
    allowed = keyword_names(fn)
    if allowed is None or getattr(fn, "__wrapped__", None) is not None:
        return fn
    where = where or f"{fn.__name__}()"
    owner = owner or fn.__name__
    allowed_self = allowed - {"self"}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for k in kwargs:
            if k not in allowed:
                raise TypeError(unexpected_keyword(where, k, allowed_self, owner))
        return fn(*args, **kwargs)

    return wrapper
