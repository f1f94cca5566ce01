"""Held-out accuracy of ``fastopt train`` per optimizer-state dtype and seed (not a test).

    python benchmarks/state_dtype_accuracy.py [--seeds 0 1 2] [-- extra fastopt train options]
    python benchmarks/state_dtype_accuracy.py --lsq [--seeds 0 1 2] [--steps 3000]

Runs ``fastopt train --state-dtype D --seed S --quiet`` for D in float32, bfloat16, int8,
float8 and prints the final held-out accuracy of each run, the mean per dtype and its
difference from float32 in points (issue 10's target: within 0.5 points on average over 3
seeds).  ``--lsq``: Adam on least-squares problems instead (a 4096 x 1024 design with
singular values spread over two decades, ``--steps`` full-batch steps), printing the relative
error of the solution ``|x - x*| / |x*|`` per dtype and seed, and each dtype's mean error
over int8's (issue 23's target for float8: at most 1.2).
"""

import argparse
import re
import subprocess
import sys

DTYPES = ("float32", "bfloat16", "int8", "float8")


def accuracy(dtype, seed, extra):
    cmd = [sys.executable, "-c", "import sys; from fastopt.cli import main; sys.exit(main())",
           "train", "--state-dtype", dtype, "--seed", str(seed), "--quiet", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"held-out accuracy: ([0-9.]+)", out).group(1))


def lsq_error(dtype, seed, steps, lr=1e-3):
    """Relative error of Adam (``state_dtype=dtype``) after ``steps`` full-batch steps on a
    least-squares problem drawn from ``seed``."""
    import numpy as np
    import fastopt

    rng = np.random.default_rng(seed)
    m, n = 4096, 1024
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = ((u * np.logspace(0, -2, n)) @ v.T).astype(np.float32)
    x_true = rng.standard_normal(n).astype(np.float32)
    b = a @ x_true
    x = np.zeros(n, np.float32)
    opt = fastopt.Adam([x], lr=lr, state_dtype=dtype, min_lowbit_size=0)
    g = np.empty(n, np.float32)
    for _ in range(steps):
        np.matmul(a.T, a @ x - b, out=g)
        opt.step([g])
    return float(np.linalg.norm(x - x_true) / np.linalg.norm(x_true))


def lsq(seeds, steps):
    table = {d: [lsq_error(d, s, steps) for s in seeds] for d in DTYPES}
    ref = sum(table["int8"]) / len(seeds)
    print(f"{'state dtype':12s}" + "".join(f"  seed {s:<4d}" for s in seeds)
          + "       mean  / int8")
    for d, errs in table.items():
        mean = sum(errs) / len(errs)
        print(f"{d:12s}" + "".join(f"  {e:9.3e}" for e in errs) + f"  {mean:9.3e}  {mean / ref:5.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lsq", action="store_true", help="least-squares relative errors instead")
    ap.add_argument("--steps", type=int, default=3000, help="--lsq: Adam steps")
    args, extra = ap.parse_known_args()
    extra = [x for x in extra if x != "--"]
    if args.lsq:
        return lsq(args.seeds, args.steps)
    table = {d: [accuracy(d, s, extra) for s in args.seeds] for d in DTYPES}
    base = sum(table["float32"]) / len(args.seeds)
    print(f"{'state dtype':12s}" + "".join(f"  seed {s:<4d}" for s in args.seeds)
          + "      mean  vs float32")
    for d, accs in table.items():
        mean = sum(accs) / len(accs)
        print(f"{d:12s}" + "".join(f"  {a:9.4f}" for a in accs)
              + f"  {mean:8.4f}  {100 * (mean - base):+6.2f} pt")


if __name__ == "__main__":
    main()
