"""Pick, at import, the compiled kernels for the best instruction set this CPU runs.

``setup.py`` builds every kernel module once per level (``levels.LEVELS``) into
``fastopt/_ext/<level>/``.  At import, fastopt loads the best level that this
CPU supports and that was built, unless the environment variable
``FASTOPT_ISA`` (``baseline``, ``avx2`` or ``avx512``) forces one; forcing a
level this CPU cannot run, or that was not built, is an error (rather than a
crash with an illegal instruction).

The loaded modules are the attributes of :data:`ext` (``ext._optim``, ...), with
``ext._roofline``, the benchmark's roofline passes for the level (``fastopt._roofline``, built
once with its loops compiled for every level).
``set_isa`` swaps them; the tests use it to check every level.
"""

import contextlib
import importlib
import os
import pkgutil
import types

from .. import _cpu, _roofline
from .levels import NAMES as LEVELS

#: The kernel modules of the active level, as attributes (``ext._optim``).
ext = types.SimpleNamespace(level=None)


def _module_names(level="baseline"):
    pkg = importlib.import_module(f"fastopt._ext.{level}")
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg)


@contextlib.contextmanager
def _affinity_kept():
    """Give the calling thread back the CPUs it may run on when the block ends.

    The kernel modules link GNU libgomp (for ``omp_get_max_threads``), whose start-up binds
    the thread that loads it to the first OpenMP place when ``OMP_PROC_BIND``,
    ``OMP_PLACES`` or ``GOMP_CPU_AFFINITY`` is set: the whole process, every thread started
    afterwards (NumPy's BLAS, fastopt's pool) included, would run on one CPU.  fastopt runs
    no OpenMP region, so nothing relies on that binding.
    """
    try:
        before = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        yield
        return
    try:
        yield
    finally:
        try:
            if os.sched_getaffinity(0) != before:
                os.sched_setaffinity(0, before)
        except OSError:
            pass


def built_levels():
    """Levels whose kernels were compiled (same modules as the baseline)."""
    base = _module_names("baseline")
    return tuple(lv for lv in LEVELS if base and _module_names(lv) == base)


def supported_levels():
    """Levels this CPU can run and that were built, best first."""
    built = built_levels()
    return tuple(lv for lv in _cpu.supported_levels() if lv in built)


def set_isa(level=None):
    """Load the kernels of ``level`` (None: the best supported one). Returns the level."""
    if level is None:
        supported = supported_levels()
        if not supported:
            raise ImportError("fastopt: no compiled kernels found; was the package built? "
                              "(pip install . or pip install -e .)")
        level = supported[0]
    if level not in LEVELS:
        raise ValueError(f"FASTOPT_ISA / level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level not in built_levels():
        raise ValueError(f"instruction-set level {level!r} was not built in this installation "
                         f"(built: {', '.join(built_levels()) or 'none'})")
    if level not in _cpu.supported_levels():
        raise ValueError(f"this CPU does not support instruction-set level {level!r} "
                         f"(supported: {', '.join(_cpu.supported_levels())})")
    with _affinity_kept():
        modules = {name: importlib.import_module(f"fastopt._ext.{level}.{name}")
                   for name in _module_names(level)}
    for name, mod in modules.items():
        setattr(ext, name, mod)
    # the benchmark's roofline: one module, its loops compiled for every level
    ext._roofline = _roofline.Roofline(level)
    ext.level = level
    return level


def _init():
    forced = os.environ.get("FASTOPT_ISA", "").strip().lower()
    try:
        set_isa(forced or None)
    except ValueError as e:
        raise ImportError(f"fastopt: FASTOPT_ISA={forced!r}: {e}") from None


_init()
