"""Stress: fastopt must leave every result right and nothing hung, whatever runs beside it.

Each case runs one scenario of ``stress_child.py`` in a child process (the in-place build:
cwd is the repository root). The child compares every result with the same computation done
alone and exits non-zero on any wrong one; a child still running after TIMEOUT seconds is a
hang, killed with everything it started. No timing thresholds.
"""

import ctypes.util
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60

# Slow system tests (subprocesses): out of the quick loop, pytest -m "not slow".
pytestmark = pytest.mark.slow

# Variables that would change what a scenario tests; each case sets its own.
_SCRUBBED = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_NUM_THREADS", "FASTOPT_BLAS_THREADS")

# How NumPy's BLAS runs its jobs: fastopt's default, opted in to sharing, opted out.
BLAS = {"default": {}, "shared": {"FASTOPT_BLAS_THREADS": "shared"},
        "native": {"FASTOPT_BLAS_THREADS": "native"}}
blas_modes = pytest.mark.parametrize("blas", list(BLAS), ids=[f"blas={b}" for b in BLAS])

needs_libgomp = pytest.mark.skipif(
    ctypes.util.find_library("gomp") is None or not hasattr(os, "fork"),
    reason="needs GNU libgomp and fork")


def run_child(call, **env):
    """Run ``stress_child.<call>`` in a child process; fail on a wrong result or a hang."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests")] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else []))
    code = f"import stress_child\nstress_child.{call}"
    what = f"{call} with " + (" ".join(f"{k}={v}" for k, v in env.items()) or "no setting")
    # Own session, so a hang can be killed with its forked children and pool workers
    # (subprocess.run would kill only the child, then wait for pipes they still hold).
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    hung = False
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        hung = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    if hung:
        pytest.fail(f"hang: {what} still running after {TIMEOUT} s\n{out}{err}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} exited with {proc.returncode}:\n{out}{err}", pytrace=False)


# ---------------------------------------------------------------------------- 1. threads

@blas_modes
@pytest.mark.parametrize("matmul_threads, kernel_threads", [(2, 0), (4, 0), (2, 2)],
                         ids=["2-matmul-threads", "4-matmul-threads",
                              "2-matmul+2-kernel-threads"])
def test_concurrent_matmuls_and_kernels(matmul_threads, kernel_threads, blas):
    run_child(f"concurrent({matmul_threads}, {kernel_threads}, reps=2)", **BLAS[blas])


# ---------------------------------------------------------------------------- 2. OpenMP settings

OPENMP_SETTINGS = ["OMP_MAX_ACTIVE_LEVELS=0", "OMP_DYNAMIC=true", "OMP_THREAD_LIMIT=1",
                   "OMP_PROC_BIND=true", "OMP_NUM_THREADS=1"]


@blas_modes
@pytest.mark.parametrize("setting", OPENMP_SETTINGS)
def test_openmp_setting(setting, blas):
    name, value = setting.split("=")
    run_child("openmp_setting()", **{name: value}, **BLAS[blas])


@needs_libgomp
@blas_modes
def test_max_active_levels_zero_set_at_run_time(blas):
    run_child("openmp_setting(set_max_active_levels_zero=True)", **BLAS[blas])


# ---------------------------------------------------------------------------- 3. child processes

@blas_modes
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_of_every_start_method(method, blas):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    run_child(f"start_method({method!r})", **BLAS[blas])


@needs_libgomp
@blas_modes
def test_fork_after_libgomp_before_import(blas):
    run_child("fork_before_import()", **BLAS[blas])


# ---------------------------------------------------------------------------- 4. torch

@blas_modes
def test_torch_in_the_same_process(blas):
    pytest.importorskip("torch")
    run_child("with_torch(reps=2)", **BLAS[blas])


# ---------------------------------------------------------------------------- 5. num_threads

def test_num_threads_overlapping_in_two_threads():
    run_child("overlapping_num_threads()")


# ---------------------------------------------------------------------------- 6. BLAS sharing switched

@pytest.mark.parametrize("toggles", [1, 100], ids=["shared-once", "shared-and-restored-100-times"])
def test_blas_sharing_switched_while_threads_multiply(toggles):
    # Issue 21: switching OpenBLAS's callback while two threads ran dgemm/dsyrk hung NumPy for
    # good in every toggling run (and about one single switch in six).
    run_child(f"blas_toggling({toggles})")


@pytest.mark.parametrize("backend", ["pool", "openmp"])
def test_kernels_alternating_with_threaded_products(backend):
    # Issue 23: a training step's pattern, BLAS left alone (its workers busy-wait between
    # products), on either threading backend: no wrong product, no wrong kernel bit, no hang.
    import fastopt

    if backend == "openmp" and not fastopt._threadpool.HAVE_OPENMP:
        pytest.skip("built without OpenMP")
    run_child("alternating(%r, reps=6)" % backend, OPENBLAS_NUM_THREADS="2")
