"""Which x86-64 instruction-set levels this CPU (and OS) supports."""

cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    static int fastopt_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c")
            && __builtin_cpu_supports("movbe");
    }
    static int fastopt_has_avx512(void) {
        __builtin_cpu_init();
        return fastopt_has_avx2() && __builtin_cpu_supports("avx512f")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
    }
    #else
    static int fastopt_has_avx2(void) { return 0; }
    static int fastopt_has_avx512(void) { return 0; }
    #endif
    """
    int fastopt_has_avx2() noexcept nogil
    int fastopt_has_avx512() noexcept nogil


def supported_levels():
    """Instruction-set levels this CPU can run, best first (always ends with 'baseline')."""
    levels = []
    if fastopt_has_avx512():
        levels.append("avx512")
    if fastopt_has_avx2():
        levels.append("avx2")
    levels.append("baseline")
    return tuple(levels)
