"""Threads: the OpenMP default, threadpoolctl, the shared BLAS pool, fork, forced ISA."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt.runtime import blas as _blas, dispatch as _dispatch

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


def _ran_python_during_a_call(call, watched, cap=100):
    """Whether another thread ran Python while ``call`` was writing ``watched``.

    ``call(k)`` (k = 1, 2, ... up to ``cap``, until the answer is known) lowers every element of
    ``watched`` by about 1, the first element before the last, so between calls all elements
    are equal. A watcher thread reads watched[0], then watched[-1], over and over; it holds
    the GIL for each read. A first element lower than the last one, read after it, can only
    be seen in the middle of a call: a call that held the GIL could run only between the
    watcher's reads, and then the later read would see as many decrements or more. So the
    answer is False only if ``call`` holds the GIL (or the watcher was never scheduled during
    any of the ``cap`` calls).
    """
    import threading

    flat = watched.reshape(-1)
    seen, stop = threading.Event(), threading.Event()

    def watch():
        while not stop.is_set():
            first = flat[0]
            if first < flat[-1] - 0.5:
                seen.set()
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for k in range(1, cap + 1):
            call(k)
            if seen.is_set():
                break
    finally:
        stop.set()
        watcher.join()
    return seen.is_set()


def test_kernels_release_the_gil():
    n = 1 << 22
    p, g = np.zeros(n, np.float32), np.ones(n, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    # Batch norm: every channel holds the same column, whose first and last values are equal,
    # so y[0, 0] == y[-1, -1]; beta = -k lowers all of y by k at call k.
    column = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    column[-1] = column[0]
    x = np.repeat(column[:, None], 1024, axis=1)
    gamma, beta = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    out = np.empty_like(x)

    def batchnorm(k):
        beta[...] = -k
        fastopt.kernels.batchnorm_forward(x, gamma, beta, None, None, out=out)

    with fastopt.num_threads(1):  # one thread: the first element is written first
        assert _ran_python_during_a_call(
            lambda k: fastopt.kernels.adam_step(p, g, m, v, step=k, lr=1.0), p)
        assert _ran_python_during_a_call(batchnorm, out)


def test_the_gil_check_sees_a_gil_holder():
    # A ufunc over Python objects holds the GIL from its first element to its last.
    w = np.zeros(1 << 20, dtype=object)
    w[...] = 0.0
    assert not _ran_python_during_a_call(lambda k: np.subtract(w, 1.0, out=w), w, cap=20)


def test_limited_blas_threads_sets_and_restores_openblas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastopt.runtime.blas import limited_blas_threads

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library found by threadpoolctl")
    A = np.random.default_rng(0).standard_normal((300, 300))
    ref = A @ A
    with limited_blas_threads(1):
        assert blas_threads() == [1] * len(before)
        np.testing.assert_allclose(A @ A, ref, rtol=1e-12, atol=1e-10)
    assert blas_threads() == before


def _in_two_threads(fns, events):
    """Run each of ``fns`` in a thread of its own and join them (60 s at most each); returns
    the errors they raised.  A function that raises sets every one of ``events``, so the other
    does not wait out its timeout for a step that will not come."""
    import threading

    errors = []

    def guarded(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
            for e in events:
                e.set()

    threads = [threading.Thread(target=guarded, args=(f,)) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_limited_blas_threads_overlapping_in_two_threads_and_nested():
    # The OpenBLAS thread count is one setting: with the old context manager, A's exit put back
    # the count A had saved while B's block (which had found 1 and saved nothing) was still open.
    import threading

    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastopt.runtime.blas import limited_blas_threads

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip("needs an OpenBLAS on two threads or more")
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def thread_a():
        with limited_blas_threads(1):
            a_in.set()
            assert b_in.wait(30)
        a_out.set()

    def thread_b():
        assert a_in.wait(30)
        with limited_blas_threads(1):
            b_in.set()
            assert a_out.wait(30)
            seen.append(blas_threads())
        seen.append(blas_threads())

    assert _in_two_threads((thread_a, thread_b), (a_in, b_in, a_out)) == []
    assert seen == [[1] * len(before), before]
    with limited_blas_threads(2):
        with limited_blas_threads(1):
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == [min(2, b) for b in before]
    assert blas_threads() == before
    for bad, exc in [(0, ValueError), (None, TypeError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="n must be"):
            with limited_blas_threads(bad):
                pass
    assert blas_threads() == before


def test_train_cli_blas_threads_option():
    from fastopt.cli import build_parser

    args = build_parser().parse_args(["train"])
    assert args.blas_threads == 1
    assert build_parser().parse_args(["tune", "--blas-threads", "2"]).blas_threads == 2
    p = _py("from fastopt.cli import main; main(['train', '--blas-threads', '0'])")
    assert p.returncode == 2 and "--blas-threads" in p.stderr


# ---------------------------------------------------------------- issue 21: num_threads objects

def test_one_num_threads_object_entered_again_inside_itself():
    default = fastopt.get_num_threads()
    nt, other = fastopt.num_threads(1), fastopt.num_threads(default + 2)
    with nt:
        with nt:
            assert fastopt.get_num_threads() == 1
            with other:
                assert fastopt.get_num_threads() == default + 2
            assert fastopt.get_num_threads() == 1
        assert fastopt.get_num_threads() == 1
    assert fastopt.get_num_threads() == default
    with fastopt.num_threads(3):
        with fastopt.num_threads(None):  # None inside a block: back to the process setting
            assert fastopt.get_num_threads() == default
        assert fastopt.get_num_threads() == 3


def test_num_threads_blocks_left_out_of_order_and_unmatched_exit():
    default = fastopt.get_num_threads()
    a, b = fastopt.num_threads(1), fastopt.num_threads(default + 1)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)          # an ExitStack may close them in another order
    assert fastopt.get_num_threads() == default + 1
    b.__exit__(None, None, None)
    assert fastopt.get_num_threads() == default
    with pytest.raises(RuntimeError, match="did not enter it"):
        a.__exit__(None, None, None)
    assert fastopt.get_num_threads() == default


def test_one_num_threads_object_shared_by_two_threads():
    # Forced order: A enters, B enters, A leaves (while B is inside), B leaves.  The old object
    # kept one token: A's exit reset B's token (ValueError) and A kept its override.
    import threading

    default = fastopt.get_num_threads()
    shared = fastopt.num_threads(default + 3)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def look(where, expected):
        seen.append((where, fastopt.get_num_threads(), expected))

    def thread_a():
        with shared:
            a_in.set()
            assert b_in.wait(30)
            look("A inside", default + 3)
        look("A after", default)
        a_out.set()

    def thread_b():
        assert a_in.wait(30)
        with shared:
            b_in.set()
            assert a_out.wait(30)
            look("B inside after A left", default + 3)
        look("B after", default)

    assert _in_two_threads((thread_a, thread_b), (a_in, b_in, a_out)) == []
    assert len(seen) == 4
    assert [(w, got) for w, got, want in seen if got != want] == []
    assert fastopt.get_num_threads() == default


def test_one_num_threads_object_shared_by_asyncio_tasks():
    import asyncio

    default = fastopt.get_num_threads()
    shared = fastopt.num_threads(default + 2)

    async def task(name, first, then):
        await first.wait()
        with shared:
            then.set()
            await asyncio.sleep(0)
            inside = fastopt.get_num_threads()
            await asyncio.sleep(0.01 if name == "a" else 0.03)
        return name, inside, fastopt.get_num_threads()

    async def main():
        go, a_in, b_in = asyncio.Event(), asyncio.Event(), asyncio.Event()
        go.set()
        results = await asyncio.gather(task("a", go, a_in), task("b", a_in, b_in))
        return results, fastopt.get_num_threads()

    results, after = asyncio.run(main())
    assert results == [("a", default + 2, default), ("b", default + 2, default)]
    assert after == default


# ---------------------------------------------------------------- issue 21: CPU affinity

_AFFINITY = """
import os, threading, numpy as np

