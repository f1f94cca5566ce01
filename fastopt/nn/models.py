"""A small multilayer perceptron in NumPy, with all its parameters in one FlatParams.

Hidden layers are ``Linear (no bias) -> BatchNorm -> ReLU`` (batch norm's β
replaces the bias, as the seed says); the output layer is ``Linear`` with a
bias, followed by softmax cross-entropy.  Weights are stored ``(n_in, n_out)``
and applied as ``x @ W``; hidden weights use He initialization, the output
layer Xavier's.  Gradients are written into the FlatParams' grad buffer in
place, so an optimizer updates the whole model with one fused call.
"""

import numpy as np

from . import init
from ..kernels import _check
from ..kernels._attrs import Checked, fixed
from ..runtime.rng import as_generator
from .flat import FlatParams
from .layers import BatchNorm

__all__ = ["MLP", "softmax_cross_entropy"]


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - np.log(s)
    n = logits.shape[0]
    loss = -float(logp[np.arange(n), labels].mean())
    grad = e / s
    grad[np.arange(n), labels] -= 1.0
    grad /= n
    return loss, grad.astype(np.float32, copy=False)


class MLP(Checked):
    """The demo classifier, layer sizes ``sizes[0]`` to ``sizes[-1]``; see the module docstring.

    Parameters
    ----------
    sizes : sequence of int, e.g. (64, 256, 256, 10)
    rng : numpy.random.Generator, int seed or None (initialization)
    impl : "fused" or "reference" (the batch-norm implementation)

    Attributes
    ----------
    params : FlatParams  ``W1, bn1.gamma, bn1.beta, ..., W{L}, b{L}``
    bns : list of BatchNorm
    kernel_time : float  seconds spent in fastopt's batch-norm calls (accumulated)

    Notes
    -----
    ``impl`` and ``kernel_time`` may be set (checked as the constructor checks them);
    ``sizes``, ``params`` and ``bns`` are fixed (the layers point into ``params``: write
    into it, ``model.params.data[...] = values``); any other public name raises
    AttributeError.
    """

    sizes = fixed("sizes", "The layer widths, a tuple of int.",
                  "the layers are built for it (build another MLP)")
    params = fixed("params", "The FlatParams holding every parameter.",
                   "the layers and the optimizer point into it: write into it, "
                   "model.params.data[...] = values")
    bns = fixed("bns", "The BatchNorm layers, a list.",
                "they are views into params (build another MLP)")

    def __init__(self, sizes=(64, 256, 256, 10), *, rng=None, impl="fused"):
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise TypeError(f"sizes must be a sequence of int, got {type(sizes).__name__}") from None
        sizes = tuple(_check.integer(f"sizes[{i}]", s, 1) for i, s in enumerate(sizes))
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least 2 positive entries, got {sizes}")
        self.impl = impl
        self._sizes = sizes
        L = len(sizes) - 1
        shapes = {}
        for i in range(1, L):
            shapes[f"W{i}"] = (sizes[i - 1], sizes[i])
            shapes.update(BatchNorm.shapes(sizes[i], name=f"bn{i}"))
        shapes[f"W{L}"] = (sizes[L - 1], sizes[L])
        shapes[f"b{L}"] = (sizes[L],)
        self._params = fp = FlatParams(shapes)
        gen = as_generator(rng)
        for i in range(1, L):
            init.he(shapes[f"W{i}"], rng=gen, out=fp.params[f"W{i}"])
        init.xavier(shapes[f"W{L}"], rng=gen, out=fp.params[f"W{L}"])
        self._bns = [BatchNorm(sizes[i], params=fp, name=f"bn{i}", impl=impl)
                     for i in range(1, L)]
        self.kernel_time = 0.0
        self._acts = None

    @property
    def impl(self):
        """The batch-norm implementation, "fused" or "reference" (checked when set)."""
        return self._impl

    @impl.setter
    def impl(self, value):
        if value not in ("fused", "reference"):
            raise ValueError(f"impl must be one of ['fused', 'reference'], got {value!r}")
        for bn in getattr(self, "_bns", ()):
            bn.impl = value
        self._impl = value

    @property
    def kernel_time(self):
        """Seconds spent in fastopt's batch-norm calls (accumulated; may be reset, >= 0)."""
        return self._kernel_time

    @kernel_time.setter
    def kernel_time(self, value):
        self._kernel_time = _check.at_least("kernel_time", value, 0.0)

    def forward(self, X, training=True):
        """Logits for X (float32, (n, sizes[0]))."""
        import time

        fp = self.params.params
        L = len(self.sizes) - 1
        a = X
        acts = [a]
        for i in range(1, L):
            z = a @ fp[f"W{i}"]
            t = time.perf_counter()
            h = self.bns[i - 1].forward(z, training=training)
            self.kernel_time += time.perf_counter() - t
            a = np.maximum(h, 0, out=h)  # ReLU in place; h > 0 marks where it passes
            acts.append(a)
        logits = a @ fp[f"W{L}"] + fp[f"b{L}"]
        self._acts = acts
        return logits

    def backward(self, dlogits):
        """Write every parameter's gradient into ``params.grad`` (in place)."""
        import time

        fp, g = self.params.params, self.params.grads
        L = len(self.sizes) - 1
        acts = self._acts
        np.matmul(acts[L - 1].T, dlogits, out=g[f"W{L}"])
        np.sum(dlogits, axis=0, out=g[f"b{L}"])
        # each layer's gradients are final: a DataParallel(overlap=True) starts sending them
        self.params.grads_ready(f"W{L}", f"b{L}")
        da = dlogits @ fp[f"W{L}"].T
        for i in range(L - 1, 0, -1):
            da *= acts[i] > 0  # ReLU
            t = time.perf_counter()
            dz = self.bns[i - 1].backward(da)
            self.kernel_time += time.perf_counter() - t
            np.matmul(acts[i - 1].T, dz, out=g[f"W{i}"])
            self.params.grads_ready(f"W{i}", f"{self.bns[i - 1].name}.gamma",
                                    f"{self.bns[i - 1].name}.beta")
            if i > 1:
                da = dz @ fp[f"W{i}"].T

    def loss_and_grad(self, X, y):
        """Forward, loss, backward: returns (loss, accuracy) on the batch; fills params.grad."""
        logits = self.forward(X, training=True)
        loss, dlogits = softmax_cross_entropy(logits, y)
        self.backward(dlogits)
        return loss, float((logits.argmax(axis=1) == y).mean())

    def predict(self, X):
        """Class predictions (inference mode: batch norm uses its running statistics)."""
        return self.forward(X, training=False).argmax(axis=1)

    def evaluate(self, X, y):
        """(loss, accuracy) in inference mode."""
        logits = self.forward(X, training=False)
        loss, _ = softmax_cross_entropy(logits, y)
        return loss, float((logits.argmax(axis=1) == y).mean())

    def state_dict(self):
        """The batch-norm running statistics (the parameters live in ``params``)."""
        out = {}
        for bn in self.bns:
            out[f"{bn.name}.running_mean"] = bn.running_mean.copy()
            out[f"{bn.name}.running_var"] = bn.running_var.copy()
        return out

    def checked_state(self, state):
        """A :meth:`state_dict`-shaped ``state``, checked (BatchNorm.checked_state); changes nothing.

        Returns a list of (layer, {"running_mean": ..., "running_var": ...}).
        """
        keys = ("running_mean", "running_var")
        checked = []
        for bn in self.bns:
            try:
                per_layer = {k: state[f"{bn.name}.{k}"] for k in keys}
            except KeyError as e:
                raise ValueError(f"state has no {e.args[0]!r}") from None
            try:
                checked.append((bn, bn.checked_state(per_layer, keys)))
            except (ValueError, TypeError) as e:
                raise type(e)(f"{bn.name}: {e}") from None
        return checked

    def load_state_dict(self, state):
        """Restore the batch-norm running statistics (all checked before anything changes)."""
        for bn, values in self.checked_state(state):
            for k, v in values.items():
                getattr(bn, k)[...] = v

