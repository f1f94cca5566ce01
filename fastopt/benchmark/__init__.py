"""The benchmark layer: a library function (:func:`run`) that times every kernel against the
memory roofline, NumPy and PyTorch; ``fastopt bench`` and ``benchmarks/`` call it."""

from .suite import (GROUPS, OPTIMIZERS, bench_batchnorm, bench_model, bench_optimizer,
                    bench_sharing, bench_state, format_table, plot, run)

__all__ = ["run", "format_table", "plot", "bench_optimizer", "bench_batchnorm", "bench_model",
           "bench_sharing", "bench_state", "OPTIMIZERS", "GROUPS"]
