"""The two threading backends (issue 23, item 1): the pool (default) and a static-schedule
OpenMP region over the same tasks.  Same bits on both; the choice is checked, switchable at
run time, reported by ``fastopt info``; a forked child of a process that ran OpenMP regions
falls back to the pool instead of hanging (in a subprocess with a timeout)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import _threadpool
from fastopt import kernels as K
from fastopt.kernels import lowbit as L
from fastopt.runtime import threads

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60

needs_openmp = pytest.mark.skipif(not _threadpool.HAVE_OPENMP, reason="built without OpenMP")


def _py(code, timeout=TIMEOUT, **env):
    """Run ``code`` in a fresh interpreter in its own session; a hang is killed and fails."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "FASTOPT_"))}
    e.update(env)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=e, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"hang: still running after {timeout} s\n{out}{err}", pytrace=False)
    return p.returncode, out, err


@pytest.fixture
def pool_after():
    """The test may switch the backend; the pool is back afterwards."""
    yield
    threads.set_backend("pool")


# ------------------------------------------------------------------ choosing the backend

def test_default_backend_is_the_pool():
    code, out, err = _py("import fastopt; print(fastopt.runtime.threads.get_backend(), "
                         "fastopt.info()['threading'])")
    assert code == 0, err
    assert out.split() == ["pool", "pool"]


@needs_openmp
def test_environment_selects_openmp_and_info_says_so():
    code, out, err = _py("import fastopt; print(fastopt.runtime.threads.get_backend())",
                         FASTOPT_THREADING="OpenMP")
    assert code == 0, err
    assert out.strip() == "openmp"
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "info"], capture_output=True,
                       text=True, cwd=ROOT, timeout=TIMEOUT,
                       env=dict(os.environ, FASTOPT_THREADING="openmp"))
    assert p.returncode == 0, p.stderr
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("threading ")]
    assert line and line[0].split() == ["threading", "openmp"], p.stdout


@pytest.mark.parametrize("value", ["omp", "threads", "pool,openmp"])
def test_unknown_environment_value_is_an_import_error_naming_the_choices(value):
    code, out, err = _py("import fastopt", FASTOPT_THREADING=value)
    assert code != 0
    assert "ImportError" in err and "FASTOPT_THREADING" in err
    assert "'pool'" in err and "'openmp'" in err


def test_set_backend_checks_its_argument(pool_after):
    with pytest.raises(TypeError, match="'pool', 'openmp'"):
        threads.set_backend(1)
    with pytest.raises(TypeError, match="got NoneType"):
        threads.set_backend(None)
    with pytest.raises(ValueError, match="'pool', 'openmp', got 'gomp'"):
        threads.set_backend("gomp")
    with pytest.raises(ValueError):
        with threads.threading_backend("Pool"):
            pass
    assert threads.get_backend() == "pool"


@needs_openmp
def test_set_backend_and_the_context_manager(pool_after):
    assert threads.set_backend("openmp") == "pool"
    assert threads.get_backend() == "openmp"
    assert fastopt.info()["threading"] == "openmp"
    with threads.threading_backend("pool"):
        assert threads.get_backend() == "pool"
    assert threads.get_backend() == "openmp"
    threads.set_backend("pool")
    with pytest.raises(RuntimeError):
        with threads.threading_backend("openmp"):
            assert threads.get_backend() == "openmp"
            raise RuntimeError
    assert threads.get_backend() == "pool"


# ------------------------------------------------------------------ same bits

def _adam(n, nt):
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with fastopt.num_threads(nt):
        for step in range(1, 4):
            K.adam_step(p, g, m, v, step=step, lr=1e-2)
    return p, m, v


def _adam_list(nt):
    rng = np.random.default_rng(7)
    ps = [rng.standard_normal(k).astype(np.float32) for k in (70000, 5, 40000, 130001)]
    gs = [rng.standard_normal(p.size).astype(np.float32) for p in ps]
    opt = fastopt.Adam(ps, lr=1e-2)     # one compiled call over a table of chunks
    with fastopt.num_threads(nt):
        for _ in range(2):
            opt.step(gs)
    return ps


