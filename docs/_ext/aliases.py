"""Resolve Python cross-references to the name under which an object is documented.

fastopt documents each object once, under the name users import it by (``fastopt.Adam``,
``fastopt.distributed.batch_part``), while docstrings may name it where it is defined
(``fastopt.optim.Optimizer.set_epoch``, ``fastopt.distributed.sharding.node_threads``) or
relative to their module (``:mod:`.minibatch```).  When Sphinx finds no target for a
``py`` reference, this extension imports what the reference names, finds the documented
name of the same object and links there.  A reference to something that does not exist
stays unresolved, so ``-n -W`` still fails the build on it.
"""

import dataclasses
import importlib

from docutils import nodes
from sphinx.util.nodes import make_refnode


def _import(name):
    """The object a dotted name designates, or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _page_object(refdoc):
    """The object an autosummary page (``api/generated/<name>``) documents, or None."""
    if "/generated/" not in refdoc:
        return None
    return _import(refdoc.rsplit("/", 1)[1])


def _candidates(target, modname, clsname, refdoc):
    """Dotted names a reference may mean, as Python would look it up from its context: the
    module and class the reference is written in, and the module the documented object of
    the page is defined in (its docstring's own namespace)."""
    target = target.lstrip("~")
    modules = [modname] if modname else []
    page = _page_object(refdoc)
    home = getattr(page, "__module__", None) or getattr(page, "__name__", None)
    if isinstance(home, str) and home not in modules:
        modules.append(home)
    if target.startswith("."):                     # relative to the current package/module
        out = []
        for m in modules:
            out += [f"{m}{target}", f"{m.rsplit('.', 1)[0]}{target}"]
        return out
    out = []
    for m in modules:
        if clsname:
            out.append(f"{m}.{clsname}.{target}")
        out.append(f"{m}.{target}")
    out.append(target)
    return out


def _documented(env):
    """id(object) -> (documented name, is a module), built once per build."""
    cache = env.app.__dict__.setdefault("_fastopt_documented", {})
    if cache:
        return cache
    domain = env.get_domain("py")
    for name in domain.modules:
        obj = _import(name)
        if obj is not None:
            cache.setdefault(id(obj), (name, True))
    for name, entry in domain.objects.items():
        if entry.aliased:
            continue
        obj = _import(name)
        if obj is not None and not isinstance(obj, (int, float, str, bool, tuple)):
            cache.setdefault(id(obj), (name, False))
    return cache


def _link(env, app, fromdoc, name, is_module, contnode):
    domain = env.get_domain("py")
    entry = domain.modules.get(name) if is_module else domain.objects.get(name)
    if entry is None:
        return None
    return make_refnode(app.builder, fromdoc, entry.docname, entry.node_id, contnode, name)


def missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target, modname, clsname = node["reftarget"], node.get("py:module"), node.get("py:class")
    documented = _documented(env)
    for name in _candidates(target, modname, clsname, node["refdoc"]):
        obj = _import(name)
        if obj is None:
            continue
        hit = documented.get(id(obj))
        if hit is not None:
            return _link(env, app, node["refdoc"], *hit, contnode)
        if isinstance(obj, (int, float, str, bool, tuple)):
            # a constant (no identity to go by): the documented constant of the same name
            # that is the same object (``QBLOCK`` re-exported by fastopt.kernels.lowbit)
            last = name.rsplit(".", 1)[-1]
            domain = env.get_domain("py")
            for other in domain.objects:
                if other.rsplit(".", 1)[-1] == last and _import(other) is obj:
                    return _link(env, app, node["refdoc"], other, False, contnode)
    # A method that scikit-learn adds to fastopt's estimators: scikit-learn documents it.
    if target.startswith("fastopt.integrations.sklearn."):
        obj = _import(target)
        if obj is not None and "sklearn" in (getattr(obj, "__module__", "") or ""):
            cls = target.split(".")[3]
            url = ("https://scikit-learn.org/stable/modules/generated/"
                   f"sklearn.neural_network.{cls}.html")
            ref = nodes.reference("", "", internal=False, refuri=url)
            ref += contnode
            return ref
    # An attribute of a documented class that autodoc does not list (a dataclass field, or an
    # attribute described in the class's "Parameters"/"Attributes" section): link to the class.
    if node.get("reftype") == "attr" and modname and clsname:
        cls = _import(f"{modname}.{clsname}")
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        if cls is not None and (target in fields or hasattr(cls, target)):
            hit = documented.get(id(cls))
            if hit is not None:
                return _link(env, app, node["refdoc"], *hit, contnode)
    return None


def setup(app):
    app.connect("missing-reference", missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
