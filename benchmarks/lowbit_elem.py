"""Per-element cost of the low-precision kernels, one thread, in cache (default 256K elements).

    python benchmarks/lowbit_elem.py [--n 262144] [--rounds 3] [--reps 200] [--clock wall|cpu]
                                     [--so OTHER.so ...] [case ...]

Cases: adam_f32 (fastopt's float32 Adam, the yardstick), adam_bf16, adam_int8, adam_f8,
rms_bf16, rms_int8, rms_f8, sgd_bf16, sgd_int8, sgd_f8.  Each time is the best of 7 batches of ``--reps`` calls, the
best again over ``--rounds`` rounds that alternate between the built ``_lowbit`` and each
``--so`` (another build of ``fastopt/_ext/<isa>/_lowbit*.so``, e.g. a copy kept from
before a change; its file name labels the column): on a shared
machine, compare numbers from one run only.  ``--clock cpu`` times the thread's CPU time
(``time.thread_time``) instead of the wall clock: on a machine shared with other work it
leaves out the time the thread was not running (use short batches, e.g. ``--reps 20``).
"""

import argparse
import importlib.util
import os
import time

import numpy as np

import fastopt
from fastopt import kernels as K
from fastopt.kernels._formats import absmax_size, signed_map, unsigned_map
from fastopt.runtime.dispatch import ext


def _load(path):
    tag = "lowbit_elem_" + os.path.basename(path).split(".")[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(f"{tag}._lowbit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 18)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--so", action="append", default=[])
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args()
    fastopt.set_num_threads(1)
    n = args.n
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    st7, ut7 = signed_map().kernel_tables(), unsigned_map().kernel_tables()
    c0 = rng.integers(0, 256, n).astype(np.uint8)
    c1 = rng.integers(0, 256, n).astype(np.uint8)
    a0 = np.full(absmax_size(n), 0.01, np.float32)
    a1 = np.full(absmax_size(n), 1e-4, np.float32)
    b0 = ((rng.standard_normal(n) * 1e-2).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    b1 = ((np.abs(rng.standard_normal(n)) * 1e-4).astype(np.float32).view(np.uint32) >> 16
          ).astype(np.uint16)
    m32, v32 = np.zeros(n, np.float32), np.zeros(n, np.float32)

    def cases(L):
        # (a build from before the int8 fast rule takes the maps' first six tables)
        st, ut = (st7, ut7) if hasattr(L, "_fast_check") else (st7[:6], ut7[:6])
        return {
            "adam_f32": lambda: K.adam_step(p, g, m32, v32, step=10, lr=1e-3),
            "adam_bf16": lambda: L.adam_bf16(p, g, b0, b1, 1e-3, .9, .999, 1e-8, 0.0, False, 10,
                                             1, 0, 1.0, 1),
            "adam_int8": lambda: L.adam_int8(p, g, c0, a0, c1, a1, st, ut, 1e-3, .9, .999, 1e-8,
                                             0.0, False, 10, 1.0, 1),
            "adam_f8": lambda: L.adam_f8(p, g, c0, a0, c1, a1, 1e-3, .9, .999, 1e-8,
                                         0.0, False, 10, 1.0, 1),
            "rms_bf16": lambda: L.rmsprop_bf16(p, g, b1, 1e-3, .99, 1e-8, True, 0.0, 10, 1, 0,
                                               1.0, 1),
            "rms_int8": lambda: L.rmsprop_int8(p, g, c1, a1, ut, 1e-3, .99, 1e-8, True, 0.0, 1.0,
                                               1),
            "rms_f8": lambda: L.rmsprop_f8(p, g, c1, a1, 1e-3, .99, 1e-8, True, 0.0, 1.0, 1),
            "sgd_bf16": lambda: L.sgd_bf16(p, g, b0, 1e-3, .9, 0.0, False, 0.0, 10, 1, 0, 1.0, 1),
            "sgd_int8": lambda: L.sgd_int8(p, g, c0, a0, st, 1e-3, .9, 0.0, False, 0.0, 1.0, 1),
            "sgd_f8": lambda: L.sgd_f8(p, g, c0, a0, 1e-3, .9, 0.0, False, 0.0, 1.0, 1),
        }

    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    def run(f, reps=args.reps):
        best = 1e9
        for _ in range(7):
            t = clock()
            for _ in range(reps):
                f()
            best = min(best, (clock() - t) / reps)
        return best / n * 1e9

    mods = {"built": ext._lowbit}
    for path in args.so:
        tag = os.path.basename(path)
        mods[tag if tag not in mods else path] = _load(path)   # (a repeated name: the path)
    sel = args.cases or list(cases(ext._lowbit))
    res = {}
    for _ in range(args.rounds):
        for tag, mod in mods.items():
            cs = cases(mod)
            for k in sel:
                if k == "adam_f32" and tag != "built":
                    continue
                res[tag, k] = min(res.get((tag, k), 1e9), run(cs[k]))
    print(f"ns per element, 1 thread, n = {n} (isa {ext.level}, {args.clock} clock)")
    for k in sel:
        print(f"{k:10s} " + "  ".join(f"{tag}={res[tag, k]:.3f}" for tag in mods
                                      if (tag, k) in res))


if __name__ == "__main__":
    main()
