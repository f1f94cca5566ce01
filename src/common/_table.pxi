# The fixed blocks and the multi-tensor table: the layout the kernels compute in.  Included by
# _parallel.pxi (the kernel modules) and by fastopt._plan (compiled once), which builds the
# tables the kernels of every instruction-set level run over.

# The fixed blocks a flat buffer is cut into (shared by every kernel module, so the roofline
# moves its bytes in the same blocks as the kernels), and the size from which a call uses
# more than one thread.
cdef enum:
    BLOCK = 16384            # elements per block (64 KiB of float32)
    PARALLEL_MIN = 65536     # below this many elements, one thread

cdef inline Py_ssize_t _nblocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


cdef inline Py_ssize_t _blen(Py_ssize_t b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t rest = n - b * BLOCK
    return BLOCK if rest > BLOCK else rest


# ---- the multi-tensor table: one kernel call over many arrays.
#
# A call's work is a list of tasks; a task is a run of chunks; a chunk is a piece of one
# tensor (tensor t, offset, length <= BLOCK).  ``ptr[k * ntensors + t]`` is the base of
# tensor t in buffer k (0: param, 1: grad, 2...: state).  With ``first == NULL`` the table
# is one tensor of ``n`` elements cut into BLOCK-sized chunks, one per task (the flat
# path, no allocation).  Elementwise kernels therefore compute every element with the same
# code for any layout and thread count.
cdef struct Table:
    char** ptr
    Py_ssize_t ntensors
    Py_ssize_t n
    const Py_ssize_t* first     # ntasks + 1 entries: task i covers chunks first[i]..first[i+1]-1
    const Py_ssize_t* ctensor
    const Py_ssize_t* coffset
    const Py_ssize_t* clength
    const int* tgroup           # per tensor: which hyperparameter set (NULL: all use the first)
    const void* hyper           # the kernel's hyperparameter struct(s), one per group


# What a fastopt._plan.MultiTensor hands the kernels of another module (in a PyCapsule named
# "fastopt.Table", valid while the plan lives): its table first (so a pointer to it is a
# pointer to the Table), its task count, its number of hyperparameter groups and its dtype
# (a NumPy type number).  The grads are the ones bound last.
cdef struct PlanView:
    Table T
    Py_ssize_t ntasks
    int ngroups
    int type_num


cdef inline void _task_chunks(const Table* T, Py_ssize_t task, Py_ssize_t* lo,
                              Py_ssize_t* hi) noexcept nogil:
    if T.first == NULL:
        lo[0] = task
        hi[0] = task + 1
    else:
        lo[0] = T.first[task]
        hi[0] = T.first[task + 1]


cdef inline Py_ssize_t _chunk(const Table* T, Py_ssize_t c, Py_ssize_t* t,
                              Py_ssize_t* off) noexcept nogil:
    """Chunk c's tensor and offset (written to t, off); returns its length."""
    if T.first == NULL:
        t[0] = 0
        off[0] = c * BLOCK
        return _blen(c, T.n)
    t[0] = T.ctensor[c]
    off[0] = T.coffset[c]
    return T.clength[c]


cdef inline int _group(const Table* T, Py_ssize_t t) noexcept nogil:
    """The hyperparameter group of tensor t."""
    return 0 if T.tgroup == NULL else T.tgroup[t]


cdef inline char* _at(const Table* T, int k, Py_ssize_t t, Py_ssize_t byte_off) noexcept nogil:
    """The address of byte ``byte_off`` of tensor t in buffer k."""
    return T.ptr[k * T.ntensors + t] + byte_off
