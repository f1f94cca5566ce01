"""setup.py's OpenMP probe links as the extensions do, with the user's CFLAGS and LDFLAGS."""

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Slow system tests (the compiler): out of the quick loop, pytest -m "not slow".
pytestmark = pytest.mark.slow


def _asan_available():
    cc = shutil.which("gcc")
    if cc is None:
        return False
    lib = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True)
    return os.path.isabs(lib.stdout.strip())


@pytest.mark.skipif(not _asan_available(), reason="needs gcc with AddressSanitizer")
def test_openmp_probe_honours_cflags_and_ldflags(monkeypatch):
    # A sanitizer build: objects compiled with -fsanitize=address only link with it. A probe that
    # dropped LDFLAGS failed to link, and the build went on without OpenMP (single-threaded).
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    setup_py = runpy.run_path(str(ROOT / "setup.py"), run_name="fastopt_setup")
    monkeypatch.setenv("CC", "gcc")
    monkeypatch.setenv("CFLAGS", "-fsanitize=address")
    monkeypatch.setenv("LDFLAGS", "-fsanitize=address")
    compiler = new_compiler()
    customize_compiler(compiler)
    assert setup_py["_openmp_flags"](compiler) == (["-fopenmp"], ["-fopenmp"])


def test_import_from_the_source_directory_says_so(tmp_path):
    # After a non-editable `pip install .`, Python started inside the checkout imports its
    # fastopt/ (no compiled modules) before the installed one: it must say so, as NumPy does,
    # not report a circular import.  A copy of the package without its compiled modules, in a
    # tree with setup.py and src/kernels, under -S (no site: no editable finder to fall back on).
    import numpy as np

    shutil.copytree(ROOT / "fastopt", tmp_path / "fastopt",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    (tmp_path / "src" / "kernels").mkdir(parents=True)
    (tmp_path / "setup.py").write_text("")
    numpy_dir = str(Path(np.__file__).resolve().parents[1])
    code = f"import sys; sys.path.insert(1, {numpy_dir!r}); import fastopt"
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastopt: you are running fastopt from its source "
                           f"directory ({tmp_path})"), r.stderr
    assert "circular import" not in r.stderr
    # outside a source tree (no setup.py), a package without compiled modules says that
    (tmp_path / "setup.py").unlink()
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert "its compiled modules are missing" in r.stderr, r.stderr
