"""Quick benchmark (not a test): Adam at 16M elements with float32, bfloat16 and int8 state.

    python benchmarks/lowbit_quick.py [--n 16777216] [--threads 2] [--reps 15]

Rows: fastopt Adam float32 state, bf16 state, int8 state, PyTorch fused float32 Adam (when
torch is installed).  Each row: median time of one step, GB/s of the bytes the step must move,
the ratio against PyTorch's fused Adam measured in the same run, and the fraction of the
in-process roofline: the time of a pass moving the same buffers (``_roofline.update`` for
float32 state, ``_lowbit.roofline`` for uint16 / uint8 state) with one add per element,
divided by the kernel's time; and the row's bytes at the bandwidth of the float32 pass (seven
interleaved streams, as Adam's; the low-precision pass moves its buffers one after another per
block and reaches more GB/s, so both yardsticks are shown).  Timings interleave the rows (round robin) so drift on a shared
machine hits all rows alike.
"""

import argparse
import time

import numpy as np

import fastopt
from fastopt import kernels as K
from fastopt.kernels import lowbit as L
from fastopt.runtime.dispatch import ext


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    n, nt = args.n, args.threads
    fastopt.set_num_threads(nt)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    m32, v32 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    mb, vb = L.zeros_bf16(n), L.zeros_bf16(n)
    (mc, ma), (vc, va) = L.zeros_int8(n, L.signed_map()), L.zeros_int8(n, L.unsigned_map())
    nb = L.absmax_size(n)
    step = [10]

    rows = {
        "adam float32": (lambda: K.adam_step(p, g, m32, v32, step=10, lr=1e-3), 28 * n,
                         lambda: ext._roofline.update([p, m32, v32], g, nt)),
        "adam bf16": (lambda: L.adam_step_bf16(p, g, mb, vb, step=10, lr=1e-3), 20 * n,
                      lambda: ext._lowbit.roofline(p, g, [mb, vb], nt)),
        "adam int8": (lambda: L.adam_step_int8(p, g, mc, ma, vc, va, step=10, lr=1e-3),
                      16 * n + 16 * nb, lambda: ext._lowbit.roofline(p, g, [mc, vc], nt)),
    }
    try:
        import torch
        torch.set_num_threads(nt)
        tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
        tp.grad = torch.from_numpy(g.copy())
        opt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        opt.step()
        rows["torch fused adam f32"] = (opt.step, 28 * n, None)
    except ImportError:
        pass
    if args.only:
        rows = {k: v for k, v in rows.items() if any(s in k for s in args.only.split(","))}
    for fn, _, roof in rows.values():   # warm up (and fill the state with real values)
        for _ in range(3):
            fn()
            if roof is not None:
                roof()
    times = {k: [] for k in rows}
    rtimes = {k: [] for k in rows}
    for _ in range(args.reps):
        for k, (fn, _, roof) in rows.items():
            t0 = time.perf_counter(); fn(); times[k].append(time.perf_counter() - t0)
            if roof is not None:
                t0 = time.perf_counter(); roof(); rtimes[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    torch_t = med.get("torch fused adam f32")
    print(f"n = {n:,}, threads = {nt}, ISA = {ext.level}, reps = {args.reps}")
    # the float32 pass's bandwidth (7 streams interleaved, as Adam's) as a second yardstick
    bw32 = 28 * n / float(np.median(rtimes["adam float32"])) if rtimes.get("adam float32") else None
    print(f"{'row':<22} {'ms':>8} {'GB/s':>7} {'vs torch':>9} {'roofline':>9} {'roof(f32 bw)':>13}")
    for k, (fn, nbytes, roof) in rows.items():
        t = med[k]
        vs = f"{torch_t / t:8.2f}x" if torch_t else "       -"
        rf = f"{float(np.median(rtimes[k])) / t:9.2f}" if rtimes[k] else "        -"
        r32 = f"{nbytes / bw32 / t:13.2f}" if bw32 else "            -"
        print(f"{k:<22} {t * 1e3:8.2f} {nbytes / t / 1e9:7.1f} {vs:>9} {rf} {r32}")
    print("roofline: a pass moving the row's own buffers with one add per element (same blocks and "
          "threads) / time; roof(f32 bw): the row's bytes at the bandwidth of the float32 Adam "
          "roofline pass / time")


if __name__ == "__main__":
    main()
