"""Which instruction-set levels this CPU (and OS) supports.

The levels and the x86-64 psABI micro-architecture level each needs come from the one table,
``fastopt/runtime/levels.py``; this module only asks the CPU.
"""

from fastopt.runtime.levels import LEVELS

cdef extern from *:
    """
    #include <string.h>
    #if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    /* GCC >= 12 knows the psABI levels, with the OS support for the wider registers. */
    static int fastopt_cpu_supports(const char *level) {
        __builtin_cpu_init();
        if (strcmp(level, "x86-64-v2") == 0) return __builtin_cpu_supports("x86-64-v2");
        if (strcmp(level, "x86-64-v3") == 0) return __builtin_cpu_supports("x86-64-v3");
        if (strcmp(level, "x86-64-v4") == 0) return __builtin_cpu_supports("x86-64-v4");
        return 0;
    }
    #elif (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    /* Older compilers: the features that define v3 and v4. */
    static int fastopt_has_v3(void) {
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c")
            && __builtin_cpu_supports("movbe");
    }
    static int fastopt_cpu_supports(const char *level) {
        __builtin_cpu_init();
        if (strcmp(level, "x86-64-v3") == 0) return fastopt_has_v3();
        if (strcmp(level, "x86-64-v4") == 0)
            return fastopt_has_v3() && __builtin_cpu_supports("avx512f")
                && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
        return 0;
    }
    #else
    static int fastopt_cpu_supports(const char *level) { (void)level; return 0; }
    #endif
    """
    int fastopt_cpu_supports(const char* level) noexcept nogil


def supports(level):
    """Whether this CPU runs ``level`` (a name from the table, e.g. 'avx2')."""
    for lv in LEVELS:
        if lv.name == level:
            return lv.cpu is None or bool(fastopt_cpu_supports(lv.cpu.encode()))
    raise ValueError(f"unknown instruction-set level {level!r}")


def supported_levels():
    """Instruction-set levels this CPU can run, best first (always ends with 'baseline')."""
    return tuple(lv.name for lv in reversed(LEVELS) if supports(lv.name))
