/* fastopt's thread pool: the one place where kernel threads are started, woken and joined.
 *
 * Why not OpenMP regions: a parallel region ends at a barrier that waits for every thread
 * of the team.  When other processes share the cores, one descheduled worker holds every
 * call up for a scheduler time slice (Adam at 1M elements went from 0.33 to 8-11 ms per
 * step with two processes on two cores).  GNU libgomp also hangs in a child forked after
 * the parent used it, and its wait policy is fixed when it loads.
 *
 * How this pool works:
 *  - A call is a list of `ntasks` independent tasks (fixed blocks of a kernel), cut into one
 *    contiguous range per taking-part thread, as OpenMP's static schedule does: the calling
 *    thread (the master) takes range 0, worker k range k, the same at every call, so the
 *    blocks a thread touched at the last call are still in its core's cache.  A thread that
 *    has finished its range takes what is left of the others' ranges, one task at a time:
 *    nobody waits for a late or descheduled thread except for the one block it holds.  The
 *    master returns once every task is done.  Which thread computes a block never changes
 *    its result, so results are the same bits for any thread count and either backend.
 *  - Waiting threads spin for a short while (FASTOPT_SPIN_US, PAUSE only: no system call,
 *    see fo_keep_waiting), longer after a long job (up to 1/8 of its time, fo_idle_spin_ns),
 *    and sleep on a condition variable once that time is up or as soon as they find they
 *    were descheduled while spinning (another thread wanted the core).
 *  - One master at a time: a caller that finds the pool busy (another Python thread is
 *    in a kernel) runs its tasks itself, so concurrent callers never oversubscribe.
 *  - Fork: a pthread_atfork handler resets the pool in the child (its workers do not
 *    exist there); the child starts fresh workers at its next parallel call.
 *
 * Ranges: each on a cache line of its own (no line shared by the threads' claims), holding
 * a 64-bit counter, the job generation in the high half and the range's next task in the
 * low half, and its end.  A thread claims task i of job g by compare-and-swap from (g, i) to
 * (g, i + 1), so it can never take a task of a later job.  Before writing a new job's fields
 * the master closes every range it will use ((g, CLOSED)), so a stale worker's claim fails.
 * Each thread adds the count of tasks it ran to `done` once, when it has no task left.
 *
 * Measured on a 2-vCPU AMD EPYC (Zen 4) VM (issue 23; benchmarks/c/pool_harness.c): with
 * one shared ticket and idle threads calling sched_yield, the worker took part in 0-66% of
 * back-to-back Adam 64K calls (see fo_keep_waiting) against 100% for libgomp's, and blocks
 * handed out in turn cost 1.25x at 64K even inside OpenMP (schedule(dynamic, 1) against
 * static: each block moves to the other core's cache at every call).
 */
#ifndef FO_THREADPOOL_H
#define FO_THREADPOOL_H

#include <stdint.h>
#include <stdlib.h>

typedef void (*fo_task_fn)(void *ctx, Py_ssize_t task);

#if !(defined(__unix__) || defined(__APPLE__)) || defined(__STDC_NO_ATOMICS__)
/* No pthreads or no C11 atomics (e.g. MSVC): the kernels run on the calling thread. */
typedef struct {
    int nworkers; long spin_ns; unsigned long long forks, jobs, serial_busy;
    unsigned long long tasks_master, tasks_workers, wakes_spin, wakes_sleep, wakes_empty,
        master_sleeps, wake_ns, wake_count, serial_small, wakes_samecpu, prewakes;
    long sleep_wake_ns, broadcast_ns;
    int small_forced, sleeping;
} fo_pool_t;
static fo_pool_t fo_pool;
static void fo_pool_init(long spin_ns) { fo_pool.spin_ns = spin_ns; }
static void fo_pool_prewake(int nthreads) { (void)nthreads; }
static void fo_pool_run(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
    Py_ssize_t t;
    (void)nthreads;
    for (t = 0; t < ntasks; t++) fn(ctx, t);
}
static int fo_blas_register(size_t setter, size_t exec_async, size_t exec_wait, size_t num_threads,
                            int max_cpu) {
    (void)setter; (void)exec_async; (void)exec_wait; (void)num_threads; (void)max_cpu;
    return -1;
}
static void fo_blas_set_shared(int k, int on) { (void)k; (void)on; }
static unsigned long long fo_blas_calls(int k, int shared) { (void)k; (void)shared; return 0; }
typedef struct { uint32_t job; int32_t slot; int64_t task, t0, t1; int32_t cpu, pad; } fo_trace_rec_t;
static int fo_trace_start(int64_t cap) { (void)cap; return -1; }
static int64_t fo_trace_stop(fo_trace_rec_t **recs) { *recs = NULL; return 0; }
#define FO_TRACING() 0
#define FO_TRACE_NOW() 0
#define fo_thread_cpu_ns() 0
static void fo_trace(uint32_t job, int slot, int64_t task, int64_t t0, int64_t t1) {
    (void)job; (void)slot; (void)task; (void)t0; (void)t1;
}
#else

#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#define FO_CLOSED 0xFFFFFFFFu
#define FO_MAX_WORKERS 1023

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FO_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define FO_RELAX() __asm__ __volatile__("yield")
#else
#define FO_RELAX() ((void)0)
#endif

/* One thread's run of a job's tasks, on a cache line of its own. */
typedef struct {
    _Alignas(64) _Atomic uint64_t next;  /* (job generation << 32) | its next task */
    _Atomic uint32_t end;                /* one past its last task */
} fo_range_t;

