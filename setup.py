"""Build fastopt's Cython kernels.

Every kernel module ``src/kernels/<name>.pyx`` is compiled once per
instruction-set level (the table in ``fastopt/runtime/levels.py``) into
``fastopt/_ext/<level>/<name>``; ``fastopt.runtime.dispatch`` picks the best
level the running CPU supports at import time.  The runtime modules
``src/runtime/<name>.pyx`` (``_cpu``: CPU feature detection; ``_threadpool``:
the thread pool; ``_plan``: the multi-tensor plan; ``_roofline``: the benchmark's
roofline, its three loops compiled for every level by ``fo_roofline.h``) are compiled
once, for the baseline, into ``fastopt/<name>``.
``src/common/`` holds what they share (the OpenMP shim, the parallel loop, the
pool's C code, the vector-width macros ``fo_simd.h``); a kernel's C lives in a header
beside it (``src/kernels/fo_lowbit.h``).  Cython directives are set here only.

A kernel written once for several dtypes is a Tempita template
``src/kernels/<name>.pyx.tp`` (the templating engine that ships with Cython, as
scikit-learn's ``.pyx.tp`` files); it is rendered to ``<name>.pyx`` beside it
(not committed) before Cython runs.  Templates see the kernel table
``fastopt/specs.py`` as ``KERNELS`` (and ``DTYPES``); ``_hyper.pxd.tp`` renders the
hyperparameter structs the kernel modules cimport from it.  ``src/runtime/_plan.pyx``
(the multi-tensor plan, ISA-independent) is compiled once, like ``_cpu``.

Environment variables (all optional):

``FASTOPT_REQUIRE_OPENMP=1``
    Fail the build if the compiler cannot build OpenMP code (default: warn
    and build single-threaded kernels).
``FASTOPT_MARCH_NATIVE=1``
    Add ``-march=native`` to the baseline build.  Off by default: a wheel
    built with it crashes with an illegal instruction on an older CPU.
``FASTOPT_ISA_LEVELS=baseline,avx2``
    Restrict which levels are built (default: every level this platform has).
``FASTOPT_BUILD_JOBS=N``
    Cythonize and compile N modules at a time (default: every CPU this process may
    use; ``build_ext --parallel``/``-j`` or setup.cfg take precedence for the compiler).
``CFLAGS=-g``
    Keep debug information (default ``-g0``: none, whatever Python's own flags say).

A wheel for PyPI: ``python -m build --wheel`` then ``auditwheel repair`` (which copies
libgomp into the wheel and gives it the manylinux tag); ``.ci/wheel`` does both and tests
the result in a fresh virtual environment.
"""

import os
import platform
import runpy
import shlex
import shutil
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent.resolve()

BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-std=c11"]

# The one table of instruction-set levels, read by path: the package is not built yet.
LEVELS = runpy.run_path(str(HERE / "fastopt" / "runtime" / "levels.py"))["LEVELS"]
# The one table of optimizer kernels, read by path too: the templates render from it.
SPECS_PY = HERE / "fastopt" / "specs.py"


def _is_x86_64():
    return platform.machine().lower() in ("x86_64", "amd64")


