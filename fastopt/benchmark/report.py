"""The benchmark's results: typed rows, the tables that print them, and their JSON.

A row is a dataclass per group (:class:`KernelRow`, :class:`ListRow`, ...), made from the
timed samples of a case (``Row.from_samples``); ``row.to_dict()`` is its JSON object (the
keys of earlier releases, plus ``spread``: each measurement's relative standard deviation,
and ``unstable``: the measurements whose samples disagree beyond
:data:`fastopt.benchmark.timing.MAX_SPREAD`).  Each table is a :class:`Table` spec: its
title, the groups it prints, its columns (header, width, cell) and footer lines;
:func:`format_table` prints every table of a result, marks the rows whose samples disagree,
and ends with a warning when the figures cannot be trusted.
"""

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from .cases import STATE_DTYPES, size_label, state_bytes
from .timing import MAX_SPREAD, paired_ratio, unstable

#: The marker after a row whose samples disagree.
MARK = "!"


@dataclass(kw_only=True)
class Row:
    """What every row holds: its group, name and size, and how far its samples agree."""

    group: str
    name: str
    size: Any
    spread: dict = field(default_factory=dict)
    unstable: list = field(default_factory=list)

    def to_dict(self):
        """The JSON object of the row (optional figures that were not measured are left out)."""
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None or k == "size"}

    def _set_spread(self, samples, bound=MAX_SPREAD):
        # (unrounded: ``unstable`` is decided on these very values, so the JSON's two agree
        # even for a spread a hair above the bound)
        self.spread = {k: s.spread for k, s in samples.items()}
        self.unstable = unstable(samples, bound)
        return self


def _median(samples, role):
    return samples[role].median if role in samples else None


def _paired(samples, num, den):
    """:func:`~fastopt.benchmark.timing.paired_ratio` of two round-robin roles (None if one is
    missing)."""
    if num not in samples or den not in samples:
        return None
    return paired_ratio(samples[num], samples[den])


@dataclass(kw_only=True)
class KernelRow(Row):
    """A row of the main table: fastopt's time, the bytes it moves, the roofline pass's time,
    the NumPy reference's and PyTorch's."""

    time: float
    reference_time: float
    bytes: int | None = None
    roofline_time: float | None = None
    torch_time: float | None = None

    @classmethod
    def from_samples(cls, case, samples, info):
        return [cls(group=case.group, name=case.name, size=case.size, bytes=case.bytes,
                    time=samples["fastopt"].median,
                    reference_time=samples["reference"].median,
                    roofline_time=_median(samples, "roofline"),
                    torch_time=_median(samples, "torch"))._set_spread(samples)]


@dataclass(kw_only=True)
class ListRow(Row):
    """Adam over a list of arrays (``time``) against the same values in one FlatParams."""

    arrays: int
    time: float
    flat_time: float
    reference_time: float
    bytes: int
    torch_time: float | None = None

    @classmethod
    def from_samples(cls, case, samples, info):
        return [cls(group=case.group, name=case.name, size=case.size, arrays=info["arrays"],
                    time=samples["list"].median, flat_time=samples["flat"].median,
                    reference_time=samples["reference"].median, bytes=case.bytes,
                    torch_time=_median(samples, "torch"))._set_spread(samples)]


@dataclass(kw_only=True)
class ClipRow(Row):
    """Clipping fused into the step (``time``), with the guard, and apart."""

    time: float
    guard_time: float
    apart_time: float
    torch_time: float | None = None

    @classmethod
    def from_samples(cls, case, samples, info):
        return [cls(group=case.group, name=case.name, size=case.size,
                    time=samples["fastopt"].median, guard_time=samples["guard"].median,
                    apart_time=samples["apart"].median,
                    torch_time=_median(samples, "torch"))._set_spread(samples)]


