"""The timing policies of the benchmark, and whether their figures can be trusted.

Every figure ``fastopt bench`` prints comes from one of three policies:

* :func:`each_apart`: each callable alone, a warm-up, then the median of ``reps`` calls
  (the kernel rows: fastopt, the NumPy reference, the roofline pass, PyTorch);
* :func:`round_robin`: the callables take turns, one call each per round, so that a
  machine that drifts (another job starts, the clock changes) hits every one alike; the
  median of each one's ``reps`` calls (lists against FlatParams, clipping, state formats,
  scikit-learn fits); a ratio of two of them (the state rows' "vs torch", pool/openmp) is
  the median of the per-round ratios (:func:`paired_ratio`);
* :func:`side_by_side`: ``nproc`` processes running the same step at the same time, the
  median step time of each (the under-load table).

A callable from another runtime (PyTorch, bitsandbytes: their own OpenMP workers) is
followed by a pause (``settle``) so that its spinning workers go idle before the next
fastopt measurement.

Whether the figures can be trusted (as pyperf does): the samples of one measurement must
agree (:func:`unstable`: their relative standard deviation above :data:`MAX_SPREAD`), and the
machine must not be busy with other work (:func:`busy`: the load average before and after
the run, against the cores the benchmark leaves free).
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

#: Samples whose standard deviation exceeds this fraction of their mean disagree (pyperf
#: warns at the same 10%).
MAX_SPREAD = 0.10

#: The load average may exceed the cores the benchmark leaves free by this much (other
#: processes using half a core) before the machine counts as busy.
LOAD_SLACK = 0.5

#: Seconds to pause after a callable of another runtime (its OpenMP workers spin, then sleep).
SETTLE = 0.1


@dataclass(frozen=True)
class Samples:
    """The times (seconds) of the repeated calls of one measurement."""

    times: tuple

    @property
    def median(self):
        return float(np.median(self.times))

    @property
    def spread(self):
        """Relative standard deviation of the samples (0 for fewer than two)."""
        t = np.asarray(self.times, dtype=float)
        if t.size < 2 or not t.mean() > 0:
            return 0.0
        return float(t.std(ddof=1) / t.mean())

    def scaled(self, factor):
        """The same samples times ``factor`` (per-step time of a loop of steps)."""
        return Samples(tuple(x * factor for x in self.times))


def paired_ratio(num, den):
    """The median over rounds of ``num``'s time / ``den``'s time in the same round: the ratio of
    two :class:`Samples` measured by :func:`round_robin` (the same number of rounds).  A load
    that comes and goes slows both calls of a round alike, so the per-round ratios agree
    better than the ratio of the two medians (which pairs one call's quiet round with the
    other's busy one)."""
    a, b = np.asarray(num.times, dtype=float), np.asarray(den.times, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_ratio needs samples of the same rounds, got {a.size} and "
                         f"{b.size} times")
    return float(np.median(a / b))


def unstable(samples, bound=MAX_SPREAD):
    """Names of the measurements in ``samples`` (name -> :class:`Samples`) whose samples
    disagree: relative standard deviation above ``bound``."""
    return sorted(k for k, s in samples.items() if s.spread > bound)


def _time_once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def each_apart(fn, reps, warmup=2, settle=0.0):
    """``warmup`` calls, then ``reps`` timed calls of ``fn`` alone; a pause of ``settle``
    seconds after them."""
    for _ in range(warmup):
        fn()
    samples = Samples(tuple(_time_once(fn) for _ in range(reps)))
    if settle:
        time.sleep(settle)
    return samples


def round_robin(calls, reps, warmup=1, settle=(), between=None):
    """The callables ``calls`` (name -> callable) in turn, ``reps`` rounds after ``warmup``
    rounds; ``settle``: names followed by a pause of :data:`SETTLE`; ``between``: called
    after every call, untimed (e.g. to restore a gradient a call scaled).  Returns name ->
    :class:`Samples`."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
            if between is not None:
                between()
    times = {k: [] for k in calls}
    for _ in range(reps):
        for k, fn in calls.items():
            times[k].append(_time_once(fn))
            if between is not None:
                between()
            if k in settle:
                time.sleep(SETTLE)
    return {k: Samples(tuple(v)) for k, v in times.items()}


def side_by_side(worker_code, nproc, seconds, env=None):
    """Run ``nproc`` copies of the Python program ``worker_code`` at once; each prints
    ``ready`` once warmed up, waits for a line on stdin, times its step for ``seconds``
    and prints the list of its step times as JSON.  Returns one :class:`Samples` per process.
    """
    procs = [subprocess.Popen([sys.executable, "-c", worker_code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(nproc)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a side-by-side bench worker failed to start")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return [Samples(tuple(json.loads(p.communicate(timeout=120 + 10 * seconds)[0])))
                for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def timed_for(step, seconds, at_least=5):
    """Times of calls of ``step`` for ``seconds`` (and at least ``at_least`` calls): the worker
    side of :func:`side_by_side`."""
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < at_least:
        times.append(_time_once(step))
    return times


# ------------------------------------------------------------------ a busy machine

@dataclass
class Load:
    """The 1-minute load average before and after the measurements, and the cores."""

    cores: int
    threads: int
    before: float | None = None
    after: float | None = None

    @classmethod
    def start(cls, threads):
        """Read the load average now (before the run)."""
        load = cls(cores=available_cores(), threads=threads)
        load.before = load_average()
        return load

    def stop(self):
        """Read the load average now (after the measurements)."""
        self.after = load_average()
        return self


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average():
    """The 1-minute load average, or None where the system has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def busy(load, slack=LOAD_SLACK):
    """Why the machine was too busy for the figures to be trusted (a string), or None.

    Before the run, the load average is the other processes' alone; after it, it also holds
    the benchmark's own threads (at most ``threads`` runnable).  The machine is busy when the
    others need more than the cores the benchmark leaves free plus ``slack``:
    ``before > cores - threads + slack`` or ``after - threads > cores - threads + slack``.
    """
    free = max(load.cores - load.threads, 0) + slack
    readings = [(when, value, value - own) for when, value, own in
                (("before", load.before, 0), ("after", load.after, load.threads))
                if value is not None]
    if not any(others > free for _, _, others in readings):
        return None
    shown = ", ".join(f"{value:.2f} {when}" for when, value, _ in readings)
    return (f"the machine is busy: load average {shown} the run, on {load.cores} cores with "
            f"{load.threads} benchmark threads (other work needs more than the "
            f"{max(load.cores - load.threads, 0)} cores the benchmark leaves free)")
