import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastopt

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_info_command_prints_build_facts():
    out = subprocess.run([sys.executable, "-m", "fastopt.cli", "info"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    info = fastopt.info()
    assert re.search(rf"^version\s+{re.escape(fastopt.__version__)}$", out, re.M)
    assert re.search(rf"^isa\s+{info['isa']}$", out, re.M)
    assert re.search(r"^openmp\s+(on|off)$", out, re.M)
    assert re.search(r"^threads\s+\d+$", out, re.M)
    assert re.search(r"^cflags\s+.*-O3.*-fno-math-errno", out, re.M)
    assert "-march=native" not in info["cflags"]


@pytest.mark.slow
def test_info_honours_omp_num_threads():
    import os
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "fastopt.cli", "info"], capture_output=True,
                         text=True, check=True, cwd=ROOT, env=env).stdout
    assert re.search(r"^threads\s+1$", out, re.M)


@pytest.mark.slow
def test_bad_subcommand_exits_2_with_usage():
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "frobnicate"], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 2
    assert "usage: fastopt" in p.stderr
    assert "Traceback" not in p.stderr


def test_readme_test_command_is_what_ci_runs():
    command = 'pip install -e ".[test]" && pytest'
    assert command in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci]