def masks():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                out[tid] = [l.split(":")[1].strip() for l in f if l.startswith("Cpus_allowed_list")][0]
        except OSError:
            pass
    return sorted(set(out.values()))

before = sorted(os.sched_getaffinity(0))
import fastopt
after_import = sorted(os.sched_getaffinity(0))
p, g = np.ones(1 << 20, np.float32), np.ones(1 << 20, np.float32)
opt = fastopt.Adam([p], lr=0.1)
with fastopt.num_threads(2):
    opt.step([g])
after_step = sorted(os.sched_getaffinity(0))
seen = []
t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
t.start(); t.join()
print(before == after_import == after_step == seen[0], len(masks()), before, after_import,
      after_step, seen[0], masks())
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least two CPUs")
@pytest.mark.parametrize("name, value", [("OMP_PROC_BIND", "true"), ("OMP_PLACES", "cores"),
                                         ("GOMP_CPU_AFFINITY", "the first two CPUs")])
def test_import_and_step_keep_the_cpu_affinity(name, value):
    # Issue 21: libgomp (linked by the kernel modules) bound the importing thread to the first
    # OpenMP place when one of these was set: every later thread ran on one CPU.
    if name == "GOMP_CPU_AFFINITY":
        value = " ".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    env[name] = value
    p = subprocess.run([sys.executable, "-c", _AFFINITY], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:2] == ["True", "1"], p.stdout
