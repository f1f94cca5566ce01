"""The documentation: its examples run and say what they print, every public name has an API
page, nothing points at a file that is not there, and the docstring examples run."""

import contextlib
import doctest
import importlib
import importlib.util
import inspect
import io
import pkgutil
import re
import warnings

import numpy as np
import pytest

from docs_examples import DOCS, ROOT, check_output, doc_pages, readme_blocks, rst_blocks


def _check_dtype_comments(block, namespace, where):
    """``name = ...  # float64 ...``: after the block ran, ``name`` (an array, or a dict, list
    or tuple of arrays) has the dtype its comment says."""
    claims = re.findall(r"^(\w+)\b[^#\n]*=[^#\n]*#\s*(float32|float64)\b", block, re.M)
    for name, dtype in claims:
        value = namespace[name]
        arrays = (value.values() if isinstance(value, dict)
                  else value if isinstance(value, (list, tuple)) else [value])
        # (an ndarray, or anything with a dtype: a FlatParams)
        assert all(np.dtype(getattr(a, "dtype", None) or np.asarray(a).dtype) == dtype
                   for a in arrays), f"{where}: {name} is not {dtype}"
    return len(claims)


# ---------------------------------------------------------------------------- README

def test_readme_examples_run_and_learn(capsys):
    blocks = [b for b in readme_blocks() if "import fastopt" in b]
    assert blocks, "README lost its example"
    for i, block in enumerate(blocks):
        namespace = {}
        exec(compile(block, f"README.md block {i}", "exec"), namespace)
        _check_dtype_comments(block, namespace, f"README.md block {i}")
        out = capsys.readouterr().out.split()
        if "print(" in block:  # the training loop prints its accuracy
            assert float(out[-1]) >= 0.98, f"block {i}"


def test_readme_is_a_landing_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert 'pip install -e ".[test]" && pytest' in text       # .ci/run runs it
    assert "docs/" in text


# ---------------------------------------------------------------------------- docs/ examples

# Blocks that need mpiexec run in tests/test_distributed.py (test_docs_example_under_mpiexec).
_MPI_MARK = "DataParallel("
# Blocks that need an optional library skip without it.
_OPTIONAL = {"autograd": "autograd", "sklearn": "sklearn", "fastopt.integrations.sklearn": "sklearn",
             "fastopt.integrations.autograd": "autograd", "torch": "torch", "thinc": "thinc",
             "fastopt.integrations.torch": "torch", "fastopt.integrations.thinc": "thinc"}

PAGES = [p for p in doc_pages() if rst_blocks(p)]


def test_docs_have_examples():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    for page in ("getting-started.rst", "guide/optimizers.rst", "guide/functional.rst",
                 "guide/lowprecision.rst", "guide/batchnorm.rst", "guide/toolkit.rst",
                 "guide/integrations.rst", "guide/distributed.rst", "guide/threads.rst",
                 "guide/checkpoints.rst"):
        assert page in names, f"docs/{page} has no python example"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_docs_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # examples that write files write them here
    namespace = {}
    ran = 0
    for i, block in enumerate(rst_blocks(page)):
        if _MPI_MARK in block:
            continue
        for module, dist in _OPTIONAL.items():
            if re.search(rf"^\s*(from|import) {re.escape(module)}\b", block, re.M):
                pytest.importorskip(dist)
        where = f"{page.relative_to(ROOT)} block {i}"
        out = io.StringIO()
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. scikit-learn's ConvergenceWarning for a short fit
            exec(compile(block, where, "exec"), namespace)
        check_output(block, out.getvalue(), where)
        _check_dtype_comments(block, namespace, where)
        ran += 1
    assert ran or all(_MPI_MARK in b for b in rst_blocks(page))


