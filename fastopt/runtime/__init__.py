"""The runtime layer: what every other layer may use, and nothing it imports from them.

``levels`` (the one table of instruction-set levels, plain Python: setup.py reads it too),
``dispatch`` (loads the compiled kernels of the best level this CPU runs), ``threads`` (the
thread count), ``blas`` (opt-in OpenBLAS sharing of fastopt's pool), ``rng`` (seed handling).
The compiled runtime modules (``fastopt._cpu``, ``fastopt._threadpool``, ``fastopt._plan``,
``fastopt._roofline``) are built once from ``src/runtime/``.
"""