typedef struct {
    /* the current job (read by every thread, written by the master between jobs) */
    _Atomic(fo_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t ntasks;
    _Atomic int nranges;         /* threads taking part (the master and workers 1..want) */
    _Atomic int want;            /* workers 1..want take part in the job */
    _Atomic int once;            /* gang mode: each thread runs at most one task */
    _Atomic uint32_t gen;        /* last published job: what workers wait on */
    uint32_t next_gen;           /* the master's counter (under `master`) */
    _Alignas(64) _Atomic int64_t done;   /* tasks finished (each thread adds its count once) */
    /* sleeping */
    pthread_mutex_t lock;
    pthread_cond_t wake;         /* workers sleep here */
    pthread_cond_t finished;     /* the master sleeps here */
    _Atomic int sleeping;        /* workers asleep (or about to be) */
    _Atomic int master_sleeping;
    uint32_t poke;               /* bumped by fo_pool_prewake (under `lock`) */
    /* workers */
    pthread_mutex_t master;      /* held by the thread running a job */
    int nworkers;                /* started, under `master` */
    _Atomic long spin_ns;        /* how long an idle thread spins before sleeping */
    _Atomic uint64_t forks;      /* times this pool was reset in a forked child */
    _Atomic uint64_t jobs;       /* jobs run, small ones on the caller alone included (for tests) */
    _Atomic uint64_t serial_busy;/* calls run serially because the pool was busy */
    /* diagnostics (fastopt._threadpool.stats()): who ran the tasks, how workers woke */
    _Atomic uint64_t tasks_master, tasks_workers;
    _Atomic uint64_t wakes_spin, wakes_sleep, wakes_empty, master_sleeps;
    _Atomic uint64_t wake_ns, wake_count;   /* publish -> a worker's first task */
    _Atomic long published_ns;
    _Atomic long last_job_ns;   /* the last job's time, publish to done (for fo_idle_spin_ns) */
    /* small jobs (fo_small_job): what waking a sleeping worker costs, measured */
    _Atomic long sleep_wake_ns; /* publish -> a woken worker's first task (fast down, slow up) */
    _Atomic long broadcast_ns;  /* the caller's time in the wake-up call (same filter) */
    long last_return_ns;        /* when the last call returned (under `master`) */
    unsigned small_streak;      /* small jobs run alone in a row (under `master`) */
    _Atomic int master_cpu;     /* the CPU the caller published the last job from */
    _Atomic uint64_t serial_small;   /* calls run on the caller alone: waking did not pay */
    _Atomic uint64_t wakes_samecpu;  /* wake-ups that found the caller's CPU and stood aside */
    _Atomic uint64_t prewakes;       /* fo_pool_prewake calls that woke sleeping workers */
    _Atomic int last_wake_aside;     /* the last woken worker stood aside (and sleeps again) */
    _Atomic int small_forced;   /* test hook (fastopt._threadpool.force_small): every job
                                   fo_small_job would judge runs on the caller alone */
} fo_pool_t;

static fo_pool_t fo_pool;
static fo_range_t fo_ranges[FO_MAX_WORKERS + 1];   /* range k: the master's (0) or worker k's */
static int fo_pool_ready = 0;

static inline long fo_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Tracing, for diagnosis (fastopt._threadpool.trace_start / trace_stop,
 * benchmarks/pool_trace.py): one record per task run, with the job, the thread's slot (0: the
 * caller, k: worker k or OpenMP thread k), the task, and its start and end (CLOCK_MONOTONIC
 * ns); per job also the caller's publish (task -1) and return (task -2), and each worker's
 * wake-up (task -3: it saw the job).  Off, it costs one relaxed load per task.  Not for
 * concurrent callers: start and stop it around calls from one thread. */
typedef struct { uint32_t job; int32_t slot; int64_t task, t0, t1; int32_t cpu, pad; } fo_trace_rec_t;
static fo_trace_rec_t *fo_trace_buf = NULL;

/* The CPU the calling thread runs on (-1 where unknown). */
static inline int fo_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}
static int64_t fo_trace_cap = 0;
static _Atomic int64_t fo_trace_n = 0;
static _Atomic int fo_trace_on = 0;
#define FO_TRACING() atomic_load_explicit(&fo_trace_on, memory_order_relaxed)
#define FO_TRACE_NOW() fo_now_ns()

/* The calling thread's CPU time (ns): the t1 of the publish and return records, so that the
 * caller's serial work between calls can be told apart from time it was descheduled. */
static inline int64_t fo_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fo_trace(uint32_t job, int slot, int64_t task, int64_t t0, int64_t t1) {
    int64_t k = atomic_fetch_add_explicit(&fo_trace_n, 1, memory_order_relaxed);
    if (k < fo_trace_cap) {
        fo_trace_rec_t r = {job, slot, task, t0, t1, fo_cpu(), 0};
        fo_trace_buf[k] = r;
    }
}

/* Start recording up to `cap` records (dropping any earlier ones).  Returns 0, -1 without
 * memory. */
static int fo_trace_start(int64_t cap) {
    atomic_store(&fo_trace_on, 0);
    if (cap > fo_trace_cap) {
        fo_trace_rec_t *b = (fo_trace_rec_t *)realloc(fo_trace_buf, (size_t)cap * sizeof *b);
        if (b == NULL) return -1;
        fo_trace_buf = b;
        fo_trace_cap = cap;
    }
    atomic_store(&fo_trace_n, 0);
    atomic_store(&fo_trace_on, 1);
    return 0;
}

/* Stop recording; *recs points at the records (valid until the next start).  Returns their
 * count. */
static int64_t fo_trace_stop(fo_trace_rec_t **recs) {
    int64_t n;
    atomic_store(&fo_trace_on, 0);
    n = atomic_load(&fo_trace_n);
    *recs = fo_trace_buf;
    return n < fo_trace_cap ? n : fo_trace_cap;
}

/* One round of waiting that began at `start`: PAUSE, and every 64 rounds a look at the clock.
 * Returns 0 (time to sleep) once `budget` ns have elapsed, or as soon as the clock shows
 * that this thread was descheduled since its last look (`*last`): another thread wanted this
 * CPU (another process, or NumPy's BLAS threads between two kernel calls), and spinning on
 * would only take the core from it.
 *
 * No sched_yield (the pool yielded in its waits until issue 23).  On the machine where it was
 * measured (a 2-vCPU AMD EPYC guest, Linux 6.18) a system call costs 0.5-2.5 us, and with
 * other processes on the cores a worker that kept yielding was not running when the next
 * job came: it took part in 0-1% of back-to-back Adam 64K calls (its mean publish-to-first-
 * task time 4-28 ms), against 21-94% spinning with PAUSE only and 100% for libgomp's workers,
 * which spin with PAUSE only (benchmarks/c/pool_harness.c).  Likely why: Linux's EEVDF
 * scheduler (6.6 and later) moves a yielding task's deadline one slice later at each yield. */
#define FO_PREEMPTED_NS 30000L   /* a gap this long between two looks: we were descheduled */

