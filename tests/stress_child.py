"""The workloads of tests/test_stress.py, each run in a child process.

Every scenario computes its results alone first, then again under stress (several Python
threads, an OpenMP setting, a child process, torch in the same process), compares, and
exits non-zero listing every wrong result.  The parent test turns a timeout into "hang".

Nothing here imports fastopt at module level: some scenarios use BLAS or libgomp first.
"""

import os
import pickle
import sys
import threading
import time
import traceback

import numpy as np

SIZES = (64, 256, 512, 1024)
THREADED_SIZES = (512, 1024)  # large enough that OpenBLAS splits the product over its threads
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
WAIT = 20.0  # seconds; only reached when something is already wrong


# ---------------------------------------------------------------------------- jobs and checks

class Job:
    """A computation with a name; ``rtol=None`` means the result must be bit-identical."""

    def __init__(self, name, run, rtol=None):
        self.name, self.run, self.rtol = name, run, rtol


def matmul_jobs(sizes=SIZES, seed=0):
    """NumPy products, float32 and float64. The same product on the same number of threads
    runs the same OpenBLAS code and gives the same bits (measured on this code base);
    rtol 1e-5 / 1e-12 of the largest value only forgives rounding, never a wrong block."""
    rng = np.random.default_rng(seed)
    jobs = []
    for dtype in (np.float32, np.float64):
        for n in sizes:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            jobs.append(Job(f"matmul {np.dtype(dtype).name} {n}", lambda a=a, b=b: a @ b,
                            RTOL[np.dtype(dtype)]))
    return jobs


