"""The multi-tensor plan, compiled once (not per instruction-set level).

A :class:`MultiTensor` lays out lists of same-dtype arrays for one kernel call per step: the
chunk table (which piece of which array each parallel task updates, ``_table.pxi``), each
tensor's hyperparameter group, the pointers of every buffer, and the aliasing guard for the
gradients bound each step.  Nothing in it depends on the instruction set, so it lives here,
and the kernels of every level (``fastopt._ext.<level>._optim``, ``._lowbit``) take its
:meth:`MultiTensor.table_capsule`: ``fastopt.set_isa`` swaps the kernels under a plan that
was built before.
"""

from libc.stdlib cimport malloc, free

from cpython.pycapsule cimport PyCapsule_New
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
cimport numpy as cnp

cnp.import_array()

include "_table.pxi"

#: Elements from which a kernel call runs on several threads (``_table.pxi``'s PARALLEL_MIN).
PARALLEL_MIN_ELEMENTS = PARALLEL_MIN


cdef inline char* _data(object a) noexcept:
    return <char*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t _size(object a) noexcept:
    return cnp.PyArray_SIZE(<cnp.ndarray>a)


cdef class MultiTensor:
    """Lists of same-dtype arrays laid out for one kernel call per step.

    ``buffers`` is a list of rows, one per kernel buffer in the kernel's argument order
    (param, grad, state...); each row is a list with one array per tensor, or None for
    the grad row, bound each step with :meth:`bind_grads`.  ``guard`` lists the arrays a
    gradient must not share memory with (default: every array of ``buffers``).  ``groups``
    gives each tensor's hyperparameter set (0, 1, ...: the index into the list of
    hyperparameters the ``*_multi`` call takes); None: one set for all.  The chunk plan (which piece
    of which array each task updates) is built here, once.  The arrays are trusted: the
    caller has checked them (C-contiguous, aligned, writable where updated, disjoint, one
    dtype, matching shapes).  The object holds references to them.
    """

    cdef readonly Py_ssize_t ntensors, total, ntasks, nchunks
    cdef readonly bint f64
    cdef int nbufs, type_num
    cdef char** ptr
    cdef Py_ssize_t* first
    cdef Py_ssize_t* ctensor
    cdef Py_ssize_t* coffset
    cdef Py_ssize_t* clength
    cdef int* tgroup
    cdef readonly int ngroups
    cdef list rows
    cdef list params
    cdef list last_grads     # the gradients bound last (identity fast path)
    cdef PlanView view       # what the kernels read (table_capsule)
    cdef readonly object capsule
    # sorted [lo, hi) byte spans of every array except the grads, for the aliasing check
    cdef Py_ssize_t nspans
    cdef size_t* span_lo
    cdef size_t* span_hi

    def __cinit__(self, list buffers, list guard=None, groups=None):
        cdef Py_ssize_t t, k, c, n, off, ln, acc
        cdef list params = buffers[0]
        self.ntensors = len(params)
        self.nbufs = len(buffers)
        self.rows = [list(r) if r is not None else None for r in buffers]
        self.params = list(params)
        self.last_grads = [None] * len(params)
        self.type_num = cnp.NPY_FLOAT
        if self.ntensors:
            self.type_num = cnp.PyArray_TYPE(<cnp.ndarray>params[0])
        self.f64 = self.type_num == cnp.NPY_DOUBLE
        self.ptr = <char**>malloc(max(1, self.nbufs * self.ntensors) * sizeof(char*))
        if self.ptr == NULL:
            raise MemoryError()
        for k in range(self.nbufs):
            if buffers[k] is not None:
                for t in range(self.ntensors):
                    self.ptr[k * self.ntensors + t] = _data(buffers[k][t])
        # chunks: each tensor cut into pieces of at most BLOCK elements
        self.nchunks = 0
        self.total = 0
        for t in range(self.ntensors):
            n = _size(params[t])
            self.total += n
            self.nchunks += (n + BLOCK - 1) // BLOCK
        self.ctensor = <Py_ssize_t*>malloc(max(1, self.nchunks) * 3 * sizeof(Py_ssize_t))
        self.first = <Py_ssize_t*>malloc((self.nchunks + 1) * sizeof(Py_ssize_t))
        if self.ctensor == NULL or self.first == NULL:
            raise MemoryError()
        self.coffset = self.ctensor + self.nchunks
        self.clength = self.coffset + self.nchunks
        c = 0
        for t in range(self.ntensors):
            n = _size(params[t])
            off = 0
            while off < n:
                ln = n - off if n - off < BLOCK else BLOCK
                self.ctensor[c] = t
                self.coffset[c] = off
                self.clength[c] = ln
                c += 1
                off += ln
        # tasks: consecutive chunks grouped while they total at most BLOCK elements
        self.ntasks = 0
        acc = BLOCK
        for c in range(self.nchunks):
            if acc + self.clength[c] > BLOCK:
                self.first[self.ntasks] = c
                self.ntasks += 1
                acc = 0
            acc += self.clength[c]
        self.first[self.ntasks] = self.nchunks
        if guard is None:
            guard = [a for k in range(self.nbufs) if k != 1 and buffers[k] is not None
                     for a in buffers[k]]
        self._spans(guard)
        self.ngroups = 1
        if groups is not None:
            if len(groups) != self.ntensors:
                raise ValueError("groups needs one entry per tensor")
            self.tgroup = <int*>malloc(max(1, self.ntensors) * sizeof(int))
            if self.tgroup == NULL:
                raise MemoryError()
            for t in range(self.ntensors):
                if groups[t] < 0:
                    raise ValueError("group indices must be >= 0")
                self.tgroup[t] = groups[t]
                self.ngroups = max(self.ngroups, groups[t] + 1)
        self.view.T.ptr = self.ptr
        self.view.T.ntensors = self.ntensors
        self.view.T.n = self.total
        self.view.T.first = self.first
        self.view.T.ctensor = self.ctensor
        self.view.T.coffset = self.coffset
        self.view.T.clength = self.clength
        self.view.T.tgroup = self.tgroup
        self.view.T.hyper = NULL
        self.view.ntasks = self.ntasks
        self.view.ngroups = self.ngroups
        self.view.type_num = self.type_num
        self.capsule = PyCapsule_New(&self.view, b"fastopt.Table", NULL)

    def _spans(self, list arrays):
        cdef list spans = []
        cdef object a
        cdef size_t lo
        for a in arrays:
            if _size(a):
                lo = <size_t>_data(a)
                spans.append((lo, lo + <size_t>cnp.PyArray_NBYTES(<cnp.ndarray>a)))
        spans.sort()
        self.nspans = len(spans)
        self.span_lo = <size_t*>malloc(max(1, self.nspans) * 2 * sizeof(size_t))
        if self.span_lo == NULL:
            raise MemoryError()
        self.span_hi = self.span_lo + self.nspans
        for i, (lo_, hi_) in enumerate(spans):
            self.span_lo[i] = lo_
            self.span_hi[i] = hi_

    def __dealloc__(self):
        free(self.ptr)
        free(self.ctensor)
        free(self.first)
        free(self.span_lo)
        free(self.tgroup)

    cdef bint _overlaps(self, size_t lo, size_t hi) noexcept:
        # the last span starting before hi must end at or before lo
        cdef Py_ssize_t a = 0, b = self.nspans, m
        while a < b:
            m = (a + b) // 2
            if self.span_lo[m] < hi:
                a = m + 1
            else:
                b = m
        return a > 0 and self.span_hi[a - 1] > lo

    def bind_grads(self, grads):
        """Point the grad row at ``grads`` (a list or tuple, one array per tensor).

        Returns -1 when every gradient passes the fast checks (a plain ndarray of the
        parameters' dtype, native byte order, the parameter's shape, C-contiguous,
        aligned, no memory shared with a parameter or a state buffer) and every
        parameter (with its dtype) and state buffer is still writable; else the index of the
        first array that fails, and the caller runs the full checks to report it.  A gradient that
        is the same array as last time, at the same address, skips the memory check
        (the guarded memory does not move: the optimizer holds those arrays).
        """
        cdef Py_ssize_t t, d, k, nd, nt = self.ntensors
        cdef object g
        cdef cnp.ndarray ga, pa
        cdef char* lo
        cdef list last = self.last_grads
        if len(grads) != nt:
            return 0
        for t in range(nt):
            g = grads[t]
            pa = <cnp.ndarray>self.params[t]
            if (not cnp.PyArray_ISWRITEABLE(pa) or cnp.PyArray_TYPE(pa) != self.type_num
                    or not cnp.PyArray_CheckExact(g)):
                return t
            for k in range(2, self.nbufs):     # the state buffers, written too
                if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>(<list>self.rows[k])[t]):
                    return t
            ga = <cnp.ndarray>g
            if (cnp.PyArray_TYPE(ga) != self.type_num or not cnp.PyArray_ISNOTSWAPPED(ga)
                    or not cnp.PyArray_IS_C_CONTIGUOUS(ga) or not cnp.PyArray_ISALIGNED(ga)):
                return t
            nd = cnp.PyArray_NDIM(ga)
            if nd != cnp.PyArray_NDIM(pa):
                return t
            for d in range(nd):
                if cnp.PyArray_DIMS(ga)[d] != cnp.PyArray_DIMS(pa)[d]:
                    return t
            lo = <char*>cnp.PyArray_DATA(ga)
            if g is not last[t] or lo != self.ptr[nt + t]:
                if cnp.PyArray_SIZE(ga) and self._overlaps(
                        <size_t>lo, <size_t>lo + <size_t>cnp.PyArray_NBYTES(ga)):
                    last[t] = None
                    return t
                last[t] = g
                self.ptr[nt + t] = lo
        return -1

    def set_grads(self, grads):
        """Point the grad row at ``grads`` without checks (the caller checked them)."""
        cdef Py_ssize_t t
        for t in range(self.ntensors):
            self.ptr[self.ntensors + t] = _data(grads[t])
            self.last_grads[t] = None

    def table_capsule(self):
        """This plan for the kernels of every instruction-set level: a PyCapsule named
        "fastopt.Table" holding a ``PlanView`` (``_table.pxi``: the ``Table``, first, then the
        task count, the number of groups and the dtype).  Valid while this object lives; the
        gradients it points at are the ones bound last (the pointers are read at each call)."""
        return self.capsule

    def chunks(self):
        """The plan, for tests: a list of tasks, each a list of (tensor, offset, length)."""
        return [[(self.ctensor[c], self.coffset[c], self.clength[c])
                 for c in range(self.first[k], self.first[k + 1])] for k in range(self.ntasks)]



