"""setup.py's OpenMP probe links as the extensions do, with the user's CFLAGS and LDFLAGS."""

import os
import runpy
import shutil
import subprocess
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
