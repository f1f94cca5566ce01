"""Property-based checks: kernel == reference for arbitrary sizes, values and hyperparameters."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastopt import kernels as K
from fastopt import reference as R

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
unit = st.floats(0.0, 0.999)


@st.composite
def buffers(draw, count):
    n = draw(st.integers(0, 300))
    return [draw(arrays(np.float32, n, elements=finite)) for _ in range(count)]


@settings(max_examples=60, deadline=None)
@given(bufs=buffers(4), step=st.integers(1, 10_000), lr=st.floats(0, 1), beta1=unit, beta2=unit,
       eps=st.floats(1e-10, 1e-2), wd=st.floats(0, 0.5), decoupled=st.booleans())
def test_adam_property(bufs, step, lr, beta1, beta2, eps, wd, decoupled):
    p, g, m, v = bufs
    v = np.abs(v)  # a second moment is never negative
    a = [x.copy() for x in (p, m, v)]
    b = [x.copy() for x in (p, m, v)]
    kw = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd,
              decoupled_weight_decay=decoupled)
    K.adam_step(a[0], g, a[1], a[2], **kw)
    R.adam_step(b[0], g, b[1], b[2], **kw)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(bufs=buffers(3), lr=st.floats(0, 1), momentum=unit, dampening=st.floats(0, 1),
       wd=st.floats(0, 0.5), nesterov=st.booleans())
def test_sgd_property(bufs, lr, momentum, dampening, wd, nesterov):
    p, g, buf = bufs
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    a = [p.copy(), buf.copy()]
    b = [p.copy(), buf.copy()]
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=wd)
    K.sgd_step(a[0], g, a[1], **kw)
    R.sgd_step(b[0], g, b[1], **kw)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(bufs=buffers(3), lr=st.floats(0, 1), alpha=unit, eps=st.floats(1e-10, 1e-2),
       wd=st.floats(0, 0.5), inside=st.booleans())
def test_rmsprop_property(bufs, lr, alpha, eps, wd, inside):
    p, g, s = bufs
    s = np.abs(s)
    a = [p.copy(), s.copy()]
    b = [p.copy(), s.copy()]
    kw = dict(lr=lr, alpha=alpha, eps=eps, eps_inside_sqrt=inside, weight_decay=wd)
    K.rmsprop_step(a[0], g, a[1], **kw)
    R.rmsprop_step(b[0], g, b[1], **kw)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(bufs=buffers(1))
def test_global_norm_property(bufs):
    (g,) = bufs
    assert K.global_norm(g) == R.global_norm(g) or \
        abs(K.global_norm(g) - R.global_norm(g)) <= 1e-12 * R.global_norm(g)