/* Whether this worker runs on the CPU the caller published the last job from.  A worker
 * there can only run by taking the CPU from the caller: it should neither spin nor claim
 * tasks (gang jobs excepted), but yield the CPU to the caller until the scheduler moves it
 * to another CPU or the caller has claimed every task, then sleep.
 *
 * Why (benchmarks/pool_trace.py's cpu column, issue 23): alternating Adam 64K with a 256x256
 * NumPy matmul on the 2-vCPU EPYC VM, the sleeping worker was woken onto the caller's CPU in
 * 65-88% of the calls (OpenBLAS's worker, which polls with sched_yield for about 0.1 s after
 * each product, kept the other CPU busy), took it from the caller (which then ran 0.7 of the
 * 4 tasks on average) and spun there after the job: those calls took 113-120 us against 23
 * us for the caller alone, and the matmul after them 50 us (the spin) longer. */
static inline int fo_on_master_cpu(void) {
    int cpu = fo_cpu();
    return cpu >= 0 && cpu == atomic_load_explicit(&fo_pool.master_cpu, memory_order_relaxed);
}

static inline int fo_keep_waiting(long start, unsigned *round, long budget, long *last,
                                   int worker) {
    long now;
    FO_RELAX();
    if ((++*round & 63) != 0) return 1;
    now = fo_now_ns();
    if (now - *last > FO_PREEMPTED_NS) return 0;
    if (worker && fo_on_master_cpu()) return 0;
    *last = now;
    return now - start < budget;
}

/* How long an idle worker spins for the next job before it sleeps: spin_ns (FASTOPT_SPIN_US),
 * or, after a long job, up to 1/FO_SPIN_SHARE of that job's time (at most FO_SPIN_JOB_MAX_NS),
 * so that spinning costs at most that share of the useful work.
 *
 * Why (benchmarks/pool_trace.py, issue 23): on large calls the caller's serial work between
 * two parallel calls is long, 140 us of CPU between two Adam 16M steps and 160-210 us between
 * the passes of a 64x64x56x56 batch norm (Python with caches the kernel just flushed), against
 * 24 us at Adam 1M.  (Batch norm's two passes per direction have since become one kernel call,
 * the coefficients between them computed in C: 15-25 us between them; see _batchnorm.pyx.tp.)  With a fixed 50 us spin the worker was asleep at every such call and
 * had to be woken (a futex call by the caller, then the scheduler), while libgomp's workers
 * spin for milliseconds and were always ready; the blocks themselves ran at the same speed
 * on both backends (the same median time per block, per pass). */
#define FO_SPIN_SHARE 8
#define FO_SPIN_JOB_MAX_NS 2000000L

static inline long fo_idle_spin_ns(void) {
    long base = atomic_load_explicit(&fo_pool.spin_ns, memory_order_relaxed);
    long job = atomic_load_explicit(&fo_pool.last_job_ns, memory_order_relaxed) / FO_SPIN_SHARE;
    if (base <= 0) return 0;                       /* FASTOPT_SPIN_US=0: never spin */
    if (job > FO_SPIN_JOB_MAX_NS) job = FO_SPIN_JOB_MAX_NS;
    return job > base ? job : base;
}

/* Spin until *word != old, `budget` ns elapse or this thread is descheduled.  Returns the
 * last value read. */
static inline uint32_t fo_spin_while_equal(_Atomic uint32_t *word, uint32_t old, long budget) {
    long start = fo_now_ns(), last = start;
    unsigned round = 0;
    uint32_t v;
    while ((v = atomic_load_explicit(word, memory_order_acquire)) == old)
        if (!fo_keep_waiting(start, &round, budget, &last, 1)) break;
    return v;
}

/* Store a new sample of a time into *x, filtered: a shorter one at once, a longer one an
 * eighth of the way (preemption makes times long, never short). */
static inline void fo_filter_store(_Atomic long *x, long sample) {
    long old = atomic_load_explicit(x, memory_order_relaxed);
    if (sample < 1) sample = 1;
    atomic_store_explicit(x, (old <= 0 || sample < old) ? sample : old + (sample - old) / 8,
                          memory_order_relaxed);
}

/* Each task function's time per task on the caller, filtered as above (0: not measured),
 * in a small table by function address, under `master` (a collision replaces the entry). */
#define FO_EST_SLOTS 64
typedef struct { fo_task_fn fn; _Atomic long task_ns; } fo_est_t;
static fo_est_t fo_est[FO_EST_SLOTS];

static inline fo_est_t *fo_est_of(fo_task_fn fn) {
    uint64_t h = (uint64_t)(uintptr_t)fn * 0x9E3779B97F4A7C15ull;
    fo_est_t *e = &fo_est[h >> 58];
    if (e->fn != fn) {
        e->fn = fn;
        atomic_store_explicit(&e->task_ns, 0, memory_order_relaxed);
    }
    return e;
}

/* How long the caller spins for the tasks other threads still hold before it sleeps: every
 * task is claimed by then, so the wait is at most about one task (fn's measured time per task,
 * twice for slack), and at least spin_ns; at most FO_SPIN_JOB_MAX_NS, and never with
 * FASTOPT_SPIN_US=0.  As every wait, it stops as soon as the caller finds it was descheduled.
 *
 * Why (issue 23, the 2-vCPU EPYC Zen 3 VM, quiet): batch norm's 4096x1024 blocks take 70-210
 * us, so the caller, done with its range while the worker was in its last block, outwaited a
 * 50 us spin and slept in 4 of the 16 passes of a sample, and was woken by the worker (a futex
 * call, tens of microseconds on this VM) after the block had ended; libgomp's barrier spins. */
static inline long fo_master_wait_ns(fo_task_fn fn) {
    long base = atomic_load_explicit(&fo_pool.spin_ns, memory_order_relaxed);
    long task = 2 * atomic_load_explicit(&fo_est_of(fn)->task_ns, memory_order_relaxed);
    if (base <= 0) return 0;
    if (task > FO_SPIN_JOB_MAX_NS) task = FO_SPIN_JOB_MAX_NS;
    return task > base ? task : base;
}

