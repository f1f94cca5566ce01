"""Public attributes checked when set, for the classes of every layer above this one.

A class that derives from :class:`Checked` declares its public attributes: as properties
(which check a new value as the constructor checks it, or refuse it), as other class
attributes, or as class annotations.  Setting any other public name raises
AttributeError naming the closest declared one, so a misspelled ``bn.mometum = 0.5``
does not pass silently.  Names starting with ``_`` are the class's own business.
"""

import difflib

__all__ = ["Checked", "unknown_attribute", "fixed", "checked", "no_rebind"]


def _declared(cls):
    """The public names ``cls`` declares (class attributes and annotations, bases included)."""
    names = set()
    for c in cls.__mro__:
        if c is object:
            continue
        names.update(vars(c))
        names.update(getattr(c, "__annotations__", {}))
    return frozenset(n for n in names if not n.startswith("_"))


def unknown_attribute(cls, name):
    """The message for setting ``name``, which ``cls`` does not declare (with a close match)."""
    close = difflib.get_close_matches(name, sorted(_declared(cls)), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if not close and not cls.__module__.startswith("fastopt."):
        # a user's subclass: say how to declare a new attribute
        hint = (f" (a subclass of a fastopt class declares the public attributes it sets, "
                f"e.g. as a class annotation: {name}: object)")
    return f"{cls.__name__} has no attribute {name!r} to set{hint}"


class Checked:
    """Base class: setting a public attribute the class does not declare raises AttributeError."""

    __slots__ = ()

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            cls = type(self)
            declared = cls.__dict__.get("_Checked__names")
            if declared is None:
                declared = _declared(cls)
                type.__setattr__(cls, "_Checked__names", declared)
            if name not in declared:
                raise AttributeError(unknown_attribute(cls, name))
        object.__setattr__(self, name, value)


def fixed(name, doc, why, private=None):
    """A read-only property over ``self._<name>`` (or ``self.<private>``); setting it raises
    AttributeError(``why``)."""
    private = private or "_" + name

    def get(self):
        return getattr(self, private)

    def set_(self, value):
        raise AttributeError(f"{type(self).__name__}.{name} cannot be set: {why}")

    return property(get, set_, doc=doc)


def checked(name, check, doc, private=None):
    """A property over ``self._<name>`` (or ``self.<private>``); setting it stores
    ``check(name, value)``, which raises TypeError or ValueError naming ``name`` before
    anything is stored."""
    private = private or "_" + name

    def get(self):
        return getattr(self, private)

    def set_(self, value):
        setattr(self, private, check(name, value))

    return property(get, set_, doc=doc)


def no_rebind(name, doc, var, where):
    """A property over the array ``self._<name>`` that refuses rebinding (write into it instead).

    ``var`` is how the message names an instance (``"bn"``); ``where(self)`` says who else
    holds the array (e.g. "it is the view of FlatParams entry 'bn1.gamma'").
    """
    private = "_" + name

    def get(self):
        return getattr(self, private)

    def set_(self, value):
        raise AttributeError(f"{type(self).__name__}.{name} cannot be rebound ({where(self)}): "
                             f"write into it, {var}.{name}[...] = values")

    return property(get, set_, doc=doc)
