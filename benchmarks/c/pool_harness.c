/* The thread pool alone (src/common/fo_threadpool.h), against its OpenMP backend, on synthetic
 * tasks shaped like the kernels' (issue 23): Adam over blocks of 16,384 float32 elements, and
 * batch-norm-like planes of 56 x 56 elements (64 x 64 of them).  Compiled against any copy of
 * the header, so two pool designs can be compared in alternating processes:
 *
 *   gcc -O3 -mavx2 -mfma -fno-math-errno -fno-trapping-math -fopenmp -DFO_POOL_DIAG \
 *       -I<dir of fo_threadpool.h> pool_harness.c -o harness -lm
 *   ./harness pool|openmp|ompdyn adam|planes N REPS [LOOPS [THREADS [GAP_US]]]
 *
 * Prints the median time per call in microseconds and, for the pool, the share of tasks the
 * calling thread ran and the mean publish-to-first-task latency of the worker. */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef long Py_ssize_t;
#include "fo_threadpool.h"

/* Per-task timing, robust to other processes on the cores: the medians of the task's own
 * duration and of the gap since the same thread's previous task of the same call (what
 * claiming a task costs), in TSC cycles.  A preemption lands in few samples: the median
 * ignores it. */
static uint64_t *dur, *gap;
static long nsamples = 0, cap = 0;
static int call_id = 0;
static __thread uint64_t last_end;
static __thread int last_call = -1;
static __thread int is_main = 0;
static uint64_t call_start, *join;   /* per call: a worker's first task start - call start */
static int *cpu_main, *cpu_worker;   /* per call: the CPU each ran its first task on */
/* Per call and thread (0: the caller, 1: the first worker): the first task's start and the
 * last task's end after the call's start, and the tasks it ran (the timeline). */
static uint64_t *tl_first[2], *tl_last[2];
static long *tl_count[2];
static __thread int tl_thread = 1;

static inline void record(uint64_t start, uint64_t end);

static inline void record(uint64_t start, uint64_t end) {
    long k = __atomic_fetch_add(&nsamples, 1, __ATOMIC_RELAXED);
    if (k < cap) {
        dur[k] = end - start;
        gap[k] = last_call == call_id ? start - last_end : 0;
    }
    if (!is_main && last_call != call_id && join[call_id] == 0) {
        join[call_id] = start > call_start ? start - call_start : 1;
        cpu_worker[call_id] = sched_getcpu();
    }
    if (is_main && last_call != call_id) cpu_main[call_id] = sched_getcpu();
    {
        int th = is_main ? 0 : tl_thread;
        if (th < 2) {
            if (last_call != call_id) tl_first[th][call_id] = start > call_start ? start - call_start : 1;
            tl_last[th][call_id] = end > call_start ? end - call_start : 1;
            tl_count[th][call_id]++;
        }
    }
    last_end = end;
    last_call = call_id;
}

typedef struct { float *p, *g, *m, *v; long n, block; } adam_t;

static void adam_task(void *ctx, Py_ssize_t t) {
    uint64_t t0 = __rdtsc();
    adam_t *a = (adam_t *)ctx;
    long lo = t * a->block, hi = lo + a->block < a->n ? lo + a->block : a->n;
    #pragma omp simd
    for (long i = lo; i < hi; i++) {
        float g = a->g[i];
        float m = 0.9f * a->m[i] + 0.1f * g;
        float v = 0.999f * a->v[i] + 0.001f * g * g;
        a->m[i] = m; a->v[i] = v;
        a->p[i] -= 1e-3f * m / (sqrtf(v) + 1e-8f);
    }
    record(t0, __rdtsc());
}

typedef struct { const float *x; float *y; long plane; } planes_t;

static void plane_task(void *ctx, Py_ssize_t t) {
    uint64_t t0 = __rdtsc();
    planes_t *a = (planes_t *)ctx;
    const float *x = a->x + t * a->plane;
    float *y = a->y + t * a->plane;
    float s = 1.0f + (float)(t % 64) * 1e-3f, b = (float)(t % 7);
    #pragma omp simd
    for (long i = 0; i < a->plane; i++) y[i] = (x[i] - b) * s;
    record(t0, __rdtsc());
}

/* OpenMP with the pool's hand-out order (one task at a time, in turn): is interleaving the
 * blocks of the two threads what costs, or how the threads wait? */
