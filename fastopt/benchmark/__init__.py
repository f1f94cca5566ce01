"""The benchmark layer: every kernel against the memory roofline, NumPy and PyTorch.

* :mod:`~fastopt.benchmark.cases`: the workloads, as data (what is timed, on what, the bytes);
* :mod:`~fastopt.benchmark.timing`: the timing policies, and when figures cannot be trusted;
* :mod:`~fastopt.benchmark.report`: typed rows, the tables, the JSON;
* :func:`run` (``fastopt bench``) times the cases; ``benchmarks/`` (pytest-benchmark) times
  the same cases.
"""

from . import cases
from .cases import GROUPS, OPTIMIZERS, Case, Workload
from .report import format_table, to_json
from .suite import measure, plot, run

__all__ = ["run", "measure", "format_table", "to_json", "plot", "cases", "Case", "Workload",
           "OPTIMIZERS", "GROUPS"]
