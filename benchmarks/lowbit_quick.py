"""Adam at 16M elements with float32, bfloat16, int8 and float8 state: ``fastopt bench``'s
"state" rows.

    python benchmarks/lowbit_quick.py [--n 16777216] [--threads 2] [--reps 15] [--runs 3]

The same measurements as ``fastopt bench --only state`` (:func:`fastopt.benchmark.cases.state_case`:
time per step, GB/s, roofline, ratio against PyTorch's fused float32 Adam, state bytes per
parameter, bitsandbytes' Adam8bit when it is installed), with a size, thread count and number
of repetitions of one's own.  ``--runs K`` measures in K child processes one after the other
(each a fresh process, its rows round robin) and prints each row's range over them: time,
fraction of its roofline, ratio against PyTorch's fused float32 Adam.
"""

import argparse
import json
import subprocess
import sys

import fastopt
from fastopt.benchmark import cases, format_table, measure, suite


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--runs", type=int, default=1, help="child processes, one after the other")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON (a child)")
    args = ap.parse_args()
    if args.runs > 1:
        return ranges(args)
    fastopt.set_num_threads(args.threads)
    torch = None if args.no_torch else suite._torch()
    notes = []
    rows = measure(cases.state_case(args.n), args.reps, torch, notes)
    meta = dict(version=fastopt.__version__, isa=suite.ext.level, threads=args.threads,
                torch=None if torch is None else torch.__version__, reps=args.reps, notes=notes)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]))
    else:
        print(format_table({"meta": meta, "rows": rows}))


def ranges(args):
    """Each row's range over ``args.runs`` child processes."""
    cmd = [sys.executable, __file__, "--n", str(args.n), "--threads", str(args.threads),
           "--reps", str(args.reps), "--json"] + (["--no-torch"] if args.no_torch else [])
    runs = [json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                       .stdout.splitlines()[-1]) for _ in range(args.runs)]
    print(f"Adam, {args.n:,} elements, {args.threads} threads, {args.runs} child processes "
          f"of {args.reps} round-robin repetitions (ranges over the processes):")
    print(f"{'step':24s} {'time ms':>17s} {'GB/s':>13s} {'roofline':>11s} {'vs torch':>11s}")
    for k, row in enumerate(runs[0]):
        rs = [run[k] for run in runs]

        def rng(f, fmt):
            v = [f(r) for r in rs]
            return "—" if None in v else f"{fmt.format(min(v))}-{fmt.format(max(v))}"

        def per(key):
            return lambda r: r.get(key) and r[key] / r["time"]

        print(f"{row['name']:24s} {rng(lambda r: r['time'] * 1e3, '{:.2f}'):>17s} "
              f"{rng(lambda r: r['bytes'] / r['time'] / 1e9, '{:.1f}'):>13s} "
              f"{rng(per('roofline_time'), '{:.2f}'):>11s} {rng(per('torch_time'), '{:.2f}'):>11s}")


if __name__ == "__main__":
    main()
