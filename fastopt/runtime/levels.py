"""The one table of instruction-set levels: the build, the dispatch and the CPU probe read it.

Plain Python with no imports from fastopt: ``setup.py`` loads this file by path before the
package is built.  Each level is compiled into ``fastopt/_ext/<name>/`` with ``flags`` added
to the common ones; at import, ``fastopt.runtime.dispatch`` loads the best level whose ``cpu``
(an x86-64 psABI micro-architecture level, tested with GCC's
``__builtin_cpu_supports``) this CPU has.  Best last.
"""

from typing import NamedTuple


class Level(NamedTuple):
    name: str                 # FASTOPT_ISA value and fastopt/_ext/<name>/
    flags: tuple[str, ...]    # compiler flags added for this level
    cpu: str | None           # psABI level the CPU must support (None: any x86-64 / any CPU)
    x86_only: bool            # built on x86-64 only


LEVELS = (
    Level("baseline", (), None, False),
    Level("avx2", ("-march=x86-64-v3",), "x86-64-v3", True),
    Level("avx512", ("-march=x86-64-v4", "-mprefer-vector-width=512"), "x86-64-v4", True),
)

NAMES = tuple(level.name for level in LEVELS)
BY_NAME = {level.name: level for level in LEVELS}
