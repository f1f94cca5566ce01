"""``adam``, ``sgd`` and ``rmsprop`` as in ``autograd.misc.optimizers``, stepping on fastopt.

Same signatures, defaults, update rules and calling convention as HIPS autograd's
optimizers (``autograd/misc/optimizers.py``): ``x0`` is any nesting of lists, tuples and
dicts of arrays or scalars (flattened with ``autograd.misc.flatten``); ``grad(x, i)``
returns the gradient in the same structure; ``callback(x, i, g)`` is called before each
update with the unflattened values; the result has the structure of ``x0``.

>>> from autograd import grad                                  # doctest: +SKIP
>>> from fastopt.integrations.autograd import adam             # doctest: +SKIP
>>> params = adam(grad(loss), init_params, step_size=0.01, num_iters=500)  # doctest: +SKIP

The flat parameter vector is float64 (as autograd's becomes after its first update) and
is updated in place by one fused fastopt call per iteration; each ``x`` handed to ``grad``
and ``callback`` is unflattened from it (autograd's ``unflatten`` copies the leaves of a
list, tuple or dict; a single array ``x0`` gets a copy of the vector), so later updates
never change a value they kept, as with autograd's.  The
update rules map onto fastopt's optimizers exactly:

* ``sgd``: ``velocity = mass*velocity - (1-mass)*g; x += step_size*velocity`` is
  :class:`fastopt.SGD` with ``momentum=dampening=mass`` (buffer ``= -velocity``).
* ``rmsprop``: ``s = gamma*s + (1-gamma)*g**2; x -= step_size*g/(sqrt(s) + eps)``, with
  ``s`` starting at ones, is :class:`fastopt.RMSprop` with ``alpha=gamma``,
  ``eps_inside_sqrt=False`` and its buffer set to ones.
* ``adam``: bias-corrected ``m, v``; ``x -= step_size*mhat/(sqrt(vhat) + eps)`` is
  :class:`fastopt.Adam` (PyTorch's rule).

The trajectories equal autograd's up to rounding (about 1e-15 relative per step).  What
fastopt does not take (complex values, a negative ``step_size``, ``mass``, ``gamma``,
``b1`` or ``b2`` outside ``[0, 1)``) runs on autograd's own optimizer.
"""

import numpy as np
from autograd.misc import flatten
from autograd.misc import optimizers as _autograd_optimizers

from ..optim.algorithms import SGD, Adam, RMSprop

__all__ = ["adam", "sgd", "rmsprop"]


def _optimize(make, fallback, grad, x0, callback, num_iters):
    """autograd's ``unflatten_optimizer`` loop, with the update done in place by ``make([x])``.

    ``fallback()`` runs autograd's own optimizer, for what fastopt does not take.
    """
    _x0, unflatten = flatten(x0)
    if _x0.dtype.kind not in "biuf":
        return fallback()
    x = np.array(_x0, dtype=np.float64)          # our own buffer: never a view of x0
    try:
        opt = make([x])
    except (TypeError, ValueError):
        return fallback()
    # autograd's unflatten copies the leaves out of a list, tuple or dict, but returns a view of
    # the flat vector for a single array: then grad and callback get a snapshot, which later
    # in-place updates do not change (autograd makes a new x at every iteration).
    snapshot = any(isinstance(leaf, np.ndarray) and np.shares_memory(leaf, x)
                   for leaf in _leaves(unflatten(x)))
    current = _x0                                # autograd's x: x0 until the first update
    for i in range(num_iters):
        g = flatten(grad(unflatten(current), i))[0]
        if callback:
            callback(unflatten(current), i, unflatten(g))
        g = np.ascontiguousarray(g, dtype=np.float64)
        try:
            opt.step([g])
        except ValueError:
            if not np.shares_memory(g, x):
                raise
            opt.step([g.copy()])
        current = x.copy() if snapshot and i + 1 < num_iters else x
    return unflatten(current)


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def sgd(grad, x0, callback=None, num_iters=200, step_size=0.1, mass=0.9):
    """Stochastic gradient descent with momentum, as ``autograd.misc.optimizers.sgd``.

    ``grad()`` must have signature ``grad(x, i)``, where ``i`` is the iteration number.

    .. math::  v \\leftarrow \\text{mass}\\,v - (1-\\text{mass})\\,g, \\qquad x \\leftarrow x + \\eta\\,v

    (:class:`fastopt.SGD` with ``momentum = dampening = mass``; ``v`` starts at zeros.)
    """
    return _optimize(
        lambda p: SGD(p, lr=step_size, momentum=mass, dampening=mass),
        lambda: _autograd_optimizers.sgd(grad, x0, callback, num_iters, step_size, mass),
        grad, x0, callback, num_iters)


def rmsprop(grad, x0, callback=None, num_iters=100, step_size=0.1, gamma=0.9, eps=10**-8):
    """Root mean squared prop, as ``autograd.misc.optimizers.rmsprop``.

    .. math::  s \\leftarrow \\gamma s + (1-\\gamma)\\,g^2, \\qquad
               x \\leftarrow x - \\eta\\,\\frac{g}{\\sqrt{s} + \\epsilon}

    with ``s`` starting at ones (:class:`fastopt.RMSprop`, ``eps_inside_sqrt=False``).
    """
    def make(p):
        opt = RMSprop(p, lr=step_size, alpha=gamma, eps=eps, eps_inside_sqrt=False)
        opt.state["square_avg"][0].fill(1.0)     # autograd starts the mean square at ones
        return opt

    return _optimize(
        make,
        lambda: _autograd_optimizers.rmsprop(grad, x0, callback, num_iters, step_size, gamma, eps),
        grad, x0, callback, num_iters)


def adam(grad, x0, callback=None, num_iters=100, step_size=0.001, b1=0.9, b2=0.999, eps=10**-8):
    """Adam, as ``autograd.misc.optimizers.adam`` (Kingma & Ba, with bias correction).

    .. math::  m \\leftarrow b_1 m + (1-b_1)\\,g, \\quad v \\leftarrow b_2 v + (1-b_2)\\,g^2, \\quad
               x \\leftarrow x - \\eta\\,\\frac{m/(1-b_1^{i+1})}{\\sqrt{v/(1-b_2^{i+1})} + \\epsilon}

    (:class:`fastopt.Adam`.)
    """
    return _optimize(
        lambda p: Adam(p, lr=step_size, betas=(b1, b2), eps=eps),
        lambda: _autograd_optimizers.adam(grad, x0, callback, num_iters, step_size, b1, b2, eps),
        grad, x0, callback, num_iters)
