"""Compiled kernels for one instruction-set level (built by setup.py)."""
