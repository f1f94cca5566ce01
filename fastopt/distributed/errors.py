"""Faults across ranks: collective errors, abort on an uncaught exception, a watchdog for hangs.

A data-parallel job must never hang: when one rank fails, the others would otherwise wait
for ever in the next collective.  Three tools:

* :func:`raise_collectively`: every rank says whether it is fine; if any is not, **every**
  rank raises :class:`DistributedError` with the same message (the failing ranks' reasons).
* :func:`abort_on_exception`: an uncaught exception on any rank prints its traceback (with
  the rank) and calls ``comm.Abort(1)``, which ends every process of the job with a
  non-zero status (what ``python -m mpi4py script.py`` does).
* :class:`Watchdog`: a collective that has not finished after ``timeout`` seconds (another
  rank died, skipped a step, or is stuck) prints what it was waiting for and aborts.
  :meth:`Watchdog.guard` wraps a communicator so that every call through it is watched
  (how :class:`~fastopt.distributed.DataParallel` and the distributed checkpoints make
  every one of their collectives).
"""

import contextlib
import os
import sys
import threading
import time
import traceback

from ..kernels import _check
from ..kernels._attrs import Checked, checked, fixed
from ._mpi import require_mpi, world

__all__ = ["DistributedError", "raise_collectively", "abort_on_exception", "Watchdog", "GuardedComm"]


class DistributedError(RuntimeError):
    """The ranks of a job disagree (layout, hyperparameters, step count), or one of them failed.

    Raised on every rank at once, with the same message, so no rank is left waiting.
    """


def raise_collectively(comm, problem, what, exc=DistributedError):
    """Every rank passes ``problem`` (None, or a message); if any rank has one, all raise.

    The error lists each failing rank's message: ``exc(f"{what}: rank 1: ...; rank 2: ...")``.
    Collective: every rank of ``comm`` must call it.
    """
    problems = comm.allgather(problem)
    bad = [(r, p) for r, p in enumerate(problems) if p is not None]
    if bad:
        shown = "; ".join(f"rank {r}: {p}" for r, p in bad[:8])
        more = f"; and {len(bad) - 8} more ranks" if len(bad) > 8 else ""
        raise exc(f"{what}: {shown}{more}")


def _write_stderr(text):
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed stderr must not stop the abort
        try:
            os.write(2, text.encode(errors="replace"))
        except OSError:
            pass


def abort_on_exception(comm=None):
    """Make an uncaught exception on this rank abort the whole job (``comm.Abort(1)``).

    The previous ``sys.excepthook`` prints the traceback first, after a line naming the rank.
    Installing it twice is harmless; with a single process it changes nothing (there is no
    one to wait).  Returns True when the hook is installed.
    """
    comm = world(comm)
    if comm.Get_size() == 1:
        return False
    if getattr(sys.excepthook, "_fastopt_abort", False):
        return True
    previous = sys.excepthook
    rank = comm.Get_rank()

    def hook(exc_type, exc, tb):
        try:
            _write_stderr(f"fastopt.distributed: uncaught {exc_type.__name__} on rank {rank} "
                          f"of {comm.Get_size()}; aborting the job\n")
            previous(exc_type, exc, tb)
        finally:
            try:
                sys.stderr.flush()
            finally:
                comm.Abort(1)

    hook._fastopt_abort = True
    sys.excepthook = hook
    return True


def check_timeout(timeout, name="timeout"):
    """``timeout`` checked: None, or a finite number of seconds > 0 (a float).  Package-internal:
    Watchdog's, DataParallel's."""
    if timeout is None:
        return None
    return float(_check.positive(name, timeout))