@dataclass(kw_only=True)
class StateRow(Row):
    """Adam with one state dtype (or bitsandbytes' Adam8bit)."""

    state_dtype: str
    time: float
    bytes: int
    state_bytes_per_param: float
    roofline_time: float | None = None
    roofline_f32_time: float | None = None
    torch_time: float | None = None
    #: the median over rounds of torch's time / this row's time in the same round
    torch_ratio: float | None = None
    version: str | None = None

    @classmethod
    def from_samples(cls, case, samples, info):
        from ..kernels import lowbit as L

        n = case.size
        nbytes = state_bytes(n)
        roof32 = samples["roofline adam float32"].median
        torch = _median(samples, "torch")
        shared = {k: samples[k] for k in ("torch",) if k in samples}
        rows = []
        for name, dtype in STATE_DTYPES.items():
            own = {name: samples[name], f"roofline {name}": samples[f"roofline {name}"], **shared}
            rows.append(cls(group=case.group, name=name, size=n, state_dtype=dtype,
                            time=samples[name].median, bytes=nbytes[name],
                            roofline_time=samples[f"roofline {name}"].median,
                            roofline_f32_time=roof32 * nbytes[name] / nbytes["adam float32"],
                            state_bytes_per_param=L.state_bytes(n, dtype, 2) / n,
                            torch_time=torch, torch_ratio=_paired(samples, "torch", name))
                        ._set_spread(own))
        bnb = "bitsandbytes Adam8bit"
        if bnb in samples:
            # Adam8bit keeps arrays under its min_8bit_size (4,096) in float32 state
            dtype = "int8" if n >= 4096 else "float32"
            rows.append(cls(group=case.group, name=bnb, size=n, state_dtype=dtype,
                            time=samples[bnb].median,
                            bytes=nbytes["adam int8" if dtype == "int8" else "adam float32"],
                            state_bytes_per_param=L.state_bytes(n, dtype, 2) / n,
                            torch_time=torch, torch_ratio=_paired(samples, "torch", bnb),
                            version=info["bitsandbytes"])
                        ._set_spread({bnb: samples[bnb], **shared}))
        return rows


@dataclass(kw_only=True)
class SklearnRow(Row):
    """fastopt's MLPClassifier fit (``time``) against scikit-learn's."""

    dtype: str
    time: float
    sklearn_time: float
    accuracy: float
    sklearn_accuracy: float

    @classmethod
    def from_samples(cls, case, samples, info):
        acc = info["accuracy"]
        return [cls(group=case.group, name=case.name, size=case.size,
                    dtype=info["dtype"], time=samples["fastopt"].median,
                    sklearn_time=samples["sklearn"].median, accuracy=acc["fastopt"],
                    sklearn_accuracy=acc["sklearn"])._set_spread(samples)]


@dataclass(kw_only=True)
class SharingRow(Row):
    """A kernel then a matmul in a loop, against the two apart (``ratio``)."""

    kernel_time: float
    matmul_time: float
    alternating_time: float
    ratio: float
    alternating_shared_time: float | None = None
    ratio_shared: float | None = None

    @classmethod
    def from_samples(cls, case, samples, info):
        tk, tm = samples["kernel"].median, samples["matmul"].median
        ta, ts = samples["alternating"].median, _median(samples, "shared")
        return [cls(group=case.group, name=case.name, size=case.size, kernel_time=tk,
                    matmul_time=tm, alternating_time=ta, ratio=ta / (tk + tm),
                    alternating_shared_time=ts,
                    ratio_shared=None if ts is None else ts / (tk + tm))._set_spread(samples)]


@dataclass(kw_only=True)
class BackendRow(Row):
    """One step on the pool (``time``) and on the OpenMP backend, round robin; ``ratio``:
    pool / openmp, the median of the rounds' ratios (above 1: the pool is slower)."""

    time: float
    openmp_time: float
    ratio: float

    @classmethod
    def from_samples(cls, case, samples, info):
        tp, to = samples["pool"].median, samples["openmp"].median
        return [cls(group=case.group, name=case.name, size=case.size, time=tp, openmp_time=to,
                    ratio=_paired(samples, "pool", "openmp"))._set_spread(samples)]