/* Whether a job of `ntasks` tasks of fn should run on the caller alone rather than wake the
 * sleeping workers (fo_run_job, under `master`).  Waking costs the caller the wake-up call
 * (broadcast_ns) and the worker arrives sleep_wake_ns after publishing; splitting a job of
 * serial time T then ends at about (T + wake + broadcast) / 2 at best, later when the
 * worker lands on the caller's CPU or spins after the job on a CPU another thread (NumPy's
 * BLAS) wants.  So a job runs alone when T < 2 * (wake + broadcast), and only when
 * - every worker sleeps (a spinning worker joins at no cost), and
 * - the caller's last call returned longer ago than a worker spins (fo_idle_spin_ns): the
 *   worker would be asleep again at the next call, so waking pays for this call only.  In a
 *   loop of back-to-back calls one wake-up keeps the worker spinning for all that follow,
 *   unless the last woken worker landed on the caller's CPU and went back to sleep
 *   (fo_on_master_cpu): then it counts as a wake-up for this call only as well.
 * Nothing is decided before both costs and fn's task time have been measured, and every
 * FO_SMALL_RESAMPLE-th such job wakes the workers anyway, to measure the wake-up again (one
 * long wake-up under load must not keep the workers asleep for good).  For tests, small_forced
 * (fastopt._threadpool.force_small) skips the judgement: every such job runs alone.
 *
 * Why (issue 23): alternating Adam 64K (4 tasks, 23 us on one thread) with a 256x256 NumPy
 * matmul (190 us), the worker slept at every call and was woken (wake-up 20-27 us, the
 * broadcast about 10 us of the caller's time on the 2-vCPU EPYC VM): the call took 62-73 us
 * when the worker landed on the other CPU and 113-120 us on the caller's. */
#define FO_SMALL_RESAMPLE 16
static int fo_small_job(fo_task_fn fn, Py_ssize_t ntasks, int workers) {
    long wake = atomic_load_explicit(&fo_pool.sleep_wake_ns, memory_order_relaxed);
    long bc = atomic_load_explicit(&fo_pool.broadcast_ns, memory_order_relaxed);
    long task = atomic_load_explicit(&fo_est_of(fn)->task_ns, memory_order_relaxed);
    if (wake <= 0 || bc <= 0 || task <= 0) return 0;
    if (atomic_load(&fo_pool.sleeping) < workers) return 0;
    if (!atomic_load_explicit(&fo_pool.last_wake_aside, memory_order_relaxed)
            && fo_now_ns() - fo_pool.last_return_ns <= fo_idle_spin_ns())
        return 0;
    return (double)task * (double)ntasks < 2.0 * (double)(wake + bc);
}

/* Claim and run tasks of job g until none is left: first those of range `slot` (the same run
 * of tasks at every call, as OpenMP's static schedule: the data a thread touched at the last
 * call is still in its core's cache), then those left in the others' ranges, so a thread that
 * is late or descheduled holds up nobody.  Gang mode (once): its own range's one task only.
 * Returns how many it ran, after adding them to `done`. */
static int64_t fo_claim(uint32_t g, int slot, int once) {
    int64_t ran = 0, d;
    int nranges = atomic_load(&fo_pool.nranges);
    fo_task_fn fn = NULL;
    void *ctx = NULL;
    int k;
    if (slot >= nranges) return 0;
    for (k = 0; k < nranges; k++) {
        fo_range_t *r = &fo_ranges[(slot + k) % nranges];
        for (;;) {
            uint64_t t = atomic_load(&r->next);
            uint32_t i = (uint32_t)t;
            if ((uint32_t)(t >> 32) != g) goto out;          /* a later job: ours is over */
            if (i >= atomic_load(&r->end)) break;            /* none left here (or closed) */
            if (!atomic_compare_exchange_weak(&r->next, &t, t + 1)) continue;
            /* Task i of job g is ours: the job cannot end before we finish it, so its fields
             * hold. */
            if (fn == NULL) { fn = atomic_load(&fo_pool.fn); ctx = atomic_load(&fo_pool.ctx); }
            if (FO_TRACING()) {
                int64_t t0 = fo_now_ns();
                fn(ctx, (Py_ssize_t)i);
                fo_trace(g, slot, i, t0, fo_now_ns());
            } else {
                fn(ctx, (Py_ssize_t)i);
            }
            ran++;
            if (once) goto out;
        }
        if (once) break;
    }
out:
    if (ran == 0) return 0;
    d = atomic_fetch_add(&fo_pool.done, ran) + ran;
    if (d == atomic_load(&fo_pool.ntasks) && atomic_load(&fo_pool.master_sleeping)) {
        pthread_mutex_lock(&fo_pool.lock);
        pthread_cond_signal(&fo_pool.finished);
        pthread_mutex_unlock(&fo_pool.lock);
    }
    return ran;
}

typedef struct { int id; uint32_t seen; } fo_worker_arg_t;

/* Whether job g has tasks nobody has claimed yet. */
static int fo_tasks_left(uint32_t g) {
    int k, nranges = atomic_load(&fo_pool.nranges);
    for (k = 0; k < nranges; k++) {
        uint64_t t = atomic_load(&fo_ranges[k].next);
        if ((uint32_t)(t >> 32) != g) return 0;   /* a later job: ours is over */
        if ((uint32_t)t < atomic_load(&fo_ranges[k].end)) return 1;
    }
    return 0;
}

/* Sleep until a job later than `seen` is published, or until fo_pool_prewake says one is
 * coming; returns the last published generation (`seen` after a prewake). */
static uint32_t fo_worker_sleep(uint32_t seen) {
    uint32_t g, poke;
    pthread_mutex_lock(&fo_pool.lock);
    poke = fo_pool.poke;
    atomic_fetch_add(&fo_pool.sleeping, 1);
    while ((g = atomic_load(&fo_pool.gen)) == seen && fo_pool.poke == poke)
        pthread_cond_wait(&fo_pool.wake, &fo_pool.lock);
    atomic_fetch_sub(&fo_pool.sleeping, 1);
    pthread_mutex_unlock(&fo_pool.lock);
    return g;
}

/* A parallel call on up to `nthreads` threads is coming from the calling thread (a kernel's
 * Python wrapper says so on entry, before its argument checks): wake the sleeping workers now,
 * so that they spin (fo_idle_spin_ns) instead of sleeping when the job is published.  Does
 * nothing when no worker sleeps, on the OpenMP backend (fo_run_tasks) or for one thread.
 * Results do not change: it only moves when the workers wake.
 *
 * Why (issue 23, benchmarks/pool_trace.py and threading_backends.py on the 2-vCPU EPYC Zen 3
 * VM, quiet): batch norm forward + backward at 4096x1024 is two kernel calls of two passes
 * each, and between the calls the caller spends 130-340 us in Python (the wrappers' checks
 * and allocations, on caches the passes just flushed) while a pass lasts 0.7-1.6 ms, so a
 * worker spinning 1/8 of the last job was asleep at both calls of every step and arrived
 * 45-83 us after the publish (a futex wake-up of a halted vCPU), against 2-5 us for libgomp's
 * workers, which spin for milliseconds.  The wrappers publish 115-130 us after their entry
 * (measured at half load): woken there, the worker is spinning when the job comes. */
