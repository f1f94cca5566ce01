"""Held-out accuracy of ``fastopt train`` per optimizer-state dtype and seed (not a test).

    python benchmarks/state_dtype_accuracy.py [--seeds 0 1 2] [-- extra fastopt train options]
    python benchmarks/state_dtype_accuracy.py --lsq [--seeds 0 1 2] [--steps 1000]

Runs ``fastopt train --state-dtype D --seed S --quiet`` for D in float32, bfloat16, int8,
float8 and prints the final held-out accuracy of each run, the mean per dtype and its
difference from float32 in points (issue 10's target: within 0.5 points on average over 3
seeds).  ``--lsq``: Adam on least-squares problems instead (1024 unknowns, singular values
spread over one decade, ``--steps`` full-batch steps, a cosine learning rate), printing the relative
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


def lsq_error(dtype, seed, steps, n=1024, lr=1e-2):
    """Relative error |x - x*| / |x*| of Adam (``state_dtype=dtype``) after ``steps``
    full-batch steps on the least-squares problem min |A x - b|^2 / 2 drawn from ``seed``:
    ``n`` unknowns, singular values of A spread over one decade (the gradient is
    ``A^T A x - A^T b``, from the Gram matrix), the learning rate decayed as a cosine from
    ``lr`` to 0."""
    import numpy as np
    import fastopt

    rng = np.random.default_rng(seed)
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    gram = ((v * np.logspace(0, -2, n)) @ v.T).astype(np.float32)     # A^T A: s^2 in [1e-2, 1]
    x_true = rng.standard_normal(n).astype(np.float32)
    atb = gram @ x_true
    x = np.zeros(n, np.float32)
    opt = fastopt.Adam([x], lr=lr, state_dtype=dtype, min_lowbit_size=0)
    g = np.empty(n, np.float32)
    for t in range(steps):
        opt.lr = lr * 0.5 * (1 + np.cos(np.pi * t / steps))
        np.matmul(gram, x, out=g)
        g -= atb
        opt.step([g])
    return float(np.linalg.norm(x - x_true) / np.linalg.norm(x_true))


def lsq(seeds, steps, dtypes):
    table = {d: [lsq_error(d, s, steps) for s in seeds] for d in dtypes}
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
    ap.add_argument("--steps", type=int, default=1000, help="--lsq: Adam steps")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES,
                    help="the state dtypes to run (float32 and, with --lsq, int8 always run)")
    args, extra = ap.parse_known_args()
    extra = [x for x in extra if x != "--"]
    need = ("float32", "int8") if args.lsq else ("float32",)
    dtypes = [d for d in DTYPES if d in need or d in args.dtypes]
    if args.lsq:
        return lsq(args.seeds, args.steps, dtypes)
    table = {d: [accuracy(d, s, extra) for s in args.seeds] for d in dtypes}
    base = sum(table["float32"]) / len(args.seeds)
    print(f"{'state dtype':12s}" + "".join(f"  seed {s:<4d}" for s in args.seeds)
          + "      mean  vs float32")
    for d, accs in table.items():
        mean = sum(accs) / len(accs)
        print(f"{d:12s}" + "".join(f"  {a:9.4f}" for a in accs)
              + f"  {mean:8.4f}  {100 * (mean - base):+6.2f} pt")


if __name__ == "__main__":
    main()
