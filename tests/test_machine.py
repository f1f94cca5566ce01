"""fastopt.runtime.machine: the CPU named in ``fastopt info`` and the bench's header."""

import platform

import fastopt
from fastopt.runtime import machine

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512vbmi avx512_bf16 hypervisor lm

processor\t: 1
model name\t: not the first processor
flags\t\t: avx512_fp16
"""


def test_cpu_reads_the_first_processor_and_keeps_only_the_listed_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN4)
    c = machine.cpu(path)
    assert c == {"model": "AMD EPYC", "family": "25", "model_number": "17",
                 "flags": ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f",
                           "avx512vbmi", "avx512_bf16", "hypervisor")}
    assert machine.describe(path) == ("AMD EPYC (family 25 model 17); flags: sse4_2 avx avx2 fma "
                                      "f16c bmi2 avx512f avx512vbmi avx512_bf16 hypervisor")


def test_without_cpuinfo_the_model_falls_back_to_platform(tmp_path):
    c = machine.cpu(tmp_path / "missing")
    assert c["model"] == (platform.processor() or platform.machine() or "unknown")
    assert c["flags"] == () and c["family"] == ""
    assert machine.describe(tmp_path / "missing").endswith("; flags: unknown")


def test_info_names_the_cpu_and_its_flags_agree_with_the_dispatch():
    info = fastopt.info()
    c = machine.cpu()
    assert info["cpu"] == c["model"] and info["cpu_flags"] == " ".join(c["flags"])
    if c["flags"]:      # Linux: the levels the CPU probe finds need the flags /proc/cpuinfo lists
        flags = set(c["flags"])
        if "avx512" in info["isa_cpu"]:
            assert {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags
        if "avx2" in info["isa_cpu"]:
            assert {"avx2", "fma", "f16c", "bmi2"} <= flags
