"""Threads: the OpenMP default, threadpoolctl, the shared BLAS pool, fork, forced ISA."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import _blas, _dispatch

ROOT = Path(__file__).resolve().parents[1]


def _py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=e, timeout=120)


def test_set_and_get_num_threads():
    default = fastopt.get_num_threads()
    assert default >= 1
    fastopt.set_num_threads(1)
    assert fastopt.get_num_threads() == 1
    with fastopt.num_threads(3):
        assert fastopt.get_num_threads() == 3
    assert fastopt.get_num_threads() == 1
    fastopt.set_num_threads(None)
    assert fastopt.get_num_threads() == default
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastopt.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastopt.set_num_threads(1.5)


def test_threadpoolctl_limits_fastopt_like_scikit_learn():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    default = fastopt.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastopt.get_num_threads() == 1
    assert fastopt.get_num_threads() == default


def test_omp_num_threads_is_honoured():
    p = _py("import fastopt; print(fastopt.get_num_threads())", OMP_NUM_THREADS="1")
    assert p.stdout.strip() == "1", p.stderr


@pytest.fixture
def shared_blas():
    """BLAS sharing switched on (it is opt-in) for one test, then off again."""
    if not _blas.share_blas_threads():
        pytest.skip("no OpenBLAS with the threads callback")
    try:
        yield
    finally:
        _blas.restore_blas_threads()


def test_blas_is_left_alone_by_default():
    p = _py("import fastopt; print(fastopt.info()['blas_shared'])")
    assert p.stdout.strip() == "[]", p.stderr
    p = _py("import fastopt", FASTOPT_BLAS_THREADS="everything")
    assert p.returncode != 0 and "must be 'native' (the default) or 'shared'" in p.stderr


def test_blas_results_are_unchanged_on_the_shared_pool(shared_blas):
    rng = np.random.default_rng(0)
    for n in (64, 300, 700):
        A = rng.standard_normal((n, n)).astype(np.float32)
        B = rng.standard_normal((n, n)).astype(np.float32)
        ref = A.astype(np.float64) @ B.astype(np.float64)
        np.testing.assert_allclose(A @ B, ref, rtol=1e-3, atol=1e-3 * np.sqrt(n))
        D = rng.standard_normal((n, n))
        np.testing.assert_allclose(np.linalg.solve(D, D @ np.ones(n)), 1.0, rtol=1e-6)


def test_blas_sharing_opt_in_by_environment():
    p = _py("import fastopt; print(len(fastopt.info()['blas_shared']) > 0)", FASTOPT_BLAS_THREADS="shared")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(bool(_blas._loaded_openblas_paths())), p.stderr
    p = _py("import fastopt; print(fastopt.info()['blas_shared'])", FASTOPT_BLAS_THREADS="native")
    assert p.stdout.strip() == "[]", p.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.parametrize("blas", ["native", "shared"])
def test_kernels_and_blas_work_in_a_forked_child(blas):
    # The pool's workers do not exist in a forked child: an atfork handler resets it and the
    # child starts its own workers (GNU libgomp, used before, hung there).
    code = """
import os, numpy as np, fastopt
rng = np.random.default_rng(0)
p = rng.standard_normal(1 << 20).astype(np.float32); g = p.copy(); m = np.zeros_like(p); v = m.copy()
fastopt.kernels.adam_step(p, g, m, v, step=1, lr=0.1)
A = np.ones((400, 400), np.float32); A @ A
expect = [x.copy() for x in (p, m, v)]
fastopt.kernels.adam_step(*expect[:1], g, *expect[1:], step=2, lr=0.1)
pid = os.fork()
if pid == 0:
    fastopt.kernels.adam_step(p, g, m, v, step=2, lr=0.1)
    stats = fastopt._threadpool.stats()
    ok = ((A @ A)[0, 0] == 400 and fastopt.get_num_threads() == fastopt.default_num_threads()
          and all(np.array_equal(a, b) for a, b in zip((p, m, v), expect))
          and stats["forks"] == 1 and (stats["jobs"] > 0 or fastopt.get_num_threads() == 1))
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""
    p = _py(code, FASTOPT_BLAS_THREADS=blas)
    assert p.stdout.strip() == "child 0", p.stderr


def test_forced_isa_levels():
    for level in _dispatch.supported_levels():
        p = _py("import fastopt; print(fastopt.isa())", FASTOPT_ISA=level)
        assert p.stdout.strip() == level, p.stderr
    p = _py("import fastopt", FASTOPT_ISA="sse9")
    assert p.returncode != 0 and "must be one of baseline, avx2, avx512" in p.stderr
    unsupported = [lv for lv in _dispatch.LEVELS if lv not in _dispatch.supported_levels()]
    for level in unsupported:
        p = _py("import fastopt", FASTOPT_ISA=level)
        assert p.returncode != 0
        assert "does not support" in p.stderr or "not built" in p.stderr


def test_best_level_is_the_default():
    assert fastopt.isa() == _dispatch.supported_levels()[0] or os.environ.get("FASTOPT_ISA")


def test_restore_and_share_again_keep_blas_correct(shared_blas):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((500, 500))
    ref = A @ A
    try:
        _blas.restore_blas_threads()
        assert _blas.shared_libraries() == []
        np.testing.assert_allclose(A @ A, ref, rtol=1e-12, atol=1e-10)
    finally:
        assert _blas.share_blas_threads()
    np.testing.assert_allclose(A @ A, ref, rtol=1e-12, atol=1e-10)


def _stalled_fraction(fn):
    """Fraction of the time ``fn`` runs in another thread during which a Python loop in this
    thread makes no progress for more than 2 ms (all of it if ``fn`` holds the GIL)."""
    import gc
    import threading
    import time

    done = threading.Event()

    def work():
        fn()
        done.set()

    t = threading.Thread(target=work)
    gc.disable()  # a collection in this loop would look like a stall
    try:
        start = last = time.perf_counter()
        stalled = 0.0
        t.start()
        while not done.is_set():
            now = time.perf_counter()
            if now - last > 0.002:
                stalled += now - last
            last = now
        t.join()
        return stalled / (time.perf_counter() - start)
    finally:
        gc.enable()


def test_kernels_release_the_gil():
    n = 1 << 25  # about 30 ms per single-threaded Adam step
    p = np.ones(n, np.float32)
    g, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    x = p.reshape(1 << 15, 1 << 10)
    gamma, beta = np.ones(1 << 10, np.float32), np.zeros(1 << 10, np.float32)
    out = np.empty_like(x)
    with fastopt.num_threads(1):  # leave the second core to this thread
        fractions = [
            _stalled_fraction(lambda: [fastopt.kernels.adam_step(p, g, m, v, step=2, lr=0.1)
                                       for _ in range(4)]),
            _stalled_fraction(lambda: [fastopt.kernels.batchnorm_forward(x, gamma, beta, None, None,
                                                                         out=out)
                                       for _ in range(4)]),
        ]
    # Holding the GIL would stall this loop for nearly the whole time.
    assert max(fractions) < 0.5, fractions


def test_the_stall_measure_sees_a_gil_holder():
    import re

    text = "a" * 30_000_000
    assert _stalled_fraction(lambda: [re.search("b", text) for _ in range(3)]) > 0.7
