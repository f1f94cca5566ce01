"""Kernel families per instruction-set level and build, against PyTorch, in alternating child
processes (issue 23, item 3 and the int8 / bfloat16 targets).

Each round starts one child per configuration, in turn (the order reversed every other
round); a child runs every case with one build, one ISA level (``FASTOPT_ISA``) and one thread
count, and reports the best time of each.  Ratios are formed within a round only (children run
back to back), and printed as the range over rounds, with the load average before and after:
on a shared machine compare figures of one run only.

    python benchmarks/isa_levels.py --rounds 3 --sizes 16M --cases adam_int8,adam_bf16,torch \\
        --config new512:FASTOPT_ISA=avx512 --config old512:FASTOPT_ISA=avx512,PYTHONPATH=/tmp/old

A configuration is ``label:VAR=value,VAR=value`` (environment of its child; ``THREADS=k``
sets the thread count of fastopt and torch alike, default 1).  Cases: adam, sgd, rmsprop
(float32 state), adam_bf16, adam_int8, adam_f8, bn (forward + backward, N x 256 channels of the size),
ema, torch (``torch.optim.Adam(fused=True)``, float32).  Every Adam time is compared with
the same child's ``torch`` time of the same size when present (``x torch``: above 1 is faster
than torch), and with the first configuration's (``x vs first``: above 1 is faster).
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import fastopt
from fastopt import kernels as K
from fastopt.kernels import lowbit as L
from fastopt.runtime.alloc import staggered_zeros

cases, sizes, budget = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
nt = int(sys.argv[4])
clock = time.perf_counter if sys.argv[5] == "wall" else time.process_time
fastopt.set_num_threads(nt)
out = {"isa": fastopt.runtime.dispatch.ext.level}
rng = np.random.default_rng(0)
for size in sizes:
    p = rng.standard_normal(size).astype(np.float32)
    g = (rng.standard_normal(size) * 1e-2).astype(np.float32)
    # the state where fastopt's optimizers put it (fastopt.benchmark.cases.fastopt_state)
    m, v = (staggered_zeros(p.shape, np.float32, like=p, k=k) for k in (1, 2))
    for name in cases:
        if name == "adam":
            f = lambda: K.adam_step(p, g, m, v, step=10, lr=1e-3)
        elif name == "sgd":
            f = lambda: K.sgd_step(p, g, m, lr=1e-3, momentum=0.9)
        elif name == "rmsprop":
            f = lambda: K.rmsprop_step(p, g, v, lr=1e-3)
        elif name == "adam_bf16":
            mb, vb = L.zeros_bf16(size), L.zeros_bf16(size)
            f = lambda: L.adam_step_bf16(p, g, mb, vb, step=10, lr=1e-3)
        elif name == "adam_int8":
            (mc, ma), (vc, va) = L.zeros_int8(size, L.signed_map()), L.zeros_int8(size, L.unsigned_map())
            for _ in range(3):
                L.adam_step_int8(p, g, mc, ma, vc, va, step=10, lr=1e-3)
            f = lambda: L.adam_step_int8(p, g, mc, ma, vc, va, step=10, lr=1e-3)
        elif name == "adam_f8":
            (mc, ma), (vc, va) = L.zeros_float8(size), L.zeros_float8(size)
            for _ in range(3):
                L.adam_step_f8(p, g, mc, ma, vc, va, step=10, lr=1e-3)
            f = lambda: L.adam_step_f8(p, g, mc, ma, vc, va, step=10, lr=1e-3)
        elif name == "bn":
            x = p.reshape(-1, 256)
            dy = g.reshape(-1, 256)
            gamma, beta = np.ones(256, np.float32), np.zeros(256, np.float32)
            y, dx = np.empty_like(x), np.empty_like(x)
            def f():
                _, mu, s = K.batchnorm_forward(x, gamma, beta, None, None, out=y)
                K.batchnorm_backward(dy, x, gamma, mu, s, out=(dx, None, None))
        elif name == "ema":
            e = p.copy()
            f = lambda: K.ema_update(e, p, decay=0.999)
        elif name == "torch":
            import torch
            torch.set_num_threads(nt)
            tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
            tp.grad = torch.from_numpy(g.copy())
            f = torch.optim.Adam([tp], lr=1e-3, fused=True).step
        f()
        reps = max(1, min(1000, int(2e6 / size)))
        best, spent = 1e9, 0.0
        while spent < budget or best == 1e9:
            t, w = clock(), time.perf_counter()
            for _ in range(reps):
                f()
            dt = clock() - t
            spent += time.perf_counter() - w
            best = min(best, dt / reps)
        out[f"{name} {size}"] = best
print(json.dumps(out))
"""

SIZES = {"64K": 1 << 16, "1M": 1 << 20, "16M": 1 << 24}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.5, help="seconds per case per child")
    ap.add_argument("--sizes", default="64K,1M,16M")
    ap.add_argument("--cases", default="adam,sgd,rmsprop,adam_bf16,adam_int8,bn,ema,torch")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the child's CPU time (all its threads), for a loaded machine")
    args = ap.parse_args()
    configs = []
    for c in args.config or ["avx512:FASTOPT_ISA=avx512", "avx2:FASTOPT_ISA=avx2"]:
        label, _, env = c.partition(":")
        configs.append((label, dict(kv.split("=", 1) for kv in env.split(",") if kv)))
    sizes = [SIZES[s] for s in args.sizes.split(",")]
    cases = args.cases.split(",")
    print(f"load before: {os.getloadavg()}, {args.clock} clock")
    rounds = []
    for r in range(args.rounds):
        res = {}
        for label, env in (configs if r % 2 == 0 else configs[::-1]):
            e = dict(os.environ, **env)
            nt = e.pop("THREADS", "1")
            e["OMP_NUM_THREADS"] = nt
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases), json.dumps(sizes),
                                  str(args.budget), nt, args.clock],
                                 env=e, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{label}: {out.stderr}")
            res[label] = json.loads(out.stdout.strip().splitlines()[-1])
        rounds.append(res)
    print("load after:", os.getloadavg())
    first = configs[0][0]
    print("isa per config:", {lb: rounds[0][lb]["isa"] for lb, _ in configs})
    for size in sizes:
        for name in cases:
            key = f"{name} {size}"
            cells = []
            for label, _ in configs:
                ms = [rd[label][key] * 1e3 for rd in rounds]
                cell = f"{label} {min(ms):.3f}-{max(ms):.3f} ms"
                if label != first:
                    rs = [rd[first][key] / rd[label][key] for rd in rounds]
                    cell += f" ({min(rs):.2f}-{max(rs):.2f}x vs {first})"
                if name.startswith("adam") and "torch" in cases:
                    ts = [rd[label][f"torch {size}"] / rd[label][key] for rd in rounds]
                    cell += f" [{min(ts):.2f}-{max(ts):.2f}x torch]"
                cells.append(cell)
            print(f"{key:18s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
