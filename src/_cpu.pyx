"""Which x86-64 instruction-set levels this CPU (and OS) supports."""

include "_openmp.pxi"

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


# ---------------------------------------------------------------- one thread pool for BLAS too
#
# OpenBLAS (pthreads build, as in NumPy's wheels) keeps its own worker threads,
# which busy-wait for about 2**28 cycles after every call; fastopt's OpenMP
# workers spin after every parallel region too.  Alternating the two on the
# same cores makes each wait for the other's spinners (a 55x slowdown was
# measured).  OpenBLAS >= 0.3.27 can hand its parallel jobs to a caller's
# function instead of its own pool; fastopt installs one that runs them on the
# same OpenMP team as its kernels, so the process has one pool.

cdef extern from *:
    """
    #include <stddef.h>
    typedef void (*fo_dojob_t)(int thread_num, void *jobdata, int dojob_data);
    typedef void (*fo_callback_t)(int sync, fo_dojob_t dojob, int numjobs, size_t elsize,
                                  void *jobdata, int dojob_data);
    typedef void (*fo_setter_t)(fo_callback_t callback);

    static volatile int fo_forked = 0;
    #if defined(__unix__) || defined(__APPLE__)
    #include <pthread.h>
    #define FO_HAVE_PTHREADS 1
    static void fo_mark_child(void) { fo_forked = 1; }
    #else
    #define FO_HAVE_PTHREADS 0
    #endif
    static int fo_atfork_registered = 0;

    #if FO_HAVE_PTHREADS
    typedef struct { fo_dojob_t dojob; int i; void *data; int dojob_data; } fo_job_t;
    static void *fo_job_main(void *arg) {
        fo_job_t *j = (fo_job_t *)arg;
        j->dojob(j->i, j->data, j->dojob_data);
        return NULL;
    }

    /* Jobs may wait on each other (threaded GEMM), so all must run at once. */
    static void fo_run_pthreads(fo_dojob_t dojob, int numjobs, size_t elsize, void *jobdata,
                                int dojob_data) {
        fo_job_t jobs[64];
        pthread_t tids[64];
        int started[64];
        int i;
        if (numjobs > 64) numjobs = 64;   /* OpenBLAS never asks for more than its thread count */
        for (i = 1; i < numjobs; i++) {
            jobs[i].dojob = dojob; jobs[i].i = i; jobs[i].dojob_data = dojob_data;
            jobs[i].data = (char *)jobdata + (size_t)i * elsize;
            started[i] = pthread_create(&tids[i], NULL, fo_job_main, &jobs[i]) == 0;
            if (!started[i]) fo_job_main(&jobs[i]);  /* cannot happen in practice */
        }
        dojob(0, jobdata, dojob_data);
        for (i = 1; i < numjobs; i++) if (started[i]) pthread_join(tids[i], NULL);
    }
    #endif

    static void fo_blas_callback(int sync, fo_dojob_t dojob, int numjobs, size_t elsize,
                                 void *jobdata, int dojob_data) {
        (void)sync;
        if (numjobs <= 0) return;
        if (numjobs == 1) { dojob(0, jobdata, dojob_data); return; }
    #ifdef _OPENMP
        if (!fo_forked && !omp_in_parallel() && !omp_get_dynamic()
                && numjobs <= omp_get_thread_limit()) {
            /* Not nested and not dynamic: the team has exactly numjobs threads. */
            #pragma omp parallel num_threads(numjobs)
            {
                int i = omp_get_thread_num();
                dojob(i, (char *)jobdata + (size_t)i * elsize, dojob_data);
            }
            return;
        }
    #endif
    #if FO_HAVE_PTHREADS
        fo_run_pthreads(dojob, numjobs, elsize, jobdata, dojob_data);
    #else
        { int i; for (i = 0; i < numjobs; i++) dojob(i, (char *)jobdata + (size_t)i * elsize, dojob_data); }
    #endif
    }

    static void fo_install(size_t setter_address, int on) {
        fo_setter_t setter = (fo_setter_t)setter_address;
        if (!fo_atfork_registered) {
    #if FO_HAVE_PTHREADS
            pthread_atfork(NULL, NULL, fo_mark_child);
    #endif
            fo_atfork_registered = 1;
        }
        setter(on ? fo_blas_callback : (fo_callback_t)0);
    }
    static int fo_is_forked(void) { return fo_forked; }
    """
    void fo_install(size_t setter_address, int on) noexcept nogil
    int fo_is_forked() noexcept nogil


def set_blas_callback(size_t setter_address, bint on):
    """Install (on) or remove fastopt's threads callback with an OpenBLAS setter function."""
    fo_install(setter_address, on)


def forked_child():
    """True in a child process forked after fastopt was imported (libgomp is unusable there)."""
    return bool(fo_is_forked())