static void fo_pool_prewake(int nthreads) {
    if (nthreads <= 1 || !fo_pool_ready || atomic_load_explicit(&fo_pool.sleeping,
                                                                memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&fo_pool.lock);
    if (atomic_load(&fo_pool.sleeping) > 0) {
        fo_pool.poke++;
        pthread_cond_broadcast(&fo_pool.wake);
        atomic_fetch_add_explicit(&fo_pool.prewakes, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&fo_pool.lock);
}

static void *fo_worker_main(void *arg) {
    /* `seen`: the last job published before this worker was started, so the job the
     * master is about to publish is not missed. */
    int id = ((fo_worker_arg_t *)arg)->id;
    uint32_t seen = ((fo_worker_arg_t *)arg)->seen;
    free(arg);
    int stood_aside = 0;
    for (;;) {
        uint32_t g = stood_aside ? seen : fo_spin_while_equal(&fo_pool.gen, seen, fo_idle_spin_ns());
        int slept = 0;
        stood_aside = 0;
        if (g == seen) {
            g = fo_worker_sleep(seen);
            if (g == seen) continue;   /* prewoken (fo_pool_prewake): spin for the job */
            slept = 1;
        }
        seen = g;
        if (id <= atomic_load(&fo_pool.want)) {
            long woke = fo_now_ns();
            long pub = atomic_load_explicit(&fo_pool.published_ns, memory_order_relaxed);
            int once = atomic_load(&fo_pool.once);
            int64_t ran;
            if (FO_TRACING()) fo_trace(g, id, -3, woke, woke);
            if (!once && fo_on_master_cpu()) {
                /* The caller's CPU: give it back (sched_yield), and take part only if the
                 * scheduler moves this thread to another CPU while tasks are left. */
                atomic_fetch_add_explicit(&fo_pool.wakes_samecpu, 1, memory_order_relaxed);
                while (fo_on_master_cpu() && fo_tasks_left(g)) sched_yield();
                if (!fo_tasks_left(g)) {   /* the caller did the job: sleep again */
                    if (slept) {   /* what the wake-up cost the caller, for nothing */
                        atomic_store_explicit(&fo_pool.last_wake_aside, 1, memory_order_relaxed);
                        if (woke >= pub) fo_filter_store(&fo_pool.sleep_wake_ns, woke - pub);
                    }
                    stood_aside = 1;
                    continue;
                }
            }
            ran = fo_claim(g, id, once);
            atomic_fetch_add_explicit(slept ? &fo_pool.wakes_sleep : &fo_pool.wakes_spin, 1,
                                      memory_order_relaxed);
            if (ran > 0) {
                atomic_fetch_add_explicit(&fo_pool.tasks_workers, (uint64_t)ran, memory_order_relaxed);
                if (woke >= pub) {
                    atomic_fetch_add_explicit(&fo_pool.wake_ns, (uint64_t)(woke - pub), memory_order_relaxed);
                    atomic_fetch_add_explicit(&fo_pool.wake_count, 1, memory_order_relaxed);
                }
            } else {
                atomic_fetch_add_explicit(&fo_pool.wakes_empty, 1, memory_order_relaxed);
            }
            if (slept && ran > 0) {
                atomic_store_explicit(&fo_pool.last_wake_aside, 0, memory_order_relaxed);
                if (woke >= pub) fo_filter_store(&fo_pool.sleep_wake_ns, woke - pub);
            }
        }
    }
    return NULL;
}

/* Start workers until there are `n` (under `master`).  Returns how many there are. */
static int fo_ensure_workers(int n) {
    if (n > FO_MAX_WORKERS) n = FO_MAX_WORKERS;
    while (fo_pool.nworkers < n) {
        pthread_t tid;
        pthread_attr_t attr;
        int rc;
        fo_worker_arg_t *arg = (fo_worker_arg_t *)malloc(sizeof *arg);
        if (arg == NULL) break;
        arg->id = fo_pool.nworkers + 1;
        arg->seen = atomic_load(&fo_pool.gen);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&tid, &attr, fo_worker_main, arg);
        pthread_attr_destroy(&attr);
        if (rc != 0) { free(arg); break; }
        fo_pool.nworkers++;
    }
    return fo_pool.nworkers;
}

static void fo_reset(void) {
    /* Also the child-after-fork handler: only the forking thread exists. */
    pthread_mutex_init(&fo_pool.lock, NULL);
    pthread_mutex_init(&fo_pool.master, NULL);
    pthread_cond_init(&fo_pool.wake, NULL);
    pthread_cond_init(&fo_pool.finished, NULL);
    for (int k = 0; k <= FO_MAX_WORKERS; k++) {
        atomic_store(&fo_ranges[k].next, (uint64_t)FO_CLOSED);
        atomic_store(&fo_ranges[k].end, 0);
    }
    atomic_store(&fo_pool.nranges, 0);
    atomic_store(&fo_pool.gen, 0);
    atomic_store(&fo_pool.sleeping, 0);
    atomic_store(&fo_pool.master_sleeping, 0);
    atomic_store(&fo_pool.want, 0);
    atomic_store(&fo_pool.done, 0);
    atomic_store(&fo_pool.ntasks, 0);
    atomic_store(&fo_pool.master_cpu, -1);
    atomic_store(&fo_pool.last_wake_aside, 0);
    fo_pool.next_gen = 0;
    fo_pool.nworkers = 0;
}

static void fo_atfork_prepare(void) { pthread_mutex_lock(&fo_pool.master); }
static void fo_atfork_parent(void) { pthread_mutex_unlock(&fo_pool.master); }
static void fo_backend_after_fork(void);
static void fo_atfork_child(void) {
    fo_reset();
    fo_backend_after_fork();
    atomic_fetch_add(&fo_pool.forks, 1);
}

static void fo_pool_init(long spin_ns) {
    if (fo_pool_ready) return;
    memset(&fo_pool, 0, sizeof fo_pool);
    fo_reset();
    atomic_store(&fo_pool.spin_ns, spin_ns);
    pthread_atfork(fo_atfork_prepare, fo_atfork_parent, fo_atfork_child);
    fo_pool_ready = 1;
}

/* Run fn(ctx, 0..ntasks-1) on up to nthreads threads (the caller included) and return when
 * all are done.  once=1 (gang mode, for jobs that wait on each other): every task gets a
 * thread of its own, all running at once; needs nthreads >= ntasks.  Returns 0, or -1 when
 * gang mode cannot get enough threads (nothing was run). */
static int fo_run_job(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads, int once) {
    uint32_t g;
    int workers;
    long start, last, wait_ns;
    unsigned i;
    if (ntasks <= 0) return 0;
    if (!once && (nthreads <= 1 || ntasks == 1 || ntasks >= (Py_ssize_t)FO_CLOSED)) goto serial;
    if (once) {
        pthread_mutex_lock(&fo_pool.master);
    } else if (pthread_mutex_trylock(&fo_pool.master) != 0) {
        atomic_fetch_add_explicit(&fo_pool.serial_busy, 1, memory_order_relaxed);
        goto serial;
    }
    workers = fo_ensure_workers(nthreads - 1);
    if (once && workers + 1 < ntasks) {
        pthread_mutex_unlock(&fo_pool.master);
        return -1;
    }
    if (workers > nthreads - 1) workers = nthreads - 1;
    if (workers < 1) {
        pthread_mutex_unlock(&fo_pool.master);
        goto serial;
    }
    if (workers > ntasks - 1) workers = (int)(ntasks - 1);   /* gang mode: one task each */
    if (!once && (atomic_load_explicit(&fo_pool.small_forced, memory_order_relaxed)
                  || (fo_small_job(fn, ntasks, workers)
                      && ++fo_pool.small_streak % FO_SMALL_RESAMPLE != 0))) {
        start = fo_now_ns();
        atomic_store_explicit(&fo_pool.master_cpu, fo_cpu(), memory_order_relaxed);
        if (FO_TRACING()) {   /* the records of a job, all on the caller's slot */
            g = ++fo_pool.next_gen;
            if (g == 0) g = ++fo_pool.next_gen;
            fo_trace(g, 0, -1, start, fo_thread_cpu_ns());
            for (Py_ssize_t t = 0; t < ntasks; t++) {
                long t0 = fo_now_ns();
                fn(ctx, t);
                fo_trace(g, 0, t, t0, fo_now_ns());
            }
            last = fo_now_ns();
            fo_trace(g, 0, -2, last, fo_thread_cpu_ns());
        } else {
            for (Py_ssize_t t = 0; t < ntasks; t++) fn(ctx, t);
            last = fo_now_ns();
        }
        fo_filter_store(&fo_est_of(fn)->task_ns, (last - start) / (long)ntasks);
        fo_pool.last_return_ns = last;
        atomic_fetch_add_explicit(&fo_pool.serial_small, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&fo_pool.jobs, 1, memory_order_relaxed);   /* a job, */
        atomic_fetch_add_explicit(&fo_pool.tasks_master, (uint64_t)ntasks,    /* all ours */
                                  memory_order_relaxed);
        pthread_mutex_unlock(&fo_pool.master);
        return 0;
    }
    g = ++fo_pool.next_gen;
    if (g == 0) g = ++fo_pool.next_gen;      /* 0 is "no job yet" */
    /* Close the ranges first (a stale claim on them fails: their generation changed), then
     * write the job, then open them. */
    for (i = 0; i <= (unsigned)workers; i++)
        atomic_store(&fo_ranges[i].next, ((uint64_t)g << 32) | FO_CLOSED);
    atomic_store(&fo_pool.fn, fn);
    atomic_store(&fo_pool.ctx, ctx);
    atomic_store(&fo_pool.ntasks, (int64_t)ntasks);
    atomic_store(&fo_pool.done, 0);
    atomic_store(&fo_pool.want, workers);
    atomic_store(&fo_pool.nranges, workers + 1);
    atomic_store(&fo_pool.once, once);
    for (i = 0; i <= (unsigned)workers; i++) {
        Py_ssize_t lo = (Py_ssize_t)i * ntasks / (workers + 1);
        Py_ssize_t hi = (Py_ssize_t)(i + 1) * ntasks / (workers + 1);
        atomic_store(&fo_ranges[i].end, (uint32_t)hi);
        atomic_store(&fo_ranges[i].next, ((uint64_t)g << 32) | (uint64_t)lo);
    }
    atomic_store_explicit(&fo_pool.master_cpu, fo_cpu(), memory_order_relaxed);
    start = fo_now_ns();
    atomic_store_explicit(&fo_pool.published_ns, start, memory_order_relaxed);
    if (FO_TRACING()) fo_trace(g, 0, -1, start, fo_thread_cpu_ns());
    atomic_store(&fo_pool.gen, g);
    if (atomic_load(&fo_pool.sleeping) > 0) {
        pthread_mutex_lock(&fo_pool.lock);
        pthread_cond_broadcast(&fo_pool.wake);
        pthread_mutex_unlock(&fo_pool.lock);
        fo_filter_store(&fo_pool.broadcast_ns, fo_now_ns() - start);
    }
    atomic_fetch_add_explicit(&fo_pool.jobs, 1, memory_order_relaxed);
    {
        long c0 = fo_now_ns();
        int64_t ran = fo_claim(g, 0, once);
        if (ran > 0 && !once)
            fo_filter_store(&fo_est_of(fn)->task_ns, (fo_now_ns() - c0) / (long)ran);
        atomic_fetch_add_explicit(&fo_pool.tasks_master, (uint64_t)ran, memory_order_relaxed);
    }
    /* Wait for the tasks other threads hold: spin (fo_master_wait_ns), then sleep. */
    start = last = fo_now_ns();
    i = 0;
    wait_ns = fo_master_wait_ns(fn);
    while (atomic_load(&fo_pool.done) < (int64_t)ntasks) {
        if (fo_keep_waiting(start, &i, wait_ns, &last, 0))
            continue;
        atomic_fetch_add_explicit(&fo_pool.master_sleeps, 1, memory_order_relaxed);
        pthread_mutex_lock(&fo_pool.lock);
        atomic_store(&fo_pool.master_sleeping, 1);
        while (atomic_load(&fo_pool.done) < (int64_t)ntasks)
            pthread_cond_wait(&fo_pool.finished, &fo_pool.lock);
        atomic_store(&fo_pool.master_sleeping, 0);
        pthread_mutex_unlock(&fo_pool.lock);
    }
    start = fo_now_ns();
    atomic_store_explicit(&fo_pool.last_job_ns,
                          start - atomic_load_explicit(&fo_pool.published_ns, memory_order_relaxed),
                          memory_order_relaxed);
    fo_pool.last_return_ns = start;
    if (FO_TRACING()) fo_trace(g, 0, -2, start, fo_thread_cpu_ns());
    pthread_mutex_unlock(&fo_pool.master);
    return 0;
serial:
    for (Py_ssize_t t = 0; t < ntasks; t++) fn(ctx, t);
    return 0;
}

static void fo_pool_run(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
    fo_run_job(fn, ctx, ntasks, nthreads, 0);
}

/* ------------------------------------------------------------------ OpenBLAS jobs (opt-in)
 *
 * OpenBLAS (>= 0.3.27) can hand its parallel jobs to a caller's function
 * (openblas_set_threads_callback_function).  OpenBLAS then calls dojob(cpu, &queue[i], data)
 * for each job i, and dojob (its exec_threads) uses two per-`cpu` globals: the mailbox
 * thread_status[cpu] (set to 1 while the job runs, 0 after) and the work buffer
 * blas_thread_buffer[cpu].  OpenBLAS's own workers use the same globals: worker k (k <
 * blas_num_threads - 1) waits on mailbox k and packs into buffer k.
 *
 * Why the callback is never removed: exec_blas reads the callback pointer once per call, with
 * no lock.  Switching the pointer while other threads multiply leaves calls of both kinds in
 * flight, and a callback job given cpu = k erases mailbox k of a native job waiting there
 * (the worker never runs it; the GEMM's other positions wait for it for ever: NumPy hung)
 * or shares buffer k with it (a wrong product).  Nothing outside OpenBLAS can see when no
 * native job is in flight, so no switch of the pointer is safe.  Instead the pointer is set
 * once, to a callback that never touches a native worker's mailbox or buffer, and sharing
 * is a flag the callback reads:
 *  - native (after restore, and for a library never shared): the callback does what
 *    OpenBLAS's exec_blas does without a callback.  exec_blas_async(1, &queue[1]) queues jobs
 *    1.. on OpenBLAS's own workers (its lock, its free-mailbox search), the caller runs job 0
 *    with cpu = MAX_CPU_NUMBER - 1 (a mailbox no worker has, since there are at most
 *    MAX_CPU_NUMBER - 1 workers; job 0 brings its own buffers), exec_blas_async_wait waits.
 *  - shared: the jobs run on fastopt's pool, all at once (gang mode: GEMM jobs wait on each
 *    other), with cpu = MAX_CPU_NUMBER - 2 - i: above every native worker's index (checked
 *    at each call against blas_num_threads; when there is no room the call runs natively).
 *    Shared calls are serialized by the pool's master lock, as they share those slots.
 * Either way a job runs the same routine on the same partition: the same bits.
 */
typedef void (*fo_dojob_t)(int thread_num, void *jobdata, int dojob_data);
typedef void (*fo_blas_cb_t)(int sync, fo_dojob_t dojob, int numjobs, size_t elsize,
                             void *jobdata, int dojob_data);
typedef void (*fo_blas_setter_t)(fo_blas_cb_t callback);
typedef int (*fo_blas_async_t)(long pos, void *queue);      /* exec_blas_async(BLASLONG, ...) */
typedef int (*fo_blas_wait_t)(long num, void *queue);       /* exec_blas_async_wait */

#define FO_BLAS_MAX_LIBS 8

typedef struct {
    fo_blas_async_t exec_async;
    fo_blas_wait_t exec_wait;
    const int *num_threads;      /* the library's blas_num_threads (workers + 1) */
    int max_cpu;                 /* its MAX_CPU_NUMBER (the size of its per-cpu arrays) */
    _Atomic int shared;          /* 1: run its jobs on fastopt's pool */
    _Atomic uint64_t calls_shared, calls_native;   /* for tests */
} fo_blas_lib_t;

static fo_blas_lib_t fo_blas_libs[FO_BLAS_MAX_LIBS];
static int fo_blas_nlibs = 0;   /* under the GIL */

typedef struct { fo_dojob_t dojob; char *data; size_t elsize; int dojob_data; int top; } fo_blas_job_t;

/* x86: a job must not leave its MXCSR behind in the thread that ran it (OpenBLAS builds with
 * CONSISTENT_FPCSR load one from the job, which the callback path never fills in). */
#if defined(__x86_64__) || defined(__i386__)
#define FO_SAVE_FPCSR unsigned int fo_csr = _mm_getcsr()
#define FO_RESTORE_FPCSR _mm_setcsr(fo_csr)
#else
#define FO_SAVE_FPCSR
#define FO_RESTORE_FPCSR
#endif

static void fo_blas_task(void *ctx, Py_ssize_t i) {
    fo_blas_job_t *j = (fo_blas_job_t *)ctx;
    FO_SAVE_FPCSR;
    j->dojob(j->top - (int)i, j->data + (size_t)i * j->elsize, j->dojob_data);
    FO_RESTORE_FPCSR;
}

static void fo_blas_run(fo_blas_lib_t *lib, int sync, fo_dojob_t dojob, int numjobs, size_t elsize,
                        void *jobdata, int dojob_data) {
    fo_blas_job_t job;
    char *queue = (char *)jobdata;
    (void)sync;
    if (numjobs <= 0) return;
    job.dojob = dojob; job.data = queue; job.elsize = elsize; job.dojob_data = dojob_data;
    if (atomic_load(&lib->shared) && numjobs > 1
            && lib->max_cpu - 1 - numjobs >= *lib->num_threads - 1) {
        job.top = lib->max_cpu - 2;
        if (fo_run_job(fo_blas_task, &job, numjobs, numjobs, 1) == 0) {
            atomic_fetch_add_explicit(&lib->calls_shared, 1, memory_order_relaxed);
            return;
        }
    }
    /* OpenBLAS's own path (exec_blas without a callback). */
    atomic_fetch_add_explicit(&lib->calls_native, 1, memory_order_relaxed);
    job.top = lib->max_cpu - 1;
    if (numjobs > 1) lib->exec_async(1, queue + elsize);
    fo_blas_task(&job, 0);
    if (numjobs > 1) lib->exec_wait(numjobs - 1, queue + elsize);
}

/* One callback per library slot (the callback is not told which library calls it). */
#define FO_BLAS_CB(k) \
    static void fo_blas_cb##k(int sync, fo_dojob_t dojob, int numjobs, size_t elsize, \
                              void *jobdata, int dojob_data) { \
        fo_blas_run(&fo_blas_libs[k], sync, dojob, numjobs, elsize, jobdata, dojob_data); \
    }
