# The one OpenMP shim: the build works (single-threaded) without OpenMP.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTOPT_HAVE_OPENMP 1
    static int fastopt_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTOPT_HAVE_OPENMP 0
    static int fastopt_omp_max_threads(void) { return 1; }
    #endif
    #ifndef FASTOPT_ISA
    #define FASTOPT_ISA "unknown"
    #endif
    #ifndef FASTOPT_CFLAGS
    #define FASTOPT_CFLAGS ""
    #endif
    """
    const int FASTOPT_HAVE_OPENMP
    const char* FASTOPT_ISA
    const char* FASTOPT_CFLAGS
    int fastopt_omp_max_threads() noexcept nogil


def build_info():
    """(isa, openmp, cflags) this module was compiled with."""
    return (FASTOPT_ISA.decode(), bool(FASTOPT_HAVE_OPENMP), FASTOPT_CFLAGS.decode())


def omp_max_threads():
    """omp_get_max_threads() of the OpenMP runtime this module uses (1 without OpenMP)."""
    return fastopt_omp_max_threads()