def _batchnorm(shape, nt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    gamma, beta = rng.standard_normal(C).astype(np.float32), np.zeros(C, np.float32)
    with fastopt.num_threads(nt):
        y, mean, invstd = K.batchnorm_forward(x, gamma, beta, None, None)
        dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd)
    return y, mean, invstd, dx, dgamma, dbeta


def _int8_adam(nt):
    rng = np.random.default_rng(3)
    n = 300_001
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    (mc, ma), (vc, va) = L.zeros_int8(n, L.signed_map()), L.zeros_int8(n, L.unsigned_map())
    with fastopt.num_threads(nt):
        for step in range(1, 3):
            L.adam_step_int8(p, g, mc, ma, vc, va, step=step, lr=1e-3)
    return p, mc, ma, vc, va


CASES = {"adam 1M": lambda nt: _adam(1 << 20, nt), "adam 64K+1": lambda nt: _adam(65537, nt),
         "adam list": _adam_list, "batchnorm 2D": lambda nt: _batchnorm((4096, 64), nt),
         "batchnorm 4D": lambda nt: _batchnorm((16, 32, 28, 28), nt), "adam int8": _int8_adam}


@needs_openmp
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("nt", [2, 3])
def test_backends_give_the_same_bits(case, nt, pool_after):
    jobs = _threadpool.stats()["jobs"]
    pool = CASES[case](nt)
    assert _threadpool.stats()["jobs"] > jobs        # the pool ran it
    threads.set_backend("openmp")
    jobs = _threadpool.stats()["jobs"]
    omp = CASES[case](nt)
    assert _threadpool.stats()["jobs"] == jobs       # the pool did not
    assert _threadpool.openmp_stats()["used"]
    threads.set_backend("pool")
    serial = CASES[case](1)
    for a, b, c in zip(pool, omp, serial):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert a.tobytes() == c.tobytes()


# ------------------------------------------------------------------ fork

FORK_AFTER_OPENMP = r"""
import os, sys
import numpy as np
import fastopt
from fastopt import kernels as K
from fastopt.runtime import threads

def step():
    p = np.arange(1 << 20, dtype=np.float32) / (1 << 20)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with fastopt.num_threads(2):
        K.adam_step(p, p.copy(), m, v, step=1, lr=1e-2)
    return p

expected = step()                      # an OpenMP region ran in the parent (FASTOPT_THREADING)
assert threads.get_backend() == "openmp" and fastopt._threadpool.openmp_stats()["used"]
pid = os.fork()
if pid == 0:
    ok = (threads.get_backend() == "pool" and step().tobytes() == expected.tobytes()
          and fastopt._threadpool.openmp_stats()["fork_fallbacks"] == 1)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert threads.get_backend() == "openmp" and step().tobytes() == expected.tobytes()
print("ok")
"""


@needs_openmp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_child_forked_after_openmp_regions_runs_on_the_pool():
    # Without the fallback the child's first region waits for ever for the parent's libgomp
    # threads (GNU libgomp): the timeout turns that hang into a failure.
    code, out, err = _py(FORK_AFTER_OPENMP, FASTOPT_THREADING="openmp")
    assert code == 0, out + err
    assert out.strip() == "ok"


# ------------------------------------------------------------------ the pool's ranges

