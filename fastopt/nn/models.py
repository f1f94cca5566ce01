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

__all__ = ["MLP", "softmax_cross_entropy", "mean_squared_error", "LOSSES"]

#: The losses an MLP may train with.
LOSSES = ("cross_entropy", "mse")


def softmax_cross_entropy(logits, labels, total=None):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    ``total``: divide the gradient by it instead of the number of rows (the rows are part of
    a batch of ``total``; row by row, the result does not depend on the other rows)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - np.log(s)
    n = logits.shape[0]
    loss = -float(logp[np.arange(n), labels].mean())
    grad = e / s
    grad[np.arange(n), labels] -= 1.0
    grad /= n if total is None else total
    return loss, grad.astype(np.float32, copy=False)


def mean_squared_error(outputs, targets, total=None):
    """Mean squared error of a one-output model's ``outputs`` (n, 1) against ``targets`` (n,),
    and its gradient with respect to the outputs (float32; divided by ``total`` instead of n
    when given, as :func:`softmax_cross_entropy`)."""
    diff = outputs[:, 0].astype(np.float64) - targets
    n = outputs.shape[0]
    loss = float(np.dot(diff, diff) / n) if n else 0.0
    grad = (2.0 / (n if total is None else total)) * diff[:, None]
    return loss, grad.astype(np.float32)


def _r2(outputs, targets):
    """The coefficient of determination of ``outputs`` (n, 1) for ``targets``: 1 - SSE/SST
    (NaN when the targets do not vary)."""
    diff = outputs[:, 0].astype(np.float64) - targets
    centred = targets - targets.mean(dtype=np.float64)
    sst = float(np.dot(centred, centred))
    return 1.0 - float(np.dot(diff, diff)) / sst if sst > 0 else float("nan")