def layout_key(rows):
    """A key for the layout of the arrays in ``rows`` (lists of arrays): a bytes object, or
    None when one item is not an ndarray.

    Per array: its identity, its type, the address of its data, its dtype (type number and
    byte order), its flags (writable, aligned, contiguous, ...), its shape and its strides:
    everything the argument checks read.  Two calls with equal keys pass or fail the same
    checks, and a plan built for one serves the other, even when an array was freed and a
    new one took its identity.
    """
    cdef object row, a, t
    cdef cnp.ndarray arr
    cdef Py_ssize_t size = 0, at = 0, d, nd
    cdef list arrays = []
    for row in rows:
        for a in row:
            if not cnp.PyArray_Check(a):
                return None
            arrays.append(a)
            size += 7 + 2 * cnp.PyArray_NDIM(<cnp.ndarray>a)
    cdef bytes key = PyBytes_FromStringAndSize(NULL, size * sizeof(Py_ssize_t))
    cdef Py_ssize_t* w = <Py_ssize_t*>PyBytes_AS_STRING(key)
    for a in arrays:
        arr = <cnp.ndarray>a
        nd = cnp.PyArray_NDIM(arr)
        w[at] = <Py_ssize_t><void*>a
        t = type(a)
        w[at + 1] = <Py_ssize_t><void*>t
        w[at + 2] = <Py_ssize_t>cnp.PyArray_DATA(arr)
        w[at + 3] = cnp.PyArray_TYPE(arr)
        w[at + 4] = cnp.PyArray_ISNOTSWAPPED(arr)
        w[at + 5] = cnp.PyArray_FLAGS(arr)
        w[at + 6] = nd
        at += 7
        for d in range(nd):
            w[at + d] = cnp.PyArray_DIMS(arr)[d]
            w[at + nd + d] = cnp.PyArray_STRIDES(arr)[d]
        at += 2 * nd
    return key
