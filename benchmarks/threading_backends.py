"""Pool against OpenMP backend, in alternating child processes (issue 23, item 1).

Each round starts one child process per configuration, in turn (the order reversed every
other round), and each child times every case: Adam at 64K / 1M / 16M float32 elements and
batch norm forward + backward on 4096x1024 and 64x64x56x56.  A child runs one backend only, so
neither runtime's idle threads spin beside the other's calls.  The ratios of one round come
from children run back to back; the figures printed are the per-round ratios and their
median, with the load average before and after.

    python benchmarks/threading_backends.py --rounds 5
    python benchmarks/threading_backends.py --config main:PYTHON=/path/to/other/python \
        --config pool:FASTOPT_THREADING=pool --config openmp:FASTOPT_THREADING=openmp
    python benchmarks/threading_backends.py --config pool:FASTOPT_THREADING=pool \\
        --config spin1ms:FASTOPT_THREADING=pool,FASTOPT_SPIN_US=1000 --config omp:FASTOPT_THREADING=openmp

Every configuration's times are divided by the last one's (by default the openmp backend).
Every figure is given for wall time and for the child's CPU time (time.process_time: all its
threads, spinning included).  The "mm ..." cases (not run by default) are the sharing target instead: a kernel call then a
256x256 NumPy matmul, BLAS left alone, alternating / (kernel + matmul timed apart), per config:

    python benchmarks/threading_backends.py --cases "mm adam 64K,mm adam 1M,mm adam 16M"
"""

import argparse
import json
import statistics

import _child
from _child import loadavg, parse_config

CASES = {"adam 64K": ("adam", 1 << 16, 200), "adam 1M": ("adam", 1 << 20, 20),
         "adam 16M": ("adam", 1 << 24, 2), "bn 4096x1024": ("bn", (4096, 1024), 2),
         "bn 64x64x56x56": ("bn", (64, 64, 56, 56), 1),
         # the sharing target: a kernel call then a 256x256 NumPy matmul (BLAS left alone),
         # timed alternating and apart; the figure is alternating / (kernel + matmul)
         "mm adam 64K": ("adam+mm", 1 << 16, 50), "mm adam 1M": ("adam+mm", 1 << 20, 20),
         "mm adam 16M": ("adam+mm", 1 << 24, 3), "mm bn 4096x1024": ("bn+mm", (4096, 1024), 3),
         "mm bn 64x64x56x56": ("bn+mm", (64, 64, 56, 56), 2)}
SHARING = [k for k in CASES if k.startswith("mm ")]

CHILD = _child.STEP + r"""
import json, sys, time
import fastopt

cases, reps = json.loads(sys.argv[1]), int(sys.argv[2])
out = {"threads": fastopt.get_num_threads()}
rng = np.random.default_rng(0)
A = rng.standard_normal((256, 256)).astype(np.float32)
C256 = np.empty_like(A)
matmul = lambda: np.matmul(A, A, out=C256)
for name, (kind, size, loops) in cases.items():
    step = make_step(kind, size, rng)
    if kind.endswith("+mm"):
        # alternating / (kernel + matmul), each timed in its own loop, the three loops
        # interleaved `reps` times; medians
        kernel = step
        loops_of = {"kernel": kernel, "matmul": matmul, "alt": lambda: (kernel(), matmul())}
        for f in loops_of.values():
            for _ in range(2 * loops):
                f()
        t = {k: [] for k in loops_of}
        c = {k: [] for k in loops_of}
        for _ in range(reps):
            for k, f in loops_of.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(loops):
                    f()
                t[k].append((time.perf_counter() - t0) / loops)
                c[k].append((time.process_time() - c0) / loops)
        med = {k: sorted(v)[len(v) // 2] for k, v in t.items()}
        cmed = {k: sorted(v)[len(v) // 2] for k, v in c.items()}
        out[name] = med["alt"] / (med["kernel"] + med["matmul"])
        out["cpu " + name] = cmed["alt"] / (cmed["kernel"] + cmed["matmul"])
        continue
    for _ in range(3 * loops):
        step()
    before = fastopt._threadpool.stats()
    times, cpus = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(loops):
            step()
        times.append((time.perf_counter() - t) / loops)
        cpus.append((time.process_time() - c) / loops)
    out[name] = sorted(times)[len(times) // 2]
    out["cpu " + name] = sorted(cpus)[len(cpus) // 2]
    after = fastopt._threadpool.stats()
    d = {k: after.get(k, 0) - before.get(k, 0) for k in ("jobs", "tasks_master", "tasks_workers", "wakes_spin",
                                           "wakes_sleep", "wakes_empty", "master_sleeps")}
    d["wake_us"] = after.get("wake_us")
    out["stats " + name] = d
print(json.dumps(out))
"""