FO_BLAS_CB(0) FO_BLAS_CB(1) FO_BLAS_CB(2) FO_BLAS_CB(3)
FO_BLAS_CB(4) FO_BLAS_CB(5) FO_BLAS_CB(6) FO_BLAS_CB(7)
static const fo_blas_cb_t fo_blas_cbs[FO_BLAS_MAX_LIBS] = {
    fo_blas_cb0, fo_blas_cb1, fo_blas_cb2, fo_blas_cb3,
    fo_blas_cb4, fo_blas_cb5, fo_blas_cb6, fo_blas_cb7};

/* Take over one library's jobs, for good, in native mode (the addresses come from the
 * library itself).  Returns its slot, or -1 when every slot is taken. */
static int fo_blas_register(size_t setter, size_t exec_async, size_t exec_wait,
                            size_t num_threads, int max_cpu) {
    int k = fo_blas_nlibs;
    if (k >= FO_BLAS_MAX_LIBS) return -1;
    fo_blas_libs[k].exec_async = (fo_blas_async_t)exec_async;
    fo_blas_libs[k].exec_wait = (fo_blas_wait_t)exec_wait;
    fo_blas_libs[k].num_threads = (const int *)num_threads;
    fo_blas_libs[k].max_cpu = max_cpu;
    atomic_store(&fo_blas_libs[k].shared, 0);
    fo_blas_nlibs = k + 1;
    atomic_thread_fence(memory_order_release);   /* the slot is complete before OpenBLAS sees it */
    ((fo_blas_setter_t)setter)(fo_blas_cbs[k]);
    return k;
}