def _settled_task_count(expected, timeout=10.0):
    """tasks run by the caller + by the workers; a worker adds its count just after the call
    returns, so poll (bounded) until it is in."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        st = _threadpool.stats()
        total = st["tasks_master"] + st["tasks_workers"]
        if total >= expected or time.monotonic() > deadline:
            return total
        time.sleep(0.001)


@pytest.mark.parametrize("nblocks", [5, 7, 13])
@pytest.mark.parametrize("nt", [2, 3, 5, 8])
def test_pool_runs_every_block_once_for_any_split(nt, nblocks):
    # The pool cuts a call into one range per thread (uneven when nt does not divide the
    # blocks) and threads take what is left of the others': every block must run exactly
    # once, and the bits must be those of one thread.
    n = (nblocks - 1) * 16384 + 100                 # nblocks blocks, above PARALLEL_MIN
    serial = _adam(n, 1)
    st = _threadpool.stats()
    before, jobs = st["tasks_master"] + st["tasks_workers"], st["jobs"]
    pooled = _adam(n, nt)                           # 3 steps
    assert _threadpool.stats()["jobs"] == jobs + 3
    assert _settled_task_count(before + 3 * nblocks) == before + 3 * nblocks
    for a, b in zip(pooled, serial):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("forced", [False, True], ids=["measured", "forced"])
def test_small_calls_between_matmuls_keep_kernel_bits_and_products(forced):
    # Alternating with NumPy matrix products (BLAS left alone), the pool runs a small call on
    # the caller alone when its worker sleeps and waking it would not pay (fo_small_job), and
    # a worker woken onto the caller's CPU gives it back: neither may change a kernel's bits
    # or a product.  The calls are spaced (the worker sleeps between them) and cost about a
    # microsecond per block (SGD over 4 blocks), less than any measured wake-up: once the
    # wake-up is measured, most run on the caller alone (every 16th wakes the worker), how
    # many depends on the machine's wake-up cost; forced (the pool's test hook), all of them.
    import time

    n = 4 * 16384                                       # PARALLEL_MIN: 4 blocks
    rng = np.random.default_rng(3)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    prod = a @ a
    g = rng.standard_normal(n).astype(np.float32)
    p = rng.standard_normal(n).astype(np.float32)
    q = p.copy()
    before = _threadpool.stats()
    was = _threadpool.force_small(forced)
    try:
        with threads.threading_backend("pool"), fastopt.num_threads(2):
            for _ in range(200):
                K.sgd_step(p, g, None, lr=1e-3, weight_decay=1e-2)
                assert (a @ a).tobytes() == prod.tobytes()
                time.sleep(0.002)                       # longer than the worker spins
    finally:
        assert _threadpool.force_small(was) == forced
    with fastopt.num_threads(1):
        for _ in range(200):
            K.sgd_step(q, g, None, lr=1e-3, weight_decay=1e-2)
    assert p.tobytes() == q.tobytes()
    after = _threadpool.stats()
    assert after["jobs"] - before["jobs"] == 200
    if forced:
        assert after["serial_small"] - before["serial_small"] == 200
        assert after["tasks_master"] - before["tasks_master"] == 200 * 4
        assert after["tasks_workers"] == before["tasks_workers"]
    else:
        assert after["sleep_wake_us"] > 0 and after["broadcast_us"] > 0


@pytest.mark.parametrize("setting", [False, True])
def test_force_small_takes_a_bool_or_0_1_only(setting):
    # The hook's argument is checked as the project's setters check theirs: a truthy string,
    # 2, 1.0, None or a NumPy integer is refused with TypeError, the setting unchanged.
    was = _threadpool.force_small(setting)
    try:
        for bad in ("yes", "", 2, -1, 1.0, 0.0, None, np.int64(1), [1]):
            with pytest.raises(TypeError, match="on must be a bool"):
                _threadpool.force_small(bad)
            assert _threadpool.force_small(setting) == setting
        for good, expected in ((0, False), (1, True), (False, False), (True, True)):
            _threadpool.force_small(good)
            assert _threadpool.force_small(setting) == expected
    finally:
        _threadpool.force_small(was)


def _workers_asleep(timeout=10.0):
    """Poll (bounded) until every started worker sleeps (they spin for a while after a call);
    returns the stats then."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        st = _threadpool.stats()
        if st["workers"] > 0 and st["sleeping"] == st["workers"]:
            return st
        if time.monotonic() > deadline:
            pytest.fail(f"the workers did not go to sleep within {timeout} s: {st}", pytrace=False)
        time.sleep(0.002)


def _bn_step(x, dy, nt):
    """Batch norm forward + backward with nt threads: every output's bytes."""
    C = x.shape[1]
    gamma = np.linspace(0.5, 1.5, C).astype(x.dtype)
    beta = np.linspace(-1, 1, C).astype(x.dtype)
    with fastopt.num_threads(nt):
        y, mu, s = K.batchnorm_forward(x, gamma, beta, None, None)
        dx, dg, db = K.batchnorm_backward(dy, x, gamma, mu, s)
    return [a.tobytes() for a in (y, mu, s, dx, dg, db)]