def _truthy(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _levels():
    levels = {lv.name: list(lv.flags) for lv in LEVELS if _is_x86_64() or not lv.x86_only}
    wanted = os.environ.get("FASTOPT_ISA_LEVELS")
    if wanted:
        names = [w.strip() for w in wanted.split(",") if w.strip()]
        unknown = [w for w in names if w not in levels]
        if unknown:
            raise SystemExit(f"FASTOPT_ISA_LEVELS: unknown or unavailable level(s) {unknown}; "
                             f"this platform has {list(levels)}")
        names = ["baseline"] + [w for w in names if w != "baseline"]
        levels = {k: levels[k] for k in names}
    if _truthy("FASTOPT_MARCH_NATIVE"):
        levels["baseline"] = levels["baseline"] + ["-march=native"]
    return levels


def _jobs():
    """Parallel build jobs: FASTOPT_BUILD_JOBS, else every CPU this process may use."""
    wanted = os.environ.get("FASTOPT_BUILD_JOBS", "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise SystemExit(f"FASTOPT_BUILD_JOBS must be a positive integer, got {wanted!r}")
        return int(wanted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _debug_flags():
    """``-g0`` unless the user's CFLAGS ask for debug information (``-g``, ``-g3``, ...).

    Python's own compile flags include ``-g``: the debug information is 80% of the compiled
    modules' size and a quarter of their compile time, and no user of the package reads it.
    """
    if any(f.startswith("-g") and f != "-g0" for f in shlex.split(os.environ.get("CFLAGS", ""))):
        return []
    return ["-g0"]


OPENMP_TEST = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d %d\\n", n, omp_get_max_threads());
        return 0;
    }
""")


def _env_flags():
    """The user's CFLAGS and LDFLAGS, as distutils adds them when it links an extension."""
    return shlex.split(os.environ.get("CFLAGS", "")) + shlex.split(os.environ.get("LDFLAGS", ""))


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if it does not work.

    The test program is compiled as the extensions are (the compiler's
    command includes CFLAGS) and linked with CFLAGS and LDFLAGS too, as the
    extensions are (distutils links executables without them): flags such as
    ``-fsanitize=address`` must reach both steps, or the probe fails to link and
    the build silently loses OpenMP.
    """
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="fastopt-omp-")
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_test", output_dir=tmp,
                                         extra_postargs=lflags + _env_flags())
                return cflags, lflags
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP with these flags"
                continue
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Detect OpenMP once, then add the right flags to every extension; compile the
    extensions in parallel (``_jobs()``, unless ``--parallel`` / ``-j`` or setup.cfg says)."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = _jobs()

    def build_extensions(self):
        omp = _openmp_flags(self.compiler)
        if omp is None:
            msg = ("fastopt: the C compiler cannot build OpenMP code; "
                   "building single-threaded kernels.")
            if _truthy("FASTOPT_REQUIRE_OPENMP"):
                raise SystemExit(msg + " (FASTOPT_REQUIRE_OPENMP is set: failing.)")
            warnings.warn(msg, stacklevel=2)
            print("WARNING: " + msg, file=sys.stderr)
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            level = getattr(ext, "fastopt_level", "baseline")
            cflags = (["/O2", "/fp:fast"] if msvc
                      else BASE_FLAGS + _debug_flags() + ext.fastopt_isa_flags)
            lflags = []
            if omp is not None:
                cflags = cflags + omp[0]
                lflags = omp[1]
            shown = " ".join(cflags)
            ext.extra_compile_args = cflags
            ext.extra_link_args = lflags
            ext.define_macros = list(ext.define_macros or []) + [
                ("FASTOPT_ISA", f'"{level}"'),
                ("FASTOPT_CFLAGS", f'"{shown}"'),
            ]
        super().build_extensions()


SRC = HERE / "src"
INCLUDE = ["src/common", "src/kernels"]
# The C headers the kernel modules include: an edit rebuilds every module (they are few); the
# rendered ones (fo_hyper.h from fo_hyper.h.tp) too, through the table they are rendered from.
DEPENDS = sorted({str(h.relative_to(HERE)) for d in ("common", "kernels")
                  for h in list((SRC / d).glob("*.h")) + [t.with_suffix("") for t in
                                                          (SRC / d).glob("*.h.tp")]}
                 | {str(SPECS_PY.relative_to(HERE))})
RUNTIME_DEPENDS = sorted(str(h.relative_to(HERE)) for h in (SRC / "runtime").glob("*.h"))


def _numpy_include():
    import numpy  # a build requirement (pyproject.toml): the kernels read ndarray fields

    return numpy.get_include()


def _render_templates(directory):
    """Render every ``*.pyx.tp`` / ``*.pxd.tp`` / ``*.h.tp`` in ``directory`` (``_optim.pyx.tp``
    -> ``_optim.pyx``, beside it) when the template or the kernel table is newer than the
    output."""
    from Cython import Tempita

    table = runpy.run_path(str(SPECS_PY))
    for tp in sorted(directory.glob("*.tp")):
        out = tp.with_suffix("")
        newest = max(tp.stat().st_mtime, SPECS_PY.stat().st_mtime)
        if out.exists() and out.stat().st_mtime >= newest:
            continue
        text = Tempita.sub(tp.read_text(), name=str(tp.relative_to(HERE)),
                           KERNELS=table["KERNELS"], DTYPES=table["DTYPES"])
        note = f"Generated from {tp.name} by setup.py: edit the template, not this file."
        header = f"/* {note} */\n" if out.suffix == ".h" else f"# {note}\n"
        out.write_text(header + text)


def _extensions():
    from Cython.Build import cythonize

    _render_templates(SRC / "kernels")
    jobs = _jobs()

    directives = {
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
        "nonecheck": False,
        "embedsignature": True,
    }
    sources = sorted((SRC / "kernels").glob("*.pyx"))
    exts = []
    for level, isa_flags in _levels().items():
        level_exts = []
        for pyx in sources:
            ext = Extension(f"fastopt._ext.{level}.{pyx.stem}", [str(pyx.relative_to(HERE))],
                            include_dirs=INCLUDE + [_numpy_include()], depends=DEPENDS,
                            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")])
            ext.fastopt_level = level
            ext.fastopt_isa_flags = isa_flags
            level_exts.append(ext)
        # A separate build_dir per level: the generated C embeds the module name.
        exts += cythonize(level_exts, compiler_directives=directives,
                          build_dir=f"build/cython/{level}", include_path=INCLUDE, quiet=True,
                          nthreads=jobs)
    # Compiled once, for the baseline: CPU probing, the process's one thread pool, the plan.
    runtime = [Extension(f"fastopt.{pyx.stem}", [str(pyx.relative_to(HERE))],
                         include_dirs=INCLUDE + ["src/runtime", _numpy_include()],
                         depends=DEPENDS + RUNTIME_DEPENDS,
                         define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")])
               for pyx in sorted((SRC / "runtime").glob("*.pyx"))]
    exts += cythonize(runtime, compiler_directives=directives, build_dir="build/cython/runtime",
                      include_path=INCLUDE, quiet=True, nthreads=jobs)
    # cythonize returns fresh Extension objects: copy our attributes across.
    for ext in exts:
        level = ext.name.split(".")[-2] if ext.name.startswith("fastopt._ext.") else "baseline"
        ext.fastopt_level = level
        ext.fastopt_isa_flags = _levels()[level]
    return exts


if __name__ == "__main__":  # (pip's build backend runs this file as __main__ too)
    setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
