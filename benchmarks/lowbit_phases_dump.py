"""Writes the input of benchmarks/c/lowbit_phases.c: the default int8 maps' kernel tables
(values, bucket tables and their vector copy, byte planes, fast rule) and the state of
``STEPS`` Adam steps (default 30) on 256K elements with fresh Gaussian gradients.

    python benchmarks/lowbit_phases_dump.py OUT [STEPS]
"""
import numpy as np, sys
from fastopt.kernels import lowbit as L
from fastopt.kernels._formats import signed_map, unsigned_map
out = sys.argv[1]
def tabs(qm):
    values, packed, shift, lo, nbm, zero, fast = qm.kernel_tables()
    p = np.array(packed, np.uint32); mask = (1 << shift) - 1
    c = p & np.uint32(0xff); t = p >> np.uint32(8); t[nbm:] ^= np.uint32(mask)
    tabn = ((t << np.uint32(8)) | c).astype(np.uint32)
    posonly = int(bool(np.all(p[nbm:] == 0) and (p[0] & 0xff) == 0))
    planes = np.ascontiguousarray(np.asarray(values, '<f4').view(np.uint8).reshape(256, 4).T)
    hdr = np.array([shift, lo, nbm, zero, posonly, p.size], np.uint32)
    return hdr.tobytes() + np.asarray(values, np.float32).tobytes() + p.tobytes() + tabn.tobytes() + planes.tobytes() + np.asarray(fast, np.uint32).tobytes()
n = 1 << 18
rng = np.random.default_rng(0)
p = rng.standard_normal(n).astype(np.float32)
(mc, ma), (vc, va) = L.zeros_int8(n, L.signed_map()), L.zeros_int8(n, L.unsigned_map())
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
for s in range(steps):
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    L.adam_step_int8(p, g, mc, ma, vc, va, step=s + 1, lr=1e-3)
with open(out, 'wb') as f:
    f.write(tabs(signed_map())); f.write(tabs(unsigned_map()))
    f.write(np.uint32(n).tobytes())
    for a in (p, g, mc, ma, vc, va): f.write(np.ascontiguousarray(a).tobytes())
print(signed_map().kernel_tables()[1].size, unsigned_map().kernel_tables()[1].size)