class Watchdog(Checked):
    """Abort the job when a collective has not returned after ``timeout`` seconds.

    ``with watchdog("the gradient reduce-scatter of step 12"): comm.Reduce_scatter(...)``,
    or, so that no collective can escape it, :meth:`guard` a communicator: every call made
    through the returned :class:`GuardedComm` runs under the watchdog.  A daemon thread
    wakes up a few times per ``timeout``; it costs nothing while the collectives finish in
    time.  ``timeout=None`` disables it.  Guarded blocks nest (the inner one's deadline
    applies while it runs, then the outer one's again).
    """

    comm = fixed("comm", "The communicator whose job is aborted.", "build another Watchdog")
    timeout = checked("timeout", lambda name, value: check_timeout(value, name),
                      "Seconds a guarded collective may take (a number > 0), or None: never "
                      "abort.  May be set between collectives (checked as the constructor "
                      "checks it); the next collective gets the new limit.")

    def __init__(self, comm, timeout):
        self._comm = comm
        self._timeout = check_timeout(timeout)
        self._deadline = None
        self._what = ""
        self._next = ""
        self._outer = []
        self._thread = None

    def _start(self):
        self._thread = threading.Thread(target=self._run, name="fastopt-watchdog", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            # (the timeout may be set between collectives: read it on every round)
            timeout = self._timeout
            time.sleep(min(1.0, timeout / 4) if timeout is not None else 1.0)
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                timeout = self._timeout
                rank, size = self._comm.Get_rank(), self._comm.Get_size()
                what = self._what
                if isinstance(what, tuple):     # (what, call) from a GuardedComm
                    what = f"{what[0]} ({what[1]})" if what[0] else what[1]
                _write_stderr(
                    f"fastopt.distributed: rank {rank} of {size} waited more than "
                    + (f"{timeout:g} s" if timeout is not None else "its time limit")
                    + f" in {what}; another rank has not reached it "
                    "(it died, skipped a step, or is stuck). Aborting the job.\n")
                self._comm.Abort(1)
                return

    def __call__(self, what):
        self._next = what
        return self

    def __enter__(self):
        self._arm(self._next)
        return self

    def __exit__(self, *exc):
        self._disarm()
        return False

    def _arm(self, what):
        """A collective described by ``what`` starts: it must end within ``timeout``."""
        self._outer.append((self._deadline, self._what))
        self._what = what
        timeout = self._timeout
        if timeout is not None:
            if self._thread is None:
                self._start()
            self._deadline = time.monotonic() + timeout

    def _disarm(self):
        """It ended: the enclosing block's deadline (if any) applies again."""
        self._deadline, self._what = self._outer.pop()

    def guard(self, comm, what=""):
        """``comm`` with every call made through it under this watchdog (a :class:`GuardedComm`)."""
        return GuardedComm(comm, self, what)


class GuardedComm(Checked):
    """A communicator whose every method call runs under a :class:`Watchdog`.

    Attributes and methods are the wrapped communicator's; a call that returns a new
    communicator (``Split_type``, ``Dup``, ...) returns it guarded too.  ``with
    comm.during("average_buffers"):`` names what the calls inside are doing, for the
    message the watchdog prints before it aborts.  ``unguarded`` and ``watchdog`` cannot be
    set, nor any name the class does not declare (AttributeError; the communicator's own
    attributes are set on ``unguarded``).
    """

    unguarded = fixed("unguarded", "The wrapped communicator.", "build another GuardedComm")
    watchdog = fixed("watchdog", "The Watchdog every call runs under (its ``timeout`` may be "
                     "set).", "build another GuardedComm")

    def __init__(self, comm, watchdog, what=""):
        if isinstance(comm, GuardedComm):
            comm = comm.unguarded
        self._unguarded = comm
        self._watchdog = watchdog
        self._what = what
        self._comm_type = require_mpi().Comm

    @contextlib.contextmanager
    def during(self, what):
        """Calls inside the block are described as ``what`` (after the enclosing block's
        description: ``"save_checkpoint: state_dict"``)."""
        outer = self._what
        self._what = f"{outer}: {what}" if outer else what
        try:
            yield self
        finally:
            self._what = outer

    def __getattr__(self, name):
        attr = getattr(self.unguarded, name)
        if not callable(attr):
            return attr
        watchdog, comm_type = self.watchdog, self._comm_type

        def call(*args, **kwargs):
            watchdog._arm((self._what, name))    # (the message is formatted only if it fires)
            try:
                out = attr(*args, **kwargs)
            finally:
                watchdog._disarm()
            return GuardedComm(out, watchdog, self._what) if isinstance(out, comm_type) else out

        self.__dict__[name] = call       # the next lookups find it without __getattr__
        return call

    def __repr__(self):
        return f"GuardedComm({self.unguarded!r}, timeout={self.watchdog.timeout})"