static void omp_dynamic(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
    Py_ssize_t t;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (t = 0; t < ntasks; t++) fn(ctx, t);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmpu(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The median of the non-zero values (zero: no sample). */
static double median_nz(uint64_t *v, long n) {
    long k = 0;
    for (long i = 0; i < n; i++) if (v[i]) v[k++] = v[i];
    if (!k) return 0.0;
    qsort(v, k, sizeof *v, cmpu);
    return (double)v[k / 2];
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: harness pool|openmp|ompdyn adam|planes N REPS [LOOPS]\n"); return 2; }
    int omp = strcmp(argv[1], "openmp") == 0, dyn = strcmp(argv[1], "ompdyn") == 0;
    int adam = strcmp(argv[2], "adam") == 0;
    long n = atol(argv[3]);
    int reps = atoi(argv[4]);
    int loops = argc > 5 ? atoi(argv[5]) : 1;
    int nthreads = argc > 6 ? atoi(argv[6]) : 2;
    double gap_us = argc > 7 ? atof(argv[7]) : 0.0;   /* busy time between calls (Python's) */
    fo_pool_init(getenv("SPIN_US") ? (long)(atof(getenv("SPIN_US")) * 1000) : 50000);
    fo_set_backend(omp ? FO_BACKEND_OPENMP : FO_BACKEND_POOL);
    float *buf = aligned_alloc(64, 4 * n * sizeof(float));
    for (long i = 0; i < 4 * n; i++) buf[i] = (float)((i * 2654435761u) % 1000) * 1e-3f;
    adam_t a = {buf, buf + n, buf + 2 * n, buf + 3 * n, n, 16384};
    planes_t pl = {buf, buf + n, 3136};
    void *ctx = adam ? (void *)&a : (void *)&pl;
    fo_task_fn fn = adam ? adam_task : plane_task;
    long ntasks = adam ? (n + 16383) / 16384 : n / 3136;
    double *times = malloc(reps * sizeof(double));
    cap = ntasks * reps * loops;
    dur = calloc(cap, sizeof *dur);
    join = calloc(reps * loops + 2, sizeof *join);
    cpu_main = calloc(reps * loops + 2, sizeof *cpu_main);
    cpu_worker = calloc(reps * loops + 2, sizeof *cpu_worker);
    is_main = 1;
    gap = calloc(cap, sizeof *gap);
    for (int th = 0; th < 2; th++) {
        tl_first[th] = calloc(reps * loops + 2, sizeof(uint64_t));
        tl_last[th] = calloc(reps * loops + 2, sizeof(uint64_t));
        tl_count[th] = calloc(reps * loops + 2, sizeof(long));
    }
    uint64_t *tl_ret = calloc(reps * loops + 2, sizeof(uint64_t));
    for (int r = 0; r < 3; r++) fo_run_tasks(fn, ctx, ntasks, nthreads);
    nsamples = 0;
    double c0 = now_us();
    uint64_t k0 = __rdtsc();
    uint64_t m0 = 0, w0 = 0;
#ifdef FO_POOL_DIAG
    m0 = fo_pool.tasks_master; w0 = fo_pool.tasks_workers;
#endif
    for (int r = 0; r < reps; r++) {
        double t = now_us();   /* (includes the gaps: compare the medians of the same GAP_US) */
        for (int l = 0; l < loops; l++) {
            call_id++; call_start = __rdtsc();
            if (dyn) omp_dynamic(fn, ctx, ntasks, nthreads);
            else fo_run_tasks(fn, ctx, ntasks, nthreads);
            tl_ret[call_id] = __rdtsc() - call_start;
            if (gap_us > 0) { double w = now_us(); while (now_us() - w < gap_us) ; }
        }
        times[r] = (now_us() - t) / loops;
    }
    double per_us = (__rdtsc() - k0) / (now_us() - c0);   /* TSC cycles per microsecond */
    long ns = nsamples < cap ? nsamples : cap;
    qsort(times, reps, sizeof(double), cmp);
    long joined = 0, same_cpu = 0, main_moves = 0;
    for (long c = 1; c <= (long)reps * loops; c++) {
        joined += join[c] != 0;
        same_cpu += join[c] != 0 && cpu_main[c] == cpu_worker[c];
        main_moves += c > 1 && cpu_main[c] != cpu_main[c - 1];
    }
    printf("%.2f task=%.3fus claim=%.3fus joined=%.2f same_cpu=%ld main_moves=%ld join=%.2fus",
           times[reps / 2], median_nz(dur, ns) / per_us, median_nz(gap, ns) / per_us,
           (double)joined / (reps * loops), same_cpu, main_moves,
           median_nz(join + 1, (long)reps * loops) / per_us);
#ifdef FO_POOL_DIAG
    if (!omp && !dyn) {
        uint64_t m = fo_pool.tasks_master - m0, w = fo_pool.tasks_workers - w0;
        printf(" master_share=%.2f wake_us=%.1f sleeps=%llu", m + w ? (double)m / (m + w) : 0.0,
               fo_pool.wake_count ? fo_pool.wake_ns / 1e3 / fo_pool.wake_count : 0.0,
               (unsigned long long)fo_pool.wakes_sleep);
    }
#endif
    if (getenv("TIMELINE")) {
        /* Medians over the calls, in microseconds after the call's start: when each thread
         * started its first task and ended its last, when the call returned, and the
         * caller's share of the tasks. */
        long nc = (long)reps * loops;
        uint64_t *v = malloc((nc + 1) * sizeof *v);
        const char *names[5] = {"m_first", "m_last", "w_first", "w_last", "ret"};
        uint64_t *src[5] = {tl_first[0], tl_last[0], tl_first[1], tl_last[1], tl_ret};
        printf("\n  timeline (median us):");
        for (int q = 0; q < 5; q++) {
            memcpy(v, src[q] + 1, nc * sizeof *v);
            printf(" %s=%.1f", names[q], median_nz(v, nc) / per_us);
        }
        for (long c = 1; c <= nc; c++)   /* the caller's tail: return - the last task's end */
            v[c - 1] = tl_ret[c] > (tl_last[0][c] > tl_last[1][c] ? tl_last[0][c] : tl_last[1][c])
                ? tl_ret[c] - (tl_last[0][c] > tl_last[1][c] ? tl_last[0][c] : tl_last[1][c]) : 1;
        printf(" tail=%.2f", median_nz(v, nc) / per_us);
        for (long c = 1; c <= nc; c++)
            v[c - 1] = tl_last[0][c] > tl_last[1][c] ? tl_last[0][c] - tl_last[1][c] + 1
                                                       : tl_last[1][c] - tl_last[0][c] + 1;
        printf(" |m_last-w_last|=%.1f", median_nz(v, nc) / per_us);
        for (long c = 1; c <= nc; c++) v[c - 1] = (uint64_t)tl_count[0][c] + 1;
        printf(" m_tasks=%.0f/%ld", median_nz(v, nc) - 1, ntasks);
    }
    printf("\n");
    return 0;
}