class MLP(Checked):
    """The demo classifier, layer sizes ``sizes[0]`` to ``sizes[-1]``; see the module docstring.

    Parameters
    ----------
    sizes : sequence of int, e.g. (64, 256, 256, 10)
    rng : numpy.random.Generator, int seed or None (initialization)
    impl : "fused" or "reference" (the batch-norm implementation)
    loss : {"cross_entropy", "mse"}, default "cross_entropy"
        Softmax cross-entropy against integer labels (a classifier: the score is the
        accuracy), or the mean squared error of the one output (``sizes[-1] == 1``) against
        real targets (a regressor: the score is R², 1 - SSE/SST).

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
    loss = fixed("loss", 'The loss, "cross_entropy" or "mse".',
                 "the output layer is built for it (build another MLP)")
    _loss = "cross_entropy"     # (MLPs pickled before the option)

    def __init__(self, sizes=(64, 256, 256, 10), *, rng=None, impl="fused",
                 loss="cross_entropy"):
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise TypeError(f"sizes must be a sequence of int, got {type(sizes).__name__}") from None
        sizes = tuple(_check.integer(f"sizes[{i}]", s, 1) for i, s in enumerate(sizes))
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least 2 positive entries, got {sizes}")
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if loss == "mse" and sizes[-1] != 1:
            raise ValueError(f"loss 'mse' needs one output (sizes[-1] == 1), got {sizes[-1]}")
        self._loss = loss
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
        self._parts = None      # the micro-batched pass's float64 gradient terms

    # Pickles and deep copies leave out the last pass's activations and float64 gradient
    # terms (work buffers, as large as the batch or the model times the micro-batches).
    def __getstate__(self):
        return {k: (None if k in ("_acts", "_parts") else v) for k, v in self.__dict__.items()}

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

    def _loss_and_score(self, outputs, y, total=None):
        if self.loss == "mse":
            loss, grad = mean_squared_error(outputs, y, total)
            return loss, _r2(outputs, y), grad
        loss, grad = softmax_cross_entropy(outputs, y, total)
        return loss, float((outputs.argmax(axis=1) == y).mean()), grad

    def loss_and_grad(self, X, y, *, micro=None):
        """Forward, loss, backward: returns (loss, score) on the batch (the score: accuracy,
        or R² with ``loss="mse"``); fills params.grad.

        Parameters
        ----------
        X, y : the batch (float32 samples, labels or targets)
        micro : fastopt.nn.microbatch.MicroBatches, optional
            Ordered reduction (see :mod:`fastopt.nn.microbatch`): ``X, y`` are this
            process's rows of the global batch ``micro`` was planned for
            (``rows = micro.plan(n)``).  The gradient is the global batch's mean gradient,
            the same bits for any number of processes; ``params.grad`` holds it on the
            process that holds the sum (``micro.sum_in_order``'s), zeros on the others (so
            the processes' gradients add up to it exactly).  The batch norm layers reduce
            with ``micro.batchnorm`` during the call.  The loss and score are this
            process's rows'.
        """
        if micro is not None:
            from .microbatch import MicroBatches

            if not isinstance(micro, MicroBatches):
                raise TypeError(f"micro must be a fastopt.nn.microbatch.MicroBatches or None, "
                                f"got {type(micro).__name__}")
            return self._loss_and_grad_micro(X, y, micro)
        outputs = self.forward(X, training=True)
        loss, score, grad = self._loss_and_score(outputs, y)
        self.backward(grad)
        return loss, score

    def _loss_and_grad_micro(self, X, y, micro):
        """:meth:`loss_and_grad` by micro-batches (see :mod:`fastopt.nn.microbatch`)."""
        import time

        bounds = micro.bounds
        if len(X) != (bounds[-1][1] if bounds else 0):
            raise ValueError(f"X has {len(X)} rows, but micro was planned for "
                             f"{bounds[-1][1] if bounds else 0} rows on this process")
        fp = self.params
        p, g = fp.params, fp.grads
        L = len(self.sizes) - 1

        def matmul(a, W):        # per micro-batch: no row depends on the others
            out = np.empty((a.shape[0], W.shape[1]), np.result_type(a, W))
            for lo, hi in bounds:
                np.matmul(a[lo:hi], W, out=out[lo:hi])
            return out

        # each micro-batch's gradient terms (kept between calls: the rows of W and b are
        # overwritten, those of the batch-norm parameters stay zero)
        if self.__dict__.get("_parts") is None or len(self._parts) < len(bounds):
            self._parts = np.zeros((max(len(bounds), 1), fp.size))
        parts = self._parts[:len(bounds)]

        def weight_grad(name, a, dz):     # float64 a.T @ dz per micro-batch (exact products)
            sl, shape = fp.slice(name), p[name].shape
            a64, dz64 = a.astype(np.float64), dz.astype(np.float64)
            for i, (lo, hi) in enumerate(bounds):
                np.matmul(a64[lo:hi].T, dz64[lo:hi], out=parts[i, sl].reshape(shape))

        saved = [bn.sync for bn in self.bns]
        try:
            for bn in self.bns:
                bn.sync = micro.batchnorm
            a, acts = X, [X]
            for i in range(1, L):
                z = matmul(a, p[f"W{i}"])
                t = time.perf_counter()
                h = self.bns[i - 1].forward(z, training=True)
                self.kernel_time += time.perf_counter() - t
                a = np.maximum(h, 0, out=h)
                acts.append(a)
            outputs = matmul(a, p[f"W{L}"])
            outputs += p[f"b{L}"]
            self._acts = acts
            with np.errstate(invalid="ignore", divide="ignore"):
                loss, score, dout = self._loss_and_score(outputs, y, total=micro.n_total)
            if not len(y):             # (a process with no rows of a short last batch)
                loss, score = 0.0, 0.0
            weight_grad(f"W{L}", acts[L - 1], dout)
            d64, sl = dout.astype(np.float64), fp.slice(f"b{L}")
            for i, (lo, hi) in enumerate(bounds):
                parts[i, sl] = d64[lo:hi].sum(axis=0)
            da = matmul(dout, p[f"W{L}"].T)
            for i in range(L - 1, 0, -1):
                da *= acts[i] > 0
                t = time.perf_counter()
                dz = self.bns[i - 1].backward(da)      # dgamma, dbeta: the whole batch's
                self.kernel_time += time.perf_counter() - t
                weight_grad(f"W{i}", acts[i - 1], dz)
                if i > 1:
                    da = matmul(dz, p[f"W{i}"].T)
        finally:
            for bn, sync in zip(self.bns, saved):
                bn.sync = sync
        total = np.empty(fp.size)
        if micro.sum_in_order(parts, total):
            for name in [f"W{i}" for i in range(1, L + 1)] + [f"b{L}"]:
                np.copyto(g[name], total[fp.slice(name)].reshape(g[name].shape),
                          casting="same_kind")
        else:
            fp.grad[...] = 0.0
        return loss, score

    def predict(self, X):
        """Class predictions, or the regressor's outputs (n,) (inference mode: batch norm
        uses its running statistics)."""
        outputs = self.forward(X, training=False)
        return outputs[:, 0] if self.loss == "mse" else outputs.argmax(axis=1)

    def evaluate(self, X, y):
        """(loss, score) in inference mode (the score: accuracy, or R² with ``loss="mse"``)."""
        loss, score, _ = self._loss_and_score(self.forward(X, training=False), y)
        return loss, score

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

