"""Which 8-bit minifloat layout for Adam's state?  A NumPy emulation (not a test).

    python benchmarks/float8_layouts.py [--seeds 0 1 2] [--steps 1000]

Runs Adam (:func:`fastopt.reference.adam_step`, float32) on the least-squares problems of
``state_dtype_accuracy.py --lsq`` with the state stored, after every step, block-wise (absmax
per 256, the absmax mapped onto the largest code, nearest code with ties to even) in a
minifloat layout per moment: e<E>m<M> with a sign bit for the first moment, without one for
the second (the second moment is never negative).  Prints the relative error of the solution
per layout, and int8 (bitsandbytes' dynamic maps) and float32 state for reference.  The
exponent bias is not a choice: with the absmax mapped onto the largest code, the grid relative
to the absmax depends only on the numbers of exponent and mantissa bits.
"""

import argparse

import numpy as np

from fastopt import reference as R
from fastopt.kernels import _formats as F


def grid(ebits, mbits):
    """The non-negative values of a minifloat with ebits/mbits, scaled so its largest is 1."""
    e = np.arange(2 ** ebits)[:, None]
    m = np.arange(2 ** mbits)[None, :]
    v = np.where(e > 0, (1 + m / 2 ** mbits) * 2.0 ** e, m / 2 ** mbits * 2.0)
    v = np.unique(v.ravel())
    return v / v[-1]


def quantize(x, values):
    """Block-wise: x / absmax to the nearest of ``values`` (ties to the even index), sign kept."""
    n = x.size
    nb = -(-n // 256)
    b = np.zeros(nb * 256)
    b[:n] = x
    b = b.reshape(nb, 256)
    a = np.abs(b).max(axis=1, keepdims=True)
    y = np.abs(b) / np.where(a == 0, 1, a)
    mids = (values[:-1] + values[1:]) / 2
    k = np.searchsorted(mids, y, "left")
    tie = (k < len(mids)) & (y == mids[np.minimum(k, len(mids) - 1)])
    k = np.where(tie & (k % 2 == 1), k + 1, k)
    out = values[np.minimum(k, len(values) - 1)] * np.sign(b) * a
    return out.ravel()[:n].astype(np.float32)


def int8(x, signed):
    q = F.signed_map() if signed else F.unsigned_map()
    return F.dequantize_blockwise(*F.quantize_blockwise(x, q), q)


def run(seed, steps, store, n=1024, lr=1e-2):
    rng = np.random.default_rng(seed)
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    gram = ((v * np.logspace(0, -2, n)) @ v.T).astype(np.float32)
    x_true = rng.standard_normal(n).astype(np.float32)
    atb = gram @ x_true
    x = np.zeros(n, np.float32)
    m = np.zeros(n, np.float32)
    s = np.zeros(n, np.float32)
    for t in range(steps):
        g = gram @ x - atb
        R.adam_step(x, g, m, s, step=t + 1, lr=lr * 0.5 * (1 + np.cos(np.pi * t / steps)))
        if store is not None:
            m[...], s[...] = store(m, True), store(s, False)
    return float(np.linalg.norm(x - x_true) / np.linalg.norm(x_true))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    layouts = {"float32": None, "int8 (dynamic maps)": int8}
    for m_layout, v_layout in [((3, 4), (4, 4)), ((4, 3), (4, 3)), ((2, 5), (4, 4)),
                               ((3, 4), (5, 3)), ((4, 3), (4, 4))]:
        gm, gv = grid(*m_layout), grid(*v_layout)
        name = f"m e{m_layout[0]}m{m_layout[1]}, v e{v_layout[0]}m{v_layout[1]}"
        layouts[name] = (lambda gm, gv: lambda x, signed: quantize(x, gm if signed else gv))(gm, gv)
    errs = {k: [run(s, args.steps, f) for s in args.seeds] for k, f in layouts.items()}
    ref = np.mean(errs["int8 (dynamic maps)"])
    print(f"{'state':26s}" + "".join(f"  seed {s:<5d}" for s in args.seeds) + "       mean  / int8")
    for k, e in errs.items():
        print(f"{k:26s}" + "".join(f"  {x:10.4e}" for x in e) + f"  {np.mean(e):9.4e}  "
              f"{np.mean(e) / ref:5.3f}")


if __name__ == "__main__":
    main()