@dataclass(kw_only=True)
class LoadRow(Row):
    """Two processes side by side: the slower one's median step (``time``: default threads,
    ``single_time``: one thread each), and one process alone."""

    time: float
    alone_time: float
    single_time: float
    ratio: float

    @classmethod
    def from_samples(cls, case, samples, info):
        """``samples``: ``alone`` (one process), ``default`` and ``single`` (a list each:
        one :class:`~fastopt.benchmark.timing.Samples` per process)."""
        default = max(s.median for s in samples["default"])
        single = max(s.median for s in samples["single"])
        flat = {"alone": samples["alone"][0]}
        for key in ("default", "single"):   # the process whose samples agree least
            flat[key] = max(samples[key], key=lambda s: s.spread)
        return [cls(group=case.group, name=case.name, size=None, time=default,
                    alone_time=samples["alone"][0].median, single_time=single,
                    ratio=default / single)._set_spread(flat)]


#: The row type of each group.
ROWS = {"optimizer": KernelRow, "batchnorm": KernelRow, "train": KernelRow, "model": KernelRow,
        "list": ListRow, "clip": ClipRow, "state": StateRow, "sklearn": SklearnRow,
        "threading": BackendRow, "sharing": SharingRow, "load": LoadRow}


def row_from_dict(d):
    """A row back from its JSON object (``to_dict``)."""
    cls = ROWS[d["group"]]
    names = {f.name for f in fields(cls)}
    d = dict(d)
    if isinstance(d.get("size"), list):
        d["size"] = tuple(d["size"])
    return cls(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------ tables

def _ms(x, width=8):
    return "—" if x is None else f"{x * 1e3:{width}.3f} ms"


def _ratio(x):
    return "—" if x is None or not math.isfinite(x) else f"{x:.1f}x"


def _div(a, b):
    return None if a is None or b is None else a / b


def _num(x, spec):
    return "—" if x is None else format(x, spec)


@dataclass(frozen=True)
class Column:
    """A column: header, width, alignment (``"<"`` or ``">"``), and ``cell(row, meta) -> str``."""

    head: str
    width: int
    cell: Callable
    align: str = ">"


@dataclass(frozen=True)
class Table:
    """A table: the groups whose rows it prints, a title (``title(rows, meta)``, or None: no
    title line), the columns, and the footer lines (``footer(rows, meta)``)."""

    groups: tuple
    columns: tuple
    title: Callable | None = None
    footer: Callable | None = None


def _gbs(r, m):
    return _num(None if r.bytes is None else r.bytes / r.time / 1e9, "7.1f")


def _state_title(rows, m):
    t = rows[0].torch_time
    vs = (f"PyTorch's fused float32 Adam (median {t * 1e3:.3f} ms) / time, the median of the "
          "rounds' ratios") if t else "—: torch not installed"
    return ("Adam with float32, bfloat16, int8 and float8 state (fastopt.kernels.lowbit), measured "
            f"round robin; vs torch: {vs}:")


#: Every table ``fastopt bench`` prints, in order.
TABLES = (
    Table(("optimizer", "batchnorm", "train", "model"), (
        Column("kernel", 22, lambda r, m: r.name, "<"),
        Column("size", 13, lambda r, m: size_label(r.size)),
        Column("fastopt", 11, lambda r, m: _ms(r.time)),
        Column("GB/s", 7, _gbs),
        Column("roofline", 9, lambda r, m: _num(_div(r.roofline_time, r.time), "9.2f")),
        Column("vs NumPy", 9, lambda r, m: _ratio(r.reference_time / r.time)),
        Column("vs torch", 9, lambda r, m: _ratio(_div(r.torch_time, r.time))),
    ), footer=lambda rows, m: [
        "GB/s: bytes the operation must move / time. roofline: time of a pass moving the same "
        "bytes with no arithmetic / kernel time. vs X: X's time / fastopt's time."]),
    Table(("list",), (
        Column("optimizer", 22, lambda r, m: r.name, "<"),
        Column("elements", 9, lambda r, m: size_label(r.size)),
        Column("list", 11, lambda r, m: _ms(r.time)),
        Column("FlatParams", 11, lambda r, m: _ms(r.flat_time)),
        Column("list/flat", 10, lambda r, m: f"{r.time / r.flat_time:10.2f}"),
        Column("vs NumPy", 9, lambda r, m: _ratio(r.reference_time / r.time)),
        Column("vs torch", 9, lambda r, m: _ratio(_div(r.torch_time, r.time))),
    ), title=lambda rows, m: "A list of arrays (one compiled call over a table of chunks) "
                             "against the same values in one FlatParams:"),
    Table(("clip",), (
        Column("step", 22, lambda r, m: r.name, "<"),
        Column("size", 9, lambda r, m: size_label(r.size)),
        Column("fused", 11, lambda r, m: _ms(r.time)),
        Column("apart", 11, lambda r, m: _ms(r.apart_time)),
        Column("apart/fused", 12, lambda r, m: f"{r.apart_time / r.time:12.2f}"),
        Column("+guard", 11, lambda r, m: _ms(r.guard_time)),
        Column("guard cost", 11, lambda r, m: f"{r.guard_time / r.time - 1:+10.1%}"),
        Column("vs torch", 9, lambda r, m: _ratio(_div(r.torch_time, r.time))),
    ), title=lambda rows, m: "Clipping (max_grad_norm) fused into the step, against "
                             "clip_grad_norm_ then the step ('apart': a norm pass, a scaling "
                             "pass, the step):"),
    Table(("state",), (
        Column("step", 22, lambda r, m: r.name, "<"),
        Column("size", 9, lambda r, m: size_label(r.size)),
        Column("time", 11, lambda r, m: _ms(r.time)),
        Column("GB/s", 7, lambda r, m: f"{r.bytes / r.time / 1e9:7.1f}"),
        Column("roofline", 9, lambda r, m: _num(_div(r.roofline_time, r.time), ".2f")),
        Column("roof f32 bw", 12, lambda r, m: _num(_div(r.roofline_f32_time, r.time), ".2f")),
        Column("vs torch", 9, lambda r, m: _num(r.torch_ratio, ".2f") +
               ("x" if r.torch_ratio is not None else "")),
        Column("state B/param", 14, lambda r, m: f"{r.state_bytes_per_param:14.2f}"),
    ), title=_state_title, footer=lambda rows, m: [
        "GB/s: bytes the step must move (param, grad, state: 28 B/elem with float32 state, 20 "
        "bfloat16, 16 + absmax int8 and float8) / time. roofline: a pass moving the row's own "
        "buffers with one add per element / time. roof f32 bw: the row's bytes at the float32 pass's "
        "bandwidth / time."] + [f"note: {note}" for note in m.get("notes", ())]),
    Table(("sklearn",), (
        Column("model", 24, lambda r, m: r.name, "<"),
        Column("scikit-learn", 13, lambda r, m: f"{r.sklearn_time:11.3f} s"),
        Column("fastopt", 11, lambda r, m: f"{r.time:9.3f} s"),
        Column("speed-up", 9, lambda r, m: _ratio(r.sklearn_time / r.time)),
        Column("accuracy (sk / fo)", 19,
               lambda r, m: f"{r.sklearn_accuracy:9.3f} / {r.accuracy:.3f}"),
    ), title=lambda rows, m: "scikit-learn's MLPClassifier(hidden_layer_sizes=(1024, 1024), "
                             "max_iter=5) on digits, fit time, median of 3 "
                             "(fastopt.integrations.sklearn):"),
    Table(("threading",), (
        Column("step", 22, lambda r, m: r.name, "<"),
        Column("size", 13, lambda r, m: size_label(r.size)),
        Column("pool", 11, lambda r, m: _ms(r.time)),
        Column("openmp", 11, lambda r, m: _ms(r.openmp_time)),
        Column("pool/openmp", 12, lambda r, m: f"{r.ratio:12.2f}"),
    ), title=lambda rows, m: "Threading backends, round robin in one run: fastopt's pool (the "
                             f"default; this run: {m.get('threading', 'pool')}) and "
                             "FASTOPT_THREADING=openmp (a static-schedule OpenMP region); "
                             "pool/openmp: the median of the rounds' ratios:"),
    Table(("sharing",), (
        Column("loop", 22, lambda r, m: r.name, "<"),
        Column("size", 13, lambda r, m: size_label(r.size)),
        Column("kernel", 11, lambda r, m: _ms(r.kernel_time)),
        Column("matmul", 11, lambda r, m: _ms(r.matmul_time)),
        Column("alternating", 12, lambda r, m: _ms(r.alternating_time, 9)),
        Column("/ apart", 8, lambda r, m: f"{r.ratio:8.2f}"),
        Column("shared", 12, lambda r, m: _ms(r.alternating_shared_time, 9)),
        Column("/ apart", 8, lambda r, m: _num(r.ratio_shared, ".2f")),
    ), title=lambda rows, m: "Sharing the cores with NumPy's BLAS (by default BLAS jobs on "
                             f"fastopt's threads: {'yes' if m['blas_shared'] else 'no'}), per "
                             "iteration; 'shared': with FASTOPT_BLAS_THREADS=shared:"),
    Table(("load",), (
        Column("step", 24, lambda r, m: r.name, "<"),
        Column("alone", 11, lambda r, m: _ms(r.alone_time)),
        Column("2 x default", 12, lambda r, m: _ms(r.time, 9)),
        Column("2 x 1 thread", 13, lambda r, m: _ms(r.single_time, 10)),
        Column("default / 1 thread", 19, lambda r, m: f"{r.ratio:19.2f}"),
    ), title=lambda rows, m: "Under load: two processes side by side on the same cores, "
                             "median step time of the slower one:"),
)


def _line(columns, cells):
    return " ".join(f"{c:{col.align}{col.width}}" for col, c in zip(columns, cells))


def _mark(row):
    """The marker of a row whose samples disagree: which measurements, by how much."""
    if not row.unstable:
        return ""
    shown = ", ".join(f"{k} {row.spread[k]:.0%}" for k in row.unstable)
    return f"  {MARK} spread {shown}"


def format_rows(table, rows, meta):
    """The lines of one table over its ``rows`` (typed rows of its groups)."""
    lines = [] if table.title is None else [table.title(rows, meta)]
    lines.append(_line(table.columns, [c.head for c in table.columns]))
    for r in rows:
        lines.append(_line(table.columns, [c.cell(r, meta) for c in table.columns]) + _mark(r))
    if table.footer is not None:
        lines += table.footer(rows, meta)
    if any(r.unstable for r in rows):
        lines.append(f"{MARK}: the samples of this measurement disagree (standard deviation "
                     f"above {MAX_SPREAD:.0%} of their mean): its figures cannot be trusted")
    return lines


def typed(rows):
    """Rows as typed rows (JSON objects are converted back)."""
    return [r if isinstance(r, Row) else row_from_dict(r) for r in rows]


def warnings(result):
    """The lines warning that the figures of ``result`` cannot be trusted (empty: none)."""
    out = [f"warning: {w}; the figures above cannot be trusted (rerun on a quiet machine)"
           for w in result["meta"].get("warnings", ())]
    bad = sum(1 for r in typed(result["rows"]) if r.unstable)
    if bad:
        out.append(f"warning: {bad} row(s) marked {MARK}: their repeated samples disagree by "
                   f"more than {MAX_SPREAD:.0%}; rerun with more --reps or on a quiet machine")
    return out


def format_table(result):
    """Every table of ``result`` (``{"meta": ..., "rows": [...]}``, rows typed or JSON),
    then the warnings."""
    m = result["meta"]
    rows = typed(result["rows"])
    torch_note = f"torch {m['torch']}" if m["torch"] else "torch not installed: no torch column"
    lines = [f"fastopt {m['version']} bench: isa {m['isa']}, {m['threads']} threads, {torch_note}, "
             f"median of {m['reps']}"]
    if m.get("cpu"):
        lines.append(f"cpu: {m['cpu']}")
    for i, table in enumerate(TABLES):
        mine = [r for r in rows if r.group in table.groups]
        if mine:
            lines += ([] if i == 0 else [""]) + format_rows(table, mine, m)
    notes = m.get("notes", ())
    if notes and not any(r.group == "state" for r in rows):
        lines += [f"note: {note}" for note in notes]
    trust = warnings(result)
    if trust:
        lines += [""] + trust
    return "\n".join(lines)


def to_json(result):
    """``result`` with its rows as JSON objects (what ``--json`` writes)."""
    return {"meta": result["meta"], "rows": [r.to_dict() if isinstance(r, Row) else r
                                             for r in result["rows"]]}
