"""Compiled kernel modules, one sub-package per instruction-set level; see fastopt.runtime.dispatch."""
