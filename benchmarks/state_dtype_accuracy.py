"""Held-out accuracy of ``fastopt train`` per optimizer-state dtype and seed (not a test).

    python benchmarks/state_dtype_accuracy.py [--seeds 0 1 2] [-- extra fastopt train options]

Runs ``fastopt train --state-dtype D --seed S --quiet`` for D in float32, bfloat16, int8 and
prints the final held-out accuracy of each run, the mean per dtype and its difference from
float32 in points (issue 10's target: within 0.5 points on average over 3 seeds).
"""

import argparse
import re
import subprocess
import sys

DTYPES = ("float32", "bfloat16", "int8")


def accuracy(dtype, seed, extra):
    cmd = [sys.executable, "-c", "import sys; from fastopt.cli import main; sys.exit(main())",
           "train", "--state-dtype", dtype, "--seed", str(seed), "--quiet", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"held-out accuracy: ([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args, extra = ap.parse_known_args()
    extra = [x for x in extra if x != "--"]
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
