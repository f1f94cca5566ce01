"""The child processes of ``threading_backends.py`` and ``pool_trace.py``: one per configuration.

A configuration is environment variables (``FASTOPT_THREADING=openmp``, ...) and, with
``PYTHON=...``, another build's interpreter; each child runs one, so neither threading
runtime's idle threads spin beside the other's calls.  The child code starts with
:data:`STEP`, which needs only ``fastopt.kernels``, so a child may run another build.
"""

import json
import os
import subprocess
import sys

#: Child code defining ``make_step(kind, size, rng)``: one Adam step on ``size`` float32
#: elements (``kind`` "adam...") or batch norm forward + backward on an array of shape ``size``.
STEP = r'''
import numpy as np
from fastopt import kernels as K


def make_step(kind, size, rng):
    if kind.startswith("adam"):
        p = rng.standard_normal(size).astype(np.float32)
        g, m, v = p * 1e-2, np.zeros_like(p), np.zeros_like(p)
        return lambda: K.adam_step(p, g, m, v, step=10, lr=1e-3)
    x = rng.standard_normal(size).astype(np.float32)
    dy = rng.standard_normal(size).astype(np.float32)
    C = size[1]
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)

    def step():
        _, mu, s = K.batchnorm_forward(x, gamma, beta, None, None, out=y)
        K.batchnorm_backward(dy, x, gamma, mu, s, out=(dx, None, None))
    return step
'''


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def parse_config(text):
    """``NAME:VAR=VALUE,...`` -> (name, {VAR: VALUE})."""
    name, _, env = text.partition(":")
    return name, dict(kv.split("=", 1) for kv in env.split(",") if kv)


def run(code, args, env_extra, timeout):
    """Run ``python -c code *args`` with ``env_extra`` (its ``PYTHON``: the interpreter) and
    return the JSON it prints; exit with its stderr if it fails."""
    env = dict(os.environ, **env_extra)
    python = env.pop("PYTHON", sys.executable)   # another build of fastopt (e.g. main's)
    r = subprocess.run([python, "-c", code, *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout)