def test_sklearn_example_is_float64_and_agrees_with_sklearn_as_quoted(capsys):
    # Before: its comment said float64, but X / 16.0 of the float32 digits is float32.
    SkMLPClassifier = pytest.importorskip("sklearn.neural_network").MLPClassifier

    (block,) = [b for b in rst_blocks(DOCS / "guide" / "integrations.rst")
                if "fastopt.integrations.sklearn import MLPClassifier" in b]
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "docs/guide/integrations.rst scikit-learn block", "exec"), namespace)
    assert _check_dtype_comments(block, namespace, "scikit-learn block") == 1
    assert namespace["load_digits"]()[0].dtype == np.float32    # "X: float32, as fastopt ships"
    assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(0.95, abs=0.01)
    clf, X, y = namespace["clf"], namespace["X"], namespace["y"]
    assert all(c.dtype == np.float64 for c in clf.coefs_ + clf.intercepts_)

    def rel(ours, theirs):
        return max(np.max(np.abs(a - b)) / np.max(np.abs(b))
                   for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_))

    params = dict(hidden_layer_sizes=(128,), max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SkMLPClassifier(**params).fit(X[::2], y[::2])
        assert rel(clf, theirs) < 1e-14                     # "about 1e-15 relative in float64"
        X32 = X.astype(np.float32)                          # "5e-4 after the example's 50 epochs"
        ours32 = type(clf)(**params).fit(X32[::2], y[::2])
        theirs32 = SkMLPClassifier(**params).fit(X32[::2], y[::2])
    assert ours32.coefs_[0].dtype == np.float32
    assert 1e-5 < rel(ours32, theirs32) < 2e-3


def test_dtype_comment_checker_catches_a_wrong_claim():
    # the control: a comment that says float64 of a float32 array fails
    block = "X = np.zeros(3, np.float32) / 16.0  # float64\n"
    with pytest.raises(AssertionError):
        _check_dtype_comments(block, {"X": np.zeros(3, np.float32)}, "control")


def test_example_checker_catches_a_wrong_claim():
    # the control: a block whose comment misstates its output fails the check
    block = "print(1 + 1)  # -> 3\n"
    with pytest.raises(AssertionError):
        check_output(block, "2\n", "control")
    with pytest.raises(AssertionError):
        check_output("print(0.5)  # accuracy, about 0.99\n", "0.5\n", "control")
    check_output(block.replace("3", "2"), "2\n", "control")


# ---------------------------------------------------------------------------- API reference

def _public_modules():
    """Every importable module of fastopt whose dotted path has no component starting with
    '_', except the command line (documented by its --help, docs/guide/cli.rst)."""
    import fastopt

    names = ["fastopt"] + [m.name for m in pkgutil.walk_packages(fastopt.__path__, "fastopt.")
                           if not any(p.startswith("_") for p in m.name.split("."))]
    mods = []
    for name in names:
        if name == "fastopt.cli" or name.startswith("fastopt.cli."):
            continue
        try:
            mods.append(importlib.import_module(name))
        except ImportError:       # an integration whose library is not installed
            continue
    return mods


def _public_names(mod):
    """``__all__``, or the functions and classes the module defines without a leading '_'."""
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    return [n for n, o in vars(mod).items() if not n.startswith("_")
            and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == mod.__name__]


_DIRECTIVES = re.compile(r"^\s*\.\. (autosummary|currentmodule|automodule|autoclass|autofunction"
                         r"|autodata|py:module|module|data)::\s*(\S*)", re.M)


def _documented():
    """{dotted name} of everything docs/api/*.rst (and the design notes) give a page or entry."""
    names = set()
    pages = [p for p in (DOCS / "api").rglob("*.rst") if "generated" not in p.parts]  # (stubs)
    for path in sorted(pages) + [DOCS / "design.rst"]:
        lines = path.read_text().splitlines()
        module, i = None, 0
        while i < len(lines):
            m = _DIRECTIVES.match(lines[i])
            i += 1
            if not m:
                continue
            kind, arg = m.groups()
            if kind in ("currentmodule", "py:module", "module"):
                module = arg
                names.add(arg)
            elif kind == "automodule":
                names.add(arg)
            elif kind in ("autoclass", "autofunction", "autodata", "data"):
                names.add(arg if "." in arg and arg.startswith("fastopt") else f"{module}.{arg}")
            elif kind == "autosummary":
                while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
                    entry = lines[i].strip()
                    i += 1
                    if entry and not entry.startswith(":"):
                        names.add(entry if entry.startswith("fastopt.") else f"{module}.{entry}")
    return names


def _missing_library(name):
    """The optional library (an extra) the documented ``name`` needs and this process lacks."""
    for module, dist in _OPTIONAL.items():
        if module.startswith("fastopt.") and (name == module or name.startswith(module + ".")):
            if importlib.util.find_spec(dist) is None:
                return dist
    return None


def _documented_here():
    """The documented names this process can import (integrations need their library)."""
    return {n for n in _documented() if _missing_library(n) is None}


def _resolve(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def test_every_public_name_has_an_api_page():
    documented = _documented_here()
    ids = {id(_resolve(n)) for n in documented}
    missing = []
    for mod in _public_modules():
        if mod.__name__ not in documented and id(mod) not in ids:
            missing.append(mod.__name__)
        for name in _public_names(mod):
            obj = getattr(mod, name)
            qualified = f"{mod.__name__}.{name}"
            simple = isinstance(obj, (int, float, str, bool, tuple, dict, list))
            if qualified in documented or (not simple and id(obj) in ids):
                continue
            # a constant re-exported elsewhere: documented under any module that exports it
            if simple and any(n.endswith(f".{name}") and _resolve(n) is obj for n in documented):
                continue
            missing.append(qualified)
    assert not missing, ("public names without an API page (add them to an autosummary list "
                         f"in docs/api/*.rst): {missing}")


def test_api_checker_sees_a_missing_name(monkeypatch):
    # the control: a public name nobody documented is reported
    import fastopt.data

    monkeypatch.setattr(fastopt.data, "__all__", [*fastopt.data.__all__, "undocumented_thing"],
                        raising=True)
    monkeypatch.setattr(fastopt.data, "undocumented_thing", object(), raising=False)
    with pytest.raises(AssertionError, match="fastopt.data.undocumented_thing"):
        test_every_public_name_has_an_api_page()


def test_api_pages_name_only_what_exists():
    for name in _documented_here():
        _resolve(name)


# ---------------------------------------------------------------------------- links and files

def _repository_texts():
    tracked = [ROOT / "README.md", *doc_pages(), *ROOT.glob("fastopt/**/*.py"),
               *ROOT.glob("src/**/*.pyx.tp"), *ROOT.glob("src/**/*.h"), *ROOT.glob("src/**/*.pxi"),
               *ROOT.glob("benchmarks/*.py"), ROOT / "pyproject.toml", ROOT / "setup.py"]
    return [p for p in tracked if p.is_file()]


def test_nothing_points_at_a_file_outside_the_repository():
    # the seed note fastopt started from is not in the repository: docs/conventions.rst
    # carries its formulas, and nothing may send a reader to the file itself
    for path in _repository_texts():
        text = path.read_text()
        assert "methods-to-speed-up-training" not in text, path
        assert "/work/" not in text, path


def test_readme_links_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [l for l in links if not re.match(r"[a-z]+://", l)]
    assert local, "the README links into the docs"
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_paths_the_docs_name_exist():
    # a file or folder of the repository named in the README or the docs (`src/...`,
    # `tests/test_layout.py`, `benchmarks/...`) is there; "fastopt/format" is an entry of a
    # checkpoint file, not a path; docs/_build/ is what the docs build writes (not in a clone)
    pattern = re.compile(r"(?<![\w/.:-])((?:fastopt|src|tests|benchmarks|docs|\.ci)/[\w./*<>-]+)")
    missing = []
    for path in [ROOT / "README.md", *doc_pages()]:
        for m in pattern.finditer(path.read_text()):
            name = m.group(1).rstrip(".,)")
            if (any(c in name for c in "*<>") or name == "fastopt/format"
                    or name.startswith("docs/_build/")):
                continue
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing


def test_docs_toctree_covers_every_page():
    text = "\n".join(p.read_text() for p in doc_pages())
    for page in doc_pages():
        rel = page.relative_to(DOCS).with_suffix("").as_posix()
        if rel == "index":
            continue
        stem = page.stem
        # (a toctree may list a folder's pages by a glob, "optimizers/*")
        folder = re.escape(rel.rsplit("/", 1)[0].split("/")[-1]) + r"/\*" if "/" in rel else "$^"
        assert re.search(rf"^\s+({re.escape(rel)}|{re.escape(stem)}|{folder})\s*$", text, re.M), \
            f"docs/{rel}.rst is in no toctree"


# ---------------------------------------------------------------------------- docstrings

@pytest.mark.parametrize("module", ["fastopt.kernels", "fastopt.nn.flat", "fastopt.optim.algorithms", "fastopt.optim.optimizer",
                                    "fastopt.nn.layers", "fastopt.nn.init",
                                    "fastopt.train.schedules", "fastopt.data.minibatch",
                                    "fastopt.train.tuning", "fastopt.data.preprocessing",
                                    "fastopt.train.checkpoint", "fastopt.train.loop"])
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_the_quick_loop_is_documented_and_leaves_out_the_system_tests():
    import test_cli_train
    import test_distributed
    import test_stress

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^markers = \[\s*"slow: ', pyproject, re.M)     # registered
    addopts = re.search(r'^addopts = "(.*)"$', pyproject, re.M).group(1)
    assert "-m" not in addopts.split()                  # plain pytest (CI) runs everything
    assert 'pytest -m "not slow"' in (ROOT / "README.md").read_text()
    for module in (test_stress, test_distributed, test_cli_train):
        assert module.pytestmark.name == "slow", module.__name__


@pytest.mark.slow
def test_sync_batchnorm_example_under_mpiexec_prints_one_process_accuracy(tmp_path):
    # docs/guide/distributed.rst's synchronized batch-norm script (an MPI block: the loop
    # above skips it): 2 ranks print what the same script prints in one process
    import subprocess
    import sys

    from test_distributed import MPIEXEC, launch, mpi4py

    if mpi4py is None or MPIEXEC is None:
        pytest.skip("needs mpi4py and mpiexec: pip install '.[mpi]'")
    block = next(b for b in rst_blocks(DOCS / "guide" / "distributed.rst")
                 if "sync_batchnorm(" in b)
    script = tmp_path / "example.py"
    script.write_text(block)
    one = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    _, out, _ = launch(2, ["runpy", "run_path", str(script)], module="fastopt_run_path")
    assert out.split()[-1] == one.stdout.split()[-1], (out, one.stdout)
    assert float(one.stdout.split()[-1]) == pytest.approx(0.97, abs=0.01)     # "about 0.97"
