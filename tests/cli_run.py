"""``fastopt`` run as a user would: ``python -m fastopt.cli ARGS`` in a subprocess, from the
checkout's root (for the tests of the CLI and of what reaches it, such as an optimizer's row)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=True, timeout=300):
    """Run ``fastopt ARGS``; return the ``subprocess.CompletedProcess`` (text output).

    With ``check`` (the default), assert that it exited with status 0, showing its stderr.
    """
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr
    return p
