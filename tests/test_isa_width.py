"""Every kernel family runs 512-bit loops in the avx512 build (issue 23, item 3).

The audit (benchmarks/isa_width_audit.py) disassembles the built modules with objdump and
reports, per kernel function, the widest vector register of its innermost loops.  A family
that narrows at the avx512 level (a helper compiled without the width macros, a lost
``-mprefer-vector-width=512``, a loop the compiler stops vectorizing) fails here.  The avx2
build is the control: the same audit must see its loops as 256-bit, so the checker tells
widths apart.  Static: the CPU running the test need not have AVX-512.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

import fastopt

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(fastopt.__file__).resolve().parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)"),
]


def _audit():
    spec = importlib.util.spec_from_file_location("isa_width_audit",
                                                  ROOT / "benchmarks" / "isa_width_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(level):
    if not list((PKG / "_ext" / level).glob("_optim.*.so")):
        pytest.skip(f"this build has no {level} level (FASTOPT_ISA_LEVELS)")
    return _audit().audit_level(PKG, level)


# Every family the audit knows, and how many kernel functions each must show (a renamed task
# function that the audit no longer finds must not pass as "no narrow loop").
FAMILIES = {("_optim", "dense float32"): 9, ("_optim", "dense float64"): 9,
            ("_optim", "clip / norm f32"): 3, ("_optim", "clip / norm f64"): 3,
            ("_ema", "EMA"): 2, ("_batchnorm", "batch norm"): 12,
            ("_lowbit", "bfloat16 state"): 8, ("_lowbit", "int8 state"): 8,
            ("_lowbit", "float8 state"): 8, ("_lowbit", "roofline (low-bit)"): 1,
            ("_roofline", "roofline"): 3}


@pytest.mark.parametrize("level, width", [("avx512", "zmm"), ("avx2", "ymm")])
def test_every_kernel_loops_at_the_levels_width(level, width):
    audit = _audit()
    table = _table(level)
    assert {key: len(rows) for key, rows in table.items()} == FAMILIES
    narrow = {name: audit.widest(found) for rows in table.values()
              for name, found in rows.items() if audit.widest(found) != width}
    assert narrow == {}, f"kernels without a {width} loop at {level}"


def test_loops_and_their_widths_from_disassembly():
    """The loop finder on a made-up listing: a rotated loop entered at its test (the body
    counted from the header), a backward jump that enters a tail (no loop), scalar xmm."""
    audit = _audit()
    listing = [(0x10, "jmp    40 <f+0x30>"),
               (0x20, "vmulps (%rax),%zmm2,%zmm0"),           # header of a 512-bit loop
               (0x30, "vmovups %zmm0,-0x40(%rax)"),
               (0x40, "cmp    %rsi,%rax"),
               (0x44, "jne    20 <f+0x10>"),
               (0x50, "vmulss (%rsi),%xmm1,%xmm0"),           # a scalar loop
               (0x54, "vmovss %xmm0,(%rsi)"),
               (0x58, "jb     50 <f+0x40>"),
               (0x60, "ret"),
               (0x64, "vmovaps %ymm1,%ymm2"),                 # a tail entered from below
               (0x68, "ret"),
               (0x70, "jmp    64 <f+0x54>")]
    assert audit.loops(listing) == [("zmm", 4), ("scalar", 3)]
    assert audit.widest(audit.loops(listing)) == "zmm"
