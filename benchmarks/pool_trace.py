"""Where a parallel call's time goes, pool against OpenMP backend (issue 23, item 1).

Each round starts one child process per backend, in turn (the order reversed every other
round); a child runs a case, then traces ``--calls`` steps (``fastopt._threadpool.trace_start``:
one record per task, with its thread and its start and end).  Per parallel call (a kernel
step makes one per pass), relative to the moment the caller published it:

  m_first / w_first   when the caller / the first worker started its first task (us)
  w_wake              when the worker saw the call (pool only)
  m_end / w_end       when they ended their last task
  ret                 when the caller returned (the call's duration)
  tail                ret - the last task's end (the caller's wait and return)
  m_tasks / w_tasks   tasks each ran, stolen: of them, outside its own static range
  m_task / w_task     the median duration of one task (us): the same kernel at the same
                      speed gives the same figure on both backends, whatever the load
  gap                 from a call's return to the next call's publish (Python, serial code)
  gap_cpu             the caller's CPU time in that gap (the gap on a quiet machine)

Medians over the traced calls of a round, then the median over rounds.  With other work on
the cores the times are long and spread, but the task durations and block counts still say
what each thread did.

    python benchmarks/pool_trace.py --cases "bn 64x64x56x56,adam 16M" --rounds 5
"""

import argparse
import json
import statistics

import _child
from _child import loadavg, parse_config

CASES = {"adam 64K": ("adam", 1 << 16, 200), "adam 1M": ("adam", 1 << 20, 20),
         "adam 16M": ("adam", 1 << 24, 10), "bn 4096x1024": ("bn", (4096, 1024), 3),
         "bn 64x64x56x56": ("bn", (64, 64, 56, 56), 6)}

CHILD = _child.STEP + r"""
import json, sys
import fastopt
from fastopt import _threadpool as tp

cases = json.loads(sys.argv[1])
out = {}
rng = np.random.default_rng(0)
for name, (kind, size, calls) in cases.items():
    step = make_step(kind, size, rng)
    for _ in range(3 * calls):
        step()
    tp.trace_start(4_000_000)
    for _ in range(calls):
        step()
    r = np.frombuffer(tp.trace_stop(), tp.TRACE_DTYPE)
    jobs = []
    for j in np.unique(r["job"]):
        q = r[r["job"] == j]
        pubr = q[q["task"] == -1]
        retr = q[q["task"] == -2]
        if len(pubr) != 1 or len(retr) != 1:
            continue
        pub, ret = int(pubr["t0"][0]), int(retr["t0"][0])
        tasks = q[q["task"] >= 0]
        n = int(tasks["task"].max()) + 1 if len(tasks) else 0
        slots = sorted(set(int(s) for s in tasks["slot"]))
        nr = max(slots) + 1 if slots else 1
        d = {"pub": pub, "ret": (ret - pub) / 1e3, "ntasks": n}
        ends = []
        for s, tag in ((0, "m"), (1, "w")):
            t = tasks[tasks["slot"] == s]
            wake = q[(q["slot"] == s) & (q["task"] == -3)]
            if len(wake):
                d["w_wake"] = (int(wake["t0"][0]) - pub) / 1e3
            d[tag + "_tasks"] = len(t)
            if not len(t):
                continue
            lo, hi = s * n // nr, (s + 1) * n // nr
            d[tag + "_stolen"] = int(((t["task"] < lo) | (t["task"] >= hi)).sum())
            d[tag + "_first"] = (int(t["t0"].min()) - pub) / 1e3
            d[tag + "_end"] = (int(t["t1"].max()) - pub) / 1e3
            d[tag + "_task"] = float(np.median(t["t1"] - t["t0"])) / 1e3
            ends.append(int(t["t1"].max()))
        d["tail"] = (ret - max(ends)) / 1e3 if ends else 0.0
        d["ret_abs"], d["pub_cpu"], d["ret_cpu"] = ret, int(pubr["t1"][0]), int(retr["t1"][0])
        jobs.append(d)
    for a, b in zip(jobs, jobs[1:]):
        a["gap"] = (b["pub"] - a["ret_abs"]) / 1e3
        a["gap_cpu"] = (b["pub_cpu"] - a["ret_cpu"]) / 1e3
    out[name] = jobs
print(json.dumps(out))
"""

KEYS = ("ntasks", "m_first", "w_wake", "w_first", "m_end", "w_end", "ret", "tail", "m_tasks",
        "w_tasks", "m_stolen", "w_stolen", "m_task", "w_task", "gap", "gap_cpu")


def child(env_extra, cases):
    return _child.run(CHILD, [json.dumps(cases)], env_extra, timeout=900)


def summary(jobs, passes):
    """{pass index: {key: median over the calls of that pass}} (a step makes `passes` calls)."""
    out = {}
    for k in range(passes):
        sel = jobs[k::passes]
        out[k] = {key: statistics.median(j[key] for j in sel if key in j)
                  for key in KEYS if any(key in j for j in sel)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="adam 16M,bn 64x64x56x56")
    ap.add_argument("--config", action="append", type=parse_config,
                    help="NAME:VAR=VALUE,... (default: pool and openmp)")
    a = ap.parse_args(argv)
    configs = a.config or [("pool", {"FASTOPT_THREADING": "pool"}),
                           ("openmp", {"FASTOPT_THREADING": "openmp"})]
    cases = {k: CASES[k] for k in a.cases.split(",")}
    rounds = {c: {k: [] for k in cases} for c, _ in configs}
    print(f"load before {loadavg()}", flush=True)
    for r in range(a.rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for name, env in order:
            res = child(env, cases)
            for k in cases:
                rounds[name][k].append(res[k])
        print(f"round {r} done (load {loadavg()})", flush=True)
    print(f"load after {loadavg()}")
    for k, (kind, _, _) in cases.items():
        passes = 1 if kind == "adam" else 4
        print(f"\n{k}: medians over calls, then over {a.rounds} rounds (times in us)")
        for p in range(passes):
            rows = {}
            for c, _ in configs:
                per_round = [summary(jobs, passes)[p] for jobs in rounds[c][k]]
                rows[c] = {key: statistics.median(s[key] for s in per_round if key in s)
                           for key in KEYS if any(key in s for s in per_round)}
            label = "" if passes == 1 else f"  pass {p} ({rows[configs[0][0]].get('ntasks', 0):.0f} tasks)"
            if label:
                print(label)
            for c, _ in configs:
                print(f"    {c:8s} " + " ".join(f"{key}={v:.4g}" for key, v in rows[c].items()
                                             if key != "ntasks"))


if __name__ == "__main__":
    main()
