"""The house: one layer per folder, imports one way, the CLI a leaf, every module importable alone."""

import ast
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastopt

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fastopt"

# Lower layers first; a module may import its own layer and the layers below it.
LAYERS = [{"runtime", "specs", "_cpu", "_threadpool", "_plan", "_ext"}, {"kernels", "reference"}, {"optim", "nn"},
          {"data", "train"}, {"integrations", "distributed"}, {"benchmark"}, {"cli"}]


# Modules that import an optional library (an extra of pyproject.toml) at import time.
OPTIONAL = {"fastopt.integrations.autograd": "autograd", "fastopt.integrations.thinc": "thinc",
            "fastopt.integrations.torch": "torch", "fastopt.integrations.sklearn": "sklearn"}


def _modules():
    return sorted(m.name for m in pkgutil.walk_packages(fastopt.__path__, "fastopt.")
                  if not m.name.startswith("fastopt._ext.") and not m.name.endswith(".__main__"))


def _py_files():
    return sorted(p for p in PKG.rglob("*.py") if "_ext" not in p.parts)


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts), parts[-1] == "__init__"


def _imports(path):
    """Absolute names of the fastopt modules ``path`` imports (at any depth in the file)."""
    name, is_pkg = _module_name(path)
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("fastopt")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("fastopt"):
                out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def _layer(module):
    parts = module.split(".")
    if len(parts) < 2:
        return None  # fastopt itself: public names only, imported by the CLI for its version
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    return None


def test_every_module_is_placed_in_a_layer():
    unplaced = [m for m in _modules() if m != "fastopt" and _layer(m) is None]
    assert unplaced == []


@pytest.mark.parametrize("path", _py_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    name, _ = _module_name(path)
    own = _layer(name)
    if own is None:
        return
    upward = [m for m in _imports(path) if (_layer(m) or 0) > own]
    assert upward == [], f"{name} (layer {own}) imports higher layers"


def test_nothing_outside_cli_imports_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in _py_files()
                 if "cli" not in p.relative_to(PKG).parts[:1]
                 and any(m == "fastopt.cli" or m.startswith("fastopt.cli.") for m in _imports(p))]
    assert offenders == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # The scanner must catch what it is there to catch (a test that cannot fail is a defect).
    fake = tmp_path / "fastopt" / "kernels" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..cli import main\nimport fastopt.optim\nfrom . import _check\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = _imports(fake)
    finally:
        ROOT = saved
    assert [m for m in found if _layer(m) > _layer("fastopt.kernels")] == [
        "fastopt.cli", "fastopt.cli.main", "fastopt.optim"]


@pytest.mark.slow
@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_alone(module):
    # A fresh interpreter per module: an import cycle fails here whatever was imported first.
    # An integration needs its framework (an optional extra): without it, it skips.
    if module in OPTIONAL:
        pytest.importorskip(OPTIONAL[module])
    p = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_version_option():
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "--version"], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"fastopt {fastopt.__version__}"


@pytest.mark.slow
def test_info_imports_only_what_it_prints():
    code = ("import sys; from fastopt.cli import main; main(['info']); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('fastopt'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    loaded = set(p.stdout.splitlines()[-1].split())
    assert "fastopt.cli" in loaded  # (the check sees the modules the command loaded)
    heavy = {m for m in loaded if m.startswith(("fastopt.cli.train", "fastopt.cli.bench",
                                                "fastopt.benchmark", "fastopt.nn.models"))}
    assert heavy == set()


@pytest.mark.slow
def test_python_m_cli_runs_the_package_main_once():
    # -m fastopt.cli runs cli/__main__.py, which calls fastopt.cli.main: the CLI module itself is
    # imported once, under its own name, never also as __main__.
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "fastopt.cli", "info"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line]
    assert imported.count("fastopt.cli") == 1
    main_src = (PKG / "cli" / "__main__.py").read_text()
    assert "def main" not in main_src and "from fastopt.cli import main" in main_src


def test_every_cli_option_has_help_and_shows_its_default():
    from fastopt.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest == "help":
                continue
            assert action.help, f"fastopt {name} {action.option_strings} has no help"
            if action.default not in (None, False):
                text = " ".join(p.format_help().split())
                assert re.search(rf"default: {re.escape(str(action.default))}", text), \
                    f"fastopt {name} {action.option_strings}: default not shown"


# ------------------------------------------------------------------ seams, not privates

# Objects named like an optimizer: opt, optimizer, self._opt, base_opt, shard_opts, ...
_OPTIMIZER_NAME = re.compile(r"(?:^|_)(?:opt|optim|optimizer)s?$")


def _optimizer_private_reads(source):
    """``(line, code)`` of every private attribute of an optimizer-named object that
    ``source`` reads or writes: ``opt._params``, ``self._opt._states``,
    ``getattr(optimizer, "_keys")`` (dunders such as ``opt.__class__`` are public)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner, attr = node.value, node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)):
            owner, attr = node.args[0], node.args[1].value
        else:
            continue
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        name = (owner.id if isinstance(owner, ast.Name)
                else owner.attr if isinstance(owner, ast.Attribute) else None)
        if name is not None and _OPTIMIZER_NAME.search(name):
            found.append((node.lineno, ast.unparse(node)))
    return found


@pytest.mark.parametrize("path", [p for p in _py_files() if p.relative_to(PKG).parts[0] != "optim"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_outside_optim_reads_optimizer_privates(path):
    # DataParallel, checkpoints, the trainer, the bench: opt.params, opt.like(...),
    # opt.state_dict() and the public attributes are the seams; privates may change at will.
    assert _optimizer_private_reads(path.read_text()) == []


def test_the_private_read_check_sees_them():
    # The control: what the old DataParallel did is found, the public seams are not.
    bad = ("keys = opt._keys\n"
           "n = sum(b.size for b in self._opt._states.values())\n"
           "ps = getattr(optimizer, '_params')\n"
           "base_opt._step = 3\n")
    good = ("ps = opt.params\nshard = opt.like(views)\nsd = self._opt.state_dict()\n"
            "name = optimizer.__class__.__name__\nself._opt = opt\nx = dp._groups\n"
            "options._x = 1\n")
    assert sorted(line for line, _ in _optimizer_private_reads(bad)) == [1, 2, 3, 4]
    assert _optimizer_private_reads(good) == []


# ------------------------------------------------------------------ import cycles

def _import_graph(files, modules):
    """{module: the fastopt modules it imports, at any depth (inside functions too)}.

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
    ``pkg`` (whose ``__init__`` defines ``name``).
    """
    graph = {}
    for path in files:
        name, is_pkg = _module_name(path)
        package = name if is_pkg else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                out.update(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                           for a in node.names)
        graph[name] = {m for m in out if m in modules and m != name}
    return graph


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


# Cycles that exist and are someone's work in progress (issue 18: the optimizer table):
# each must still exist (remove it here when it is gone), and no other may appear.
KNOWN_CYCLES = []


def test_no_import_cycles_even_inside_functions():
    graph = _import_graph(_py_files(), set(_modules()))
    assert _cycles(graph) == KNOWN_CYCLES


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "fastopt" / "kernels"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    (pkg / "c.py").write_text("from . import a\n")        # imports the cycle, is not in it
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        modules = {"fastopt.kernels", "fastopt.kernels.a", "fastopt.kernels.b",
                   "fastopt.kernels.c"}
        graph = _import_graph(sorted(pkg.glob("*.py")), modules)
    finally:
        ROOT = saved
    assert _cycles(graph) == [["fastopt.kernels.a", "fastopt.kernels.b"]]