static void fo_blas_set_shared(int k, int on) {
    if (k >= 0 && k < fo_blas_nlibs) atomic_store(&fo_blas_libs[k].shared, on ? 1 : 0);
}

/* Calls of library k run on fastopt's pool (shared = 1) or on OpenBLAS's workers (0). */
static unsigned long long fo_blas_calls(int k, int shared) {
    if (k < 0 || k >= fo_blas_nlibs) return 0;
    return shared ? atomic_load(&fo_blas_libs[k].calls_shared)
                  : atomic_load(&fo_blas_libs[k].calls_native);
}

#endif /* pthreads */
/* ------------------------------------------------------------------ the OpenMP backend
 *
 * FASTOPT_THREADING=openmp (fastopt.runtime.threads.set_backend("openmp")): the same tasks in
 * a static-schedule OpenMP parallel region, thread k of the team taking the k-th run of
 * ntasks / nthreads consecutive tasks, as the kernels did before the pool.  Kept to compare
 * against and for dedicated, pinned machines.  Its caveats, which the pool has not:
 *  - the region ends at a barrier: one descheduled team thread (another process on the
 *    cores) holds every call up for a scheduler time slice;
 *  - GNU libgomp's team threads do not exist in a child forked after the parent ran a
 *    region, and its next region waits for them for ever: in such a child this backend
 *    falls back to the pool (fo_backend_after_fork);
 *  - libgomp's idle team threads spin (OMP_WAIT_POLICY, GOMP_SPINCOUNT) on cores that
 *    NumPy's BLAS threads may want.
 * Which thread computes a task never changes its result: both backends give the same bits.
 */
