"""What CPU this is, for reports: its model name and the instruction-set flags that matter.

Speed figures only mean something next to the CPU they come from (one Zen 4 VM and one Intel
server with the same flags can rank the kernels differently), so ``fastopt info``, ``fastopt
bench`` and its JSON say which CPU ran them.  Read from ``/proc/cpuinfo`` on Linux; elsewhere the
model is ``platform.processor()`` and the flags are unknown (an empty tuple).
"""

import platform

# The flags that decide which kernels run and how fast (SIMD width, float16/bfloat16
# conversions, the byte permutes of the int8 decode), and whether this is a virtual machine.
FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512dq", "avx512cd",
         "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni",
         "avx512_bitalg", "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "amx_tile",
         "hypervisor")


def _cpuinfo(path="/proc/cpuinfo"):
    """The first processor's ``key: value`` lines of ``path`` as a dict ({} if unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu(path="/proc/cpuinfo"):
    """This CPU as ``{"model": str, "family": str, "model_number": str, "flags": tuple}``.

    ``flags`` are those of ``FLAGS`` the CPU reports, in that order; ``family`` and
    ``model_number`` are ``""`` where unknown.

    >>> sorted(cpu())
    ['family', 'flags', 'model', 'model_number']
    """
    fields = _cpuinfo(path)
    have = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine() or "unknown",
        "family": fields.get("cpu family", ""),
        "model_number": fields.get("model", ""),
        "flags": tuple(flag for flag in FLAGS if flag in have),
    }


def describe(path="/proc/cpuinfo"):
    """One line: the model (family/model numbers) and the flags, e.g. for a report's header."""
    c = cpu(path)
    ids = f" (family {c['family']} model {c['model_number']})" if c["family"] else ""
    return f"{c['model']}{ids}; flags: {' '.join(c['flags']) or 'unknown'}"