def child(env_extra, cases, reps):
    return _child.run(CHILD, [json.dumps(cases), str(reps)], env_extra, timeout=600)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cases", default=",".join(k for k in CASES if k not in SHARING),
                    help="comma-separated, of: " + ", ".join(CASES))
    ap.add_argument("--config", action="append", type=parse_config,
                    help="NAME:VAR=VALUE,... (default: pool and openmp); the last is the reference")
    ap.add_argument("--stats", action="store_true", help="print the pool's counters per case")
    a = ap.parse_args(argv)
    configs = a.config or [("pool", {"FASTOPT_THREADING": "pool"}),
                           ("openmp", {"FASTOPT_THREADING": "openmp"})]
    cases = {k: CASES[k] for k in a.cases.split(",")}
    ref = configs[-1][0]
    from fastopt.runtime import machine

    print(f"cpu: {machine.describe()}\nload before {loadavg()}", flush=True)
    ratios = {c: {k: [] for k in cases if k not in SHARING} for c, _ in configs[:-1]}
    cpu_ratios = {c: {k: [] for k in cases if k not in SHARING} for c, _ in configs[:-1]}
    sharing = {c: {k: [] for k in cases if k in SHARING} for c, _ in configs}
    cpu_sharing = {c: {k: [] for k in cases if k in SHARING} for c, _ in configs}
    for r in range(a.rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        res = {name: child(env, cases, a.reps) for name, env in order}
        line = [f"round {r} (load {loadavg()}):"]
        for k in cases:
            if k in SHARING:   # a ratio already: alternating / (kernel + matmul)
                cells = " ".join(f"{c}={res[c][k]:.3f}" for c, _ in configs)
                line.append(f"  {k:15s} {cells} (alternating / apart)")
                for c, _ in configs:
                    sharing[c][k].append(res[c][k])
                    cpu_sharing[c][k].append(res[c]["cpu " + k])
                continue
            cells = " ".join(f"{c}={res[c][k] * 1e3:.3f}" for c, _ in configs)
            line.append(f"  {k:15s} {cells} ms")
            for c, _ in configs[:-1]:
                ratios[c][k].append(res[c][k] / res[ref][k])
                cpu_ratios[c][k].append(res[c]["cpu " + k] / res[ref]["cpu " + k])
        if a.stats:
            for c, _ in configs:
                for k in cases:
                    if k in SHARING:
                        continue
                    st = res[c]["stats " + k]
                    if st["jobs"]:
                        line.append(f"    {c} {k}: " + " ".join(f"{x}={y if not isinstance(y, float) else round(y, 1)}" for x, y in st.items()))
        print("\n".join(line), flush=True)
    print(f"load after {loadavg()}")
    def show(k, v, cv):
        print(f"  {k:18s} {statistics.median(v):.2f}  [{min(v):.2f}-{max(v):.2f}]   "
              f"CPU time {statistics.median(cv):.2f}  [{min(cv):.2f}-{max(cv):.2f}]")

    for c in ratios:
        print(f"{c} / {ref}, median over rounds [min-max] (wall, then the process's CPU time):")
        for k, v in ratios[c].items():
            show(k, v, cpu_ratios[c][k])
    for c in sharing:
        if any(sharing[c].values()):
            print(f"{c}: alternating with a 256x256 matmul / (kernel + matmul apart), median [min-max]:")
        for k, v in sharing[c].items():
            show(k, v, cpu_sharing[c][k])


if __name__ == "__main__":
    main()