def kernel_jobs(K=None, n=1 << 20, seed=1):
    """fastopt kernels on 1M float32 elements (above the parallel threshold), from fresh
    copies of the same inputs each time. ``K`` is fastopt.kernels or fastopt.reference."""
    if K is None:
        from fastopt import kernels as K
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    p, g, m = f32(n), f32(n), f32(n)
    v = np.abs(f32(n))
    x, dy = f32(n // 256, 256), f32(n // 256, 256)
    gamma, beta, rmean, rvar = f32(256), f32(256), f32(256), np.abs(f32(256)) + 0.5

    def adam():
        p_, m_, v_ = p.copy(), m.copy(), v.copy()
        K.adam_step(p_, g, m_, v_, step=3, lr=1e-3, weight_decay=0.01)
        return p_, m_, v_

    def batchnorm():
        rm, rv = rmean.copy(), rvar.copy()
        y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, training=True)
        dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd, training=True)
        return y, mean, invstd, rm, rv, dx, dgamma, dbeta

    def lowbit(state_dtype):
        # an optimizer with low-precision state: one multi-tensor call over three arrays
        import fastopt

        impl = "reference" if getattr(K, "__name__", "").startswith("fastopt.reference") \
            else "fused"
        ps = [p[:n // 2].copy(), p[n // 2:n // 2 + 5000].copy(), p[n // 2 + 5000:].copy()]
        gs = [g[:n // 2], g[n // 2:n // 2 + 5000], g[n // 2 + 5000:]]
        opt = fastopt.Adam(ps, lr=1e-3, state_dtype=state_dtype, impl=impl, seed=5)
        opt.step(gs)
        opt.step(gs)
        return (*ps, *(b for bufs in opt.state.values() for e in bufs for b in e.buffers()))

    return [Job("adam_step 1M", adam), Job("batchnorm fwd+bwd 4096x256", batchnorm),
            Job("global_norm 1M", lambda: K.global_norm(g)),
            Job("Adam int8 state 1M", lambda: lowbit("int8")),
            Job("Adam bfloat16 state 1M", lambda: lowbit("bfloat16"))]


def stage(message):
    """Progress on stderr: a hang report shows the last stage reached."""
    print(f"[stage] {message}", file=sys.stderr, flush=True)


def alone(jobs):
    """Each job's result, computed once with nothing else running."""
    return {job.name: job.run() for job in jobs}


def _as_tuple(result):
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def same(result, expected, rtol):
    for r, e in zip(_as_tuple(result), _as_tuple(expected), strict=True):
        r, e = np.asarray(r), np.asarray(e)
        if r.shape != e.shape or r.dtype != e.dtype:
            return False
        if rtol is None:
            if not np.array_equal(r, e, equal_nan=True):
                return False
        elif not np.allclose(r, e, rtol=rtol, atol=rtol * float(np.abs(e).max(initial=0.0))):
            return False
    return True


class Failures:
    """Collects wrong results from any thread; ``exit()`` reports them."""

    def __init__(self):
        self.wrong, self.checked, self._lock = [], 0, threading.Lock()

    def check(self, where, job, result, expected):
        ok = same(result, expected, job.rtol)
        with self._lock:
            self.checked += 1
            if not ok:
                self.wrong.append(f"{where}: {job.name} wrong")
        return ok

    def error(self, where, exc):
        with self._lock:
            self.wrong.append(f"{where}: {type(exc).__name__}: {exc}")

    def exit(self):
        if self.wrong:
            print(f"{len(self.wrong)} wrong of {self.checked} results checked", file=sys.stderr)
            print("\n".join(self.wrong[:30]), file=sys.stderr)
            sys.exit(1)
        print(f"all {self.checked} results right")


def run_threads(workers, expected, failures, reps):
    """Run each list of jobs in its own Python thread, all started together, ``reps`` times
    over; every result is checked against ``expected``."""
    barrier = threading.Barrier(len(workers))

    def work(i, jobs):
        with np.errstate(all="ignore"):  # a wrong product may hold inf
            try:
                barrier.wait(WAIT)
                for rep in range(reps):
                    for job in jobs:
                        failures.check(f"thread {i} rep {rep}", job, job.run(), expected[job.name])
            except Exception as exc:  # noqa: BLE001 - reported as a failure
                failures.error(f"thread {i}", exc)

    threads = [threading.Thread(target=work, args=(i, jobs)) for i, jobs in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def expected_alone(jobs, failures):
    """Results computed alone, twice: they must be reproducible before they can be a reference."""
    first, second = alone(jobs), alone(jobs)
    for job in jobs:
        failures.check("alone, computed twice", job, second[job.name], first[job.name])
    return first


# ---------------------------------------------------------------------------- scenarios

def concurrent(matmul_threads, kernel_threads, reps):
    """NumPy products from ``matmul_threads`` Python threads at once (each starting at another
    size), with fastopt kernels from ``kernel_threads`` more, after ``import fastopt``."""
    import fastopt  # noqa: F401 - the import is what changes NumPy's BLAS

    failures = Failures()
    mm, kk = matmul_jobs(), kernel_jobs()
    expected = expected_alone(mm + kk, failures)
    stage("results computed alone")
    workers = [mm[i * len(mm) // matmul_threads:] + mm[:i * len(mm) // matmul_threads]
               for i in range(matmul_threads)] + [kk] * kernel_threads
    run_threads(workers, expected, failures, reps)
    failures.exit()


def openmp_setting(set_max_active_levels_zero=False):
    """Threaded products before ``import fastopt`` and after, alone and from two Python threads
    at once, under the OpenMP environment the parent chose (or with
    ``omp_set_max_active_levels(0)`` called at run time); then large kernels against
    fastopt.reference."""
    failures = Failures()
    mm = matmul_jobs(THREADED_SIZES)
    before = alone(mm)
    stage("products computed before the import")
    import fastopt
    from fastopt import reference

    stage("imported fastopt")
    if set_max_active_levels_zero:
        import ctypes
        ctypes.CDLL("libgomp.so.1").omp_set_max_active_levels(0)
    for job in mm:
        failures.check("after import", job, job.run(), before[job.name])
    stage("products after the import done")
    run_threads([mm, mm[::-1]], before, failures, reps=2)
    stage("products from two threads done")
    for job, ref in zip(kernel_jobs(fastopt.kernels), kernel_jobs(reference), strict=True):
        job.rtol = 1e-5  # against the NumPy reference: close, not the same bits
        failures.check("kernel vs reference", job, job.run(), ref.run())
    failures.exit()


def child_work(_=None):
    """What a child process computes: threaded products and large kernels (named results)."""
    return alone(matmul_jobs(THREADED_SIZES) + kernel_jobs())


def start_method(method):
    """A parent that imported fastopt and ran large kernels and threaded products starts a
    child with ``method``; the child's results must equal the parent's."""
    import multiprocessing

    failures = Failures()
    jobs = matmul_jobs(THREADED_SIZES) + kernel_jobs()
    expected = alone(jobs)
    stage("parent ran its products and kernels")
    with multiprocessing.get_context(method).Pool(1) as pool:
        result = pool.apply(child_work)
    for job in jobs:
        failures.check(f"{method} child", job, result[job.name], expected[job.name])
    failures.exit()


def fork_before_import():
    """Issue 8, point 5: the parent runs a libgomp parallel region before fastopt is imported,
    then forks; the child imports fastopt and runs threaded products and large kernels."""
    import ctypes

    gomp = ctypes.CDLL("libgomp.so.1")
    noop = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda data: None)
    gomp.GOMP_parallel.argtypes = [type(noop), ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    gomp.GOMP_parallel(noop, None, 2, 0)  # a team of 2 threads, as any OpenMP library would
    stage("parent ran a libgomp parallel region")

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        status = 1
        try:
            import fastopt  # noqa: F401

            stage("forked child imported fastopt")
            results = {}
            for job in matmul_jobs(THREADED_SIZES) + kernel_jobs():
                stage(f"forked child runs {job.name}")
                results[job.name] = job.run()
            with os.fdopen(write_end, "wb") as f:
                pickle.dump(results, f)
            status = 0
        except BaseException:  # noqa: BLE001 - the parent reports it
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        sys.exit(f"forked child failed with status {os.waitstatus_to_exitcode(status)}")
    failures = Failures()
    jobs = {job.name: job for job in matmul_jobs(THREADED_SIZES) + kernel_jobs()}
    expected = child_work()
    for name, value in pickle.loads(data).items():
        failures.check("forked child", jobs[name], value, expected[name])
    failures.exit()


def torch_jobs(n=1 << 20, seed=2):
    """torch products and a fused Adam step on 1M float32 parameters."""
    import torch
    from torch.optim.adam import adam as adam_step  # the functional form of torch.optim.Adam

    rng = np.random.default_rng(seed)
    jobs = []
    for dtype in (np.float32, np.float64):
        for size in (256, 512):
            a = torch.from_numpy(rng.standard_normal((size, size)).astype(dtype))
            b = torch.from_numpy(rng.standard_normal((size, size)).astype(dtype))
            jobs.append(Job(f"torch matmul {np.dtype(dtype).name} {size}",
                            lambda a=a, b=b: (a @ b).numpy(), RTOL[np.dtype(dtype)]))
    p0 = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal(n).astype(np.float32))

    def adam():
        p, m, v, step = p0.clone(), torch.zeros(n), torch.zeros(n), torch.tensor(0.0)
        for _ in range(3):
            adam_step([p], [g], [m], [v], [], [step], fused=True, amsgrad=False, beta1=0.9,
                      beta2=0.999, lr=1e-3, weight_decay=0.0, eps=1e-8, maximize=False)
        return p.numpy(), m.numpy(), v.numpy()

    return jobs + [Job("torch fused Adam 1M", adam)]


def with_torch(reps):
    """torch, NumPy and fastopt in one process: torch products, a torch fused Adam step, NumPy
    products and fastopt kernels from four Python threads at once."""
    import torch  # noqa: F401 - loaded before fastopt, as a torch user's script would
    import fastopt  # noqa: F401

    failures = Failures()
    tt = torch_jobs()
    t_mm, t_adam = tt[:-1], tt[-1:]
    mm, kk = matmul_jobs(SIZES[1:]), kernel_jobs()
    expected = expected_alone(tt + mm + kk, failures)
    stage("results computed alone")
    run_threads([t_mm, mm, kk + t_adam, mm[::-1]], expected, failures, reps)
    failures.exit()


def overlapping_num_threads():
    """``with fastopt.num_threads(n)`` in two threads, overlapping in a forced order:
    A enters num_threads(1), B enters num_threads(default + 1), A leaves, B leaves.
    Each thread must see its own setting inside, and the default outside."""
    import fastopt

    default = fastopt.get_num_threads()
    a_n, b_n = 1, default + 1
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []  # (where, got, expected)

    def look(where, expected):
        seen.append((where, fastopt.get_num_threads(), expected))

    def thread_a():
        with fastopt.num_threads(a_n):
            look("A inside", a_n)
            a_in.set()
            assert b_in.wait(WAIT), "B never entered"
            look("A inside, after B entered", a_n)
        look("A after its block", default)
        a_out.set()

    def thread_b():
        assert a_in.wait(WAIT), "A never entered"
        with fastopt.num_threads(b_n):
            look("B inside", b_n)
            b_in.set()
            assert a_out.wait(WAIT), "A never left"
            look("B inside, after A left", b_n)
        look("B after its block", default)

    failures = Failures()

    def guarded(fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            failures.error(fn.__name__, exc)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in (thread_a, thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    look("main thread after both", default)
    for where, got, expected in seen:
        failures.checked += 1
        if got != expected:
            failures.wrong.append(f"{where}: get_num_threads() = {got}, expected {expected}")
    failures.exit()


def blas_toggling(toggles, matmul_threads=2):
    """Issue 21: ``share_blas_threads()`` / ``restore_blas_threads()`` called over and over
    while ``matmul_threads`` Python threads multiply (dgemm, and dsyrk: ``a @ a.T``) and check
    every product against the one computed before fastopt was imported (``toggles=1``: a single
    ``share_blas_threads()`` while they multiply).  The old callback switch left OpenBLAS's
    own workers and the callback's jobs writing the same per-position mailboxes and buffers:
    a lost job hung NumPy for good."""
    rng = np.random.default_rng(3)
    jobs = []
    for n in THREADED_SIZES:
        a = rng.standard_normal((n, n))
        b = rng.standard_normal((n, n))
        jobs.append(Job(f"dgemm {n}", lambda a=a, b=b: a @ b, RTOL[np.dtype(np.float64)]))
        jobs.append(Job(f"dsyrk {n}", lambda a=a: a @ a.T, RTOL[np.dtype(np.float64)]))
    failures = Failures()
    expected = expected_alone(jobs, failures)
    stage("products computed before the import")
    import fastopt

    stop = threading.Event()
    started = threading.Barrier(matmul_threads + 1)

    def multiply(i):
        with np.errstate(all="ignore"):
            try:
                started.wait(WAIT)
                k = i
                while not stop.is_set():
                    job = jobs[k % len(jobs)]
                    failures.check(f"thread {i}", job, job.run(), expected[job.name])
                    k += 1
            except Exception as exc:  # noqa: BLE001 - reported as a failure
                failures.error(f"thread {i}", exc)

    threads = [threading.Thread(target=multiply, args=(i,)) for i in range(matmul_threads)]
    for t in threads:
        t.start()
    try:
        started.wait(WAIT)
        for k in range(toggles):
            fastopt.share_blas_threads()
            time.sleep(0.01)  # pacing only: the multiplying threads run between the switches
            if toggles > 1:
                fastopt.restore_blas_threads()
                time.sleep(0.01)
            stage(f"toggle {k + 1} of {toggles}")
        # keep multiplying, shared, until a product has run on fastopt's pool (a slow build,
        # e.g. under the sanitizers, may start none within the pacing sleeps above)
        from fastopt.runtime import blas as _blas
        fastopt.share_blas_threads()
        deadline = time.monotonic() + WAIT
        while (_blas._loaded_openblas_paths() and time.monotonic() < deadline
               and not any(shared > 0 for shared, _ in _blas._calls().values())):
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    stage("threads joined")
    from fastopt.runtime import blas

    calls = blas._calls()  # {library: (calls on fastopt's pool, calls on OpenBLAS's workers)}
    stage(f"calls {calls}")
    if blas._loaded_openblas_paths() and not any(shared > 0 for shared, _ in calls.values()):
        failures.wrong.append("no product ran on fastopt's pool: the test tested nothing")
    fastopt.restore_blas_threads()
    for job in jobs:  # NumPy still multiplies right, alone, on OpenBLAS's own threads
        failures.check("after the toggling", job, job.run(), expected[job.name])
    failures.exit()


def alternating(backend, reps):
    """Issue 23: one thread alternating fastopt kernels (64K, 1M, 16M elements, batch norm) and
    threaded NumPy products, as a training step does, with NumPy's BLAS left alone, on
    fastopt's threading ``backend`` ("pool" or "openmp"): every result as when computed
    alone, and the kernels' bits the same on both backends."""
    import fastopt
    from fastopt import kernels as K
    from fastopt.runtime import threads

    failures = Failures()
    mm = matmul_jobs(THREADED_SIZES)
    kk = kernel_jobs()[:2]
    rng = np.random.default_rng(4)
    for n in (1 << 16, 1 << 24):
        p = rng.standard_normal(n).astype(np.float32)

        def adam(p=p):
            p_, m_, v_ = p.copy(), np.zeros_like(p), np.zeros_like(p)
            K.adam_step(p_, p, m_, v_, step=1, lr=1e-3)
            return p_, m_, v_
        kk.append(Job(f"adam_step {n}", adam))
    with threads.threading_backend("pool"):
        expected = expected_alone(mm + kk, failures)      # the kernels' reference: the pool
    stage("results computed alone")
    threads.set_backend(backend)
    with np.errstate(all="ignore"):
        for rep in range(reps):
            for i, job in enumerate(kk):
                failures.check(f"{backend} rep {rep}", job, job.run(), expected[job.name])
                m = mm[(rep + i) % len(mm)]
                failures.check(f"{backend} rep {rep}", m, m.run(), expected[m.name])
    assert threads.get_backend() == backend and fastopt.info()["blas_shared"] == []
    failures.exit()