@pytest.mark.parametrize("backend", ["pool", pytest.param("openmp", marks=needs_openmp)])
def test_prewake_wakes_sleeping_workers_on_the_pool_only(backend, pool_after):
    # Batch norm's wrappers wake the pool's sleeping workers on entry, before their checks
    # (fastopt._threadpool.prewake; docs/design.rst): a large x with several threads on the
    # pool does, once per wrapper; one thread, a small x (one thread anyway) or the OpenMP
    # backend does not; the bits are one thread's either way.  Deterministic: a worker leaves
    # its sleep only for a job or a prewake, and each check first waits until they all sleep.
    rng = np.random.default_rng(23)
    big = rng.standard_normal((512, 256)).astype(np.float32)      # 131072 >= PARALLEL_MIN
    dbig = rng.standard_normal(big.shape).astype(np.float32)
    small = rng.standard_normal((64, 256)).astype(np.float32)     # 16384: one thread
    dsmall = rng.standard_normal(small.shape).astype(np.float32)
    one = {id(big): _bn_step(big, dbig, 1), id(small): _bn_step(small, dsmall, 1)}
    with threads.threading_backend("pool"), fastopt.num_threads(2):
        K.adam_step(big.ravel().copy(), dbig.ravel(), np.zeros(big.size, np.float32),
                    np.zeros(big.size, np.float32), step=1, lr=1e-3)  # a worker exists
    for x, dy, nt, woken in ((big, dbig, 2, backend == "pool"), (big, dbig, 1, False),
                             (small, dsmall, 2, False)):
        before = _workers_asleep()["prewakes"]
        with threads.threading_backend(backend):
            out = _bn_step(x, dy, nt)
        assert out == one[id(x)], (backend, x.shape, nt)
        # forward and backward each prewake; the worker may still spin from the forward's
        # passes when the backward enters (then nothing is asleep to wake)
        got = _threadpool.stats()["prewakes"] - before
        assert (1 <= got <= 2) if woken else got == 0, (backend, x.shape, nt, got)
    # the call alone: one thread, or the OpenMP backend, leaves the sleeping workers asleep
    for nt, name in ((1, "pool"), (2, "openmp"), (2, "pool")):
        if name == "openmp" and not _threadpool.HAVE_OPENMP:
            continue
        before = _workers_asleep()
        with threads.threading_backend(name):
            assert _threadpool.prewake(nt) is None
        after = _threadpool.stats()
        expect = 1 if (name == "pool" and nt > 1) else 0
        assert after["prewakes"] - before["prewakes"] == expect, (nt, name)
        assert after["jobs"] == before["jobs"]       # no job ran


def test_prewake_checks_its_argument():
    for bad in ("2", 2.0, None, True, np.int64(2), [2]):
        with pytest.raises(TypeError, match="nthreads must be an int"):
            _threadpool.prewake(bad)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="nthreads must be >= 1"):
            _threadpool.prewake(bad)


