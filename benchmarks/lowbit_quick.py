"""Adam at 16M elements with float32, bfloat16 and int8 state: the "state" rows of ``fastopt bench``.

    python benchmarks/lowbit_quick.py [--n 16777216] [--threads 2] [--reps 15]

The same measurements as ``fastopt bench --only state`` (:func:`fastopt.benchmark.cases.state_case`:
time per step, GB/s, roofline, ratio against PyTorch's fused float32 Adam, state bytes per
parameter, bitsandbytes' Adam8bit when it is installed), with a size, thread count and number
of repetitions of one's own.
"""

import argparse

import fastopt
from fastopt.benchmark import cases, format_table, measure, suite


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    fastopt.set_num_threads(args.threads)
    torch = None if args.no_torch else suite._torch()
    notes = []
    rows = measure(cases.state_case(args.n), args.reps, torch, notes)
    meta = dict(version=fastopt.__version__, isa=suite.ext.level, threads=args.threads,
                torch=None if torch is None else torch.__version__, reps=args.reps, notes=notes)
    print(format_table({"meta": meta, "rows": rows}))


if __name__ == "__main__":
    main()