#define FO_BACKEND_POOL 0
#define FO_BACKEND_OPENMP 1

#if defined(__GNUC__) || defined(__clang__)
#define FO_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define FO_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#else
#define FO_LOAD(x) (*(volatile int *)&(x))
#define FO_STORE(x, v) (*(volatile int *)&(x) = (v))
#endif

static int fo_backend = FO_BACKEND_POOL;            /* read once per call */
static int fo_omp_used = 0;                         /* an OpenMP region ran in this process */
static unsigned long long fo_omp_fork_fallbacks = 0;/* forked children moved to the pool */

#ifdef _OPENMP
#include <omp.h>
#define FO_HAVE_OPENMP_BACKEND 1
static uint32_t fo_omp_jobs = 0;   /* regions run (the job number in traces) */
static void fo_omp_run(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
    Py_ssize_t t;
    int nt = (Py_ssize_t)nthreads < ntasks ? nthreads : (int)ntasks;
    FO_STORE(fo_omp_used, 1);
    if (FO_TRACING()) {   /* the same records as the pool's, without wake-ups */
        uint32_t job = ++fo_omp_jobs;
        int64_t t0 = FO_TRACE_NOW();
        fo_trace(job, 0, -1, t0, fo_thread_cpu_ns());
        #pragma omp parallel for schedule(static) num_threads(nt)
        for (t = 0; t < ntasks; t++) {
            int64_t s = FO_TRACE_NOW();
            fn(ctx, t);
            fo_trace(job, omp_get_thread_num(), t, s, FO_TRACE_NOW());
        }
        t0 = FO_TRACE_NOW();
        fo_trace(job, 0, -2, t0, fo_thread_cpu_ns());
        return;
    }
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (t = 0; t < ntasks; t++) fn(ctx, t);
}
#else
#define FO_HAVE_OPENMP_BACKEND 0
static void fo_omp_run(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
    fo_pool_run(fn, ctx, ntasks, nthreads);
}
#endif

static void fo_backend_after_fork(void) {
    if (FO_LOAD(fo_omp_used) && FO_LOAD(fo_backend) == FO_BACKEND_OPENMP) {
        FO_STORE(fo_backend, FO_BACKEND_POOL);
        fo_omp_fork_fallbacks++;
    }
}

/* The kernels' parallel-for (the capsule fastopt._threadpool.runner). */
static void fo_run_tasks(fo_task_fn fn, void *ctx, Py_ssize_t ntasks, int nthreads) {
    if (nthreads > 1 && ntasks > 1
            && FO_LOAD(fo_backend) == FO_BACKEND_OPENMP) {
        fo_omp_run(fn, ctx, ntasks, nthreads);
        return;
    }
    fo_pool_run(fn, ctx, ntasks, nthreads);
}

static int fo_set_backend(int b) {
    if (b == FO_BACKEND_OPENMP && !FO_HAVE_OPENMP_BACKEND) return -1;
    FO_STORE(fo_backend, b);
    return 0;
}

#endif