PINNED_TO_ONE_CPU = r"""
import json, os, time
import numpy as np
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})   # before any worker is started
import fastopt
from fastopt import _threadpool
from fastopt import kernels as K

def adam(nt):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(1 << 20).astype(np.float32)     # 64 blocks
    g = rng.standard_normal(p.size).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with fastopt.num_threads(nt):
        for step in range(1, 4):
            K.adam_step(p, g, m, v, step=step, lr=1e-2)
    return [p, m, v]

def batchnorm(nt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 32, 28, 28)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = rng.standard_normal(32).astype(np.float32), np.zeros(32, np.float32)
    with fastopt.num_threads(nt):
        y, mean, invstd = K.batchnorm_forward(x, gamma, beta, None, None)
        return [y, mean, invstd, *K.batchnorm_backward(dy, x, gamma, mean, invstd)]

def settled(st0):
    # the worker runs when the caller sleeps (one CPU): let it see every job first
    deadline = time.monotonic() + 10
    while True:
        time.sleep(0.05)
        st = _threadpool.stats()
        if st["wakes_samecpu"] > st0["wakes_samecpu"] or time.monotonic() > deadline:
            return {k: st[k] - st0[k] for k in ("jobs", "serial_small", "tasks_master",
                                                 "tasks_workers", "wakes_samecpu")}

out = {"cpus": len(os.sched_getaffinity(0))}
for name, case in (("adam", adam), ("batchnorm", batchnorm)):
    serial = case(1)
    st0 = _threadpool.stats()
    pooled = case(2)
    out[name] = settled(st0)
    out[name]["same_bits"] = all(a.tobytes() == b.tobytes() for a, b in zip(pooled, serial))
print(json.dumps(out))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not sys.platform.startswith("linux"),
                    reason="needs sched_setaffinity and sched_getcpu (Linux)")
def test_a_process_pinned_to_one_cpu_runs_every_block_on_the_caller():
    # A worker on the caller's CPU stands aside (yields, never claims; docs/design.rst): in a
    # process pinned to one CPU every worker is there, so with 2 threads the caller runs
    # every block, the call returns (no wait on a worker that cannot run) and the bits are
    # one thread's.  In a subprocess: the affinity is inherited by the pool's workers.
    import json

    code, out, err = _py(PINNED_TO_ONE_CPU)
    assert code == 0, out + err
    r = json.loads(out)
    assert r["cpus"] == 1
    for name, blocks in (("adam", 3 * 64), ("batchnorm", None)):
        st = r[name]
        assert st["same_bits"], (name, st)
        assert st["jobs"] > 0 and st["tasks_master"] > 0 and st["tasks_workers"] == 0, (name, st)
        assert st["wakes_samecpu"] > 0 or st["serial_small"] == st["jobs"], (name, st)
        if blocks is not None:
            assert st["tasks_master"] == blocks, (name, st)


# ------------------------------------------------------------------ tracing

@pytest.mark.parametrize("backend", ["pool", pytest.param("openmp", marks=needs_openmp)])
def test_trace_records_every_task_of_every_call_once(backend):
    # benchmarks/pool_trace.py reads who ran which block from these records: per call, one
    # publish (-1) and one return (-2) record of the caller, and each task exactly once.
    n = 9 * 16384 + 5                                   # 10 blocks
    expect = _adam(n, 1)
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with threads.threading_backend(backend), fastopt.num_threads(2):
        _threadpool.trace_start(10_000)
        for step in range(1, 4):
            K.adam_step(p, g, m, v, step=step, lr=1e-2)
        r = np.frombuffer(_threadpool.trace_stop(), _threadpool.TRACE_DTYPE)
    for a, b in zip((p, m, v), expect):
        assert a.tobytes() == b.tobytes()
    # wake-up records (-3) are left out: a pool worker still spinning from an earlier call (an
    # earlier test, under load) may record its late wake-up with that call's job number
    raw, r = r, r[r["task"] != -3]
    jobs = np.unique(r["job"])
    assert len(jobs) == 3
    for j in jobs:
        q = r[r["job"] == j]
        assert (q["task"] == -1).sum() == 1 and (q["task"] == -2).sum() == 1
        tasks = q[q["task"] >= 0]
        assert sorted(tasks["task"]) == list(range(10))
        assert set(tasks["slot"]) <= {0, 1}
        assert (tasks["t1"] >= tasks["t0"]).all()
        pub, ret = q[q["task"] == -1]["t0"][0], q[q["task"] == -2]["t0"][0]
        assert pub <= tasks["t0"].min() and tasks["t1"].max() <= ret
    # stopped: later calls add nothing (stopping again gives the same records)
    with fastopt.num_threads(2):
        K.adam_step(p, g, m, v, step=4, lr=1e-2)
    assert _threadpool.trace_stop() == raw.tobytes()


def test_trace_start_checks_its_capacity():
    for bad in (0, -5):
        with pytest.raises(ValueError, match="capacity must be >= 1"):
            _threadpool.trace_start(bad)
    with pytest.raises(TypeError):
        _threadpool.trace_start("100")

