"""Sphinx configuration for fastopt's documentation.

Build (warnings are errors, as in CI)::

    pip install ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

or ``make -C docs html``.  The API reference is generated from the numpydoc docstrings
(autodoc + autosummary + numpydoc); ``tests/test_docs.py`` checks that every public name
has an entry and runs every code example of these pages.
"""

import os
import sys
from datetime import date

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

import fastopt  # noqa: E402

project = "fastopt"
author = "the fastopt developers"
copyright = f"{date.today().year}, {author}"
version = release = fastopt.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "clihelp",           # docs/_ext/clihelp.py: .. fastopt-help:: train
    "aliases",           # docs/_ext/aliases.py: references to where an object is documented
]

# --- autodoc / autosummary / numpydoc -----------------------------------------------------
autosummary_generate = True          # one page per listed name, under api/generated/
autosummary_imported_members = False
autodoc_typehints = "none"           # the numpydoc "Parameters" sections say the types
numpydoc_show_class_members = True
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False
numpydoc_xref_param_type = False
# numpydoc's own checks that fail the build (with -W): sections it cannot parse
numpydoc_validation_checks = set()

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
}
# The build must not need the network (CI builds offline): intersphinx inventories are
# fetched only when FASTOPT_DOCS_INTERSPHINX=1.
if not os.environ.get("FASTOPT_DOCS_INTERSPHINX"):
    intersphinx_mapping = {}

default_role = "code"                # `x` in the guide is inline code, not a broken reference
nitpicky = True                      # a reference to nothing is a warning, so -W fails the build
# Outside fastopt: the build runs offline (no intersphinx inventories), so references into
# the standard library and other projects' APIs are not checked.
nitpick_ignore_regex = [
    ("py:.*", r"(copy|pickle|json|os|numpy|np|sklearn|torch|thinc|mpi4py|autograd|threadpoolctl)(\..*)?"),
]
templates_path = ["_templates"]
exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
pygments_style = "sphinx"

# --- HTML: the PyData theme, as NumPy, SciPy and pandas use -----------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fastopt {release}"
html_static_path = ["_static"]
html_css_files = ["fastopt.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_depth": 3,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# no left sidebar on the pages that are not part of a section: it would be empty
html_sidebars = {page: [] for page in ("index", "getting-started", "conventions", "performance",
                                       "design", "changelog")}
html_show_sourcelink = False


# --- docstring adjustments -------------------------------------------------------------------
def _cut_inherited_sklearn_doc(app, what, name, obj, options, lines):
    """fastopt's scikit-learn estimators append scikit-learn's own docstring, written for
    scikit-learn's Sphinx set-up (its glossary, gallery and roles): keep fastopt's part and
    point at scikit-learn's page instead."""
    marker = "scikit-learn's documentation follows."
    if what == "class" and name.startswith("fastopt.integrations.sklearn.") and marker in lines:
        base = name.rsplit(".", 1)[1]
        del lines[lines.index(marker):]
        lines += [f"The parameters, attributes and methods are scikit-learn's: see "
                  f"`sklearn.neural_network.{base} <https://scikit-learn.org/stable/modules/"
                  f"generated/sklearn.neural_network.{base}.html>`__.", ""]


def _skip_sklearn_members(app, what, name, obj, skip, options):
    """Members scikit-learn adds to its estimators (``set_fit_request``, ...), and the ones the
    PyTorch and thinc optimizers inherit from their base classes: documented there."""
    if getattr(obj, "__module__", None) and obj.__module__.startswith(("sklearn", "torch.",
                                                                       "thinc.")):
        return True
    qualname = getattr(obj, "__qualname__", "")
    if name.startswith("set_") and name.endswith("_request") and "RequestMethod" in qualname:
        return True
    return None


def setup(app):
    # before numpydoc (priority 500) parses the docstring
    app.connect("autodoc-process-docstring", _cut_inherited_sklearn_doc, priority=400)
    app.connect("autodoc-skip-member", _skip_sklearn_members)
