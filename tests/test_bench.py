"""`fastopt bench --quick` runs and its table and JSON hold what they claim (no timing asserts)."""

import contextlib
import json
import os

import numpy as np
import pytest
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# The subprocess timeouts guard against a hang only: a quick bench takes about a minute on a quiet
# 2-core machine and several times that on a loaded one, so they are far above either.
HANG = 1800


@pytest.mark.slow
def test_bench_quick_table_and_json(tmp_path):
    out_json = tmp_path / "b.json"
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--quick", "--json",
                        str(out_json)], capture_output=True, text=True, cwd=ROOT, timeout=HANG)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("fastopt ") and "bench: isa" in lines[0]
    assert lines[1].startswith("cpu: ")
    assert lines[2].split()[:3] == ["kernel", "size", "fastopt"]
    table = lines[2:lines.index("")] if "" in lines else lines[2:]
    names = [l.split()[0] for l in table if re.search(r" ms ", l)]
    for name in ("sgd-momentum", "rmsprop", "adam", "adamw", "batchnorm", "MLP", "Adam,"):
        assert name in names
    from fastopt.benchmark import OPTIMIZERS  # every registered optimizer with a torch twin

    assert set(OPTIMIZERS) <= set(names)
    result = json.loads(out_json.read_text())
    rows = result["rows"]
    assert result["meta"]["reps"] == 3
    sharing = [r for r in rows if r["group"] == "sharing"]
    load = [r for r in rows if r["group"] == "load"]
    lists = [r for r in rows if r["group"] == "list"]
    clip = [r for r in rows if r["group"] == "clip"]
    from fastopt.benchmark.report import TABLES

    MAIN_TABLE = TABLES[0].groups

    assert {r["group"] for r in rows} <= set(MAIN_TABLE) | {"sharing", "load", "list", "clip",
                                                           "state", "threading"}
    state = [r for r in rows if r["group"] == "state"]
    assert [r["name"] for r in state][:4] == ["adam float32", "adam bfloat16", "adam int8",
                                              "adam float8"]
    assert "Adam with float32, bfloat16, int8 and float8 state" in p.stdout
    assert all(r["size"] == 1 << 20 for r in state)
    rows = [r for r in rows if r["group"] in MAIN_TABLE]
    assert [r["name"] for r in clip] == ["adam + clip"] and "Clipping (max_grad_norm)" in p.stdout
    assert all(r["time"] > 0 and r["apart_time"] > 0 and r["guard_time"] > 0 for r in clip)
    assert len(rows) == len(names)
    assert "adam" in names and any(l.startswith("adam float64") for l in table)
    # lists of arrays against the same values in one FlatParams
    assert [(r["arrays"], r["name"]) for r in lists] == [(200, "adam, 200 arrays"),
                                                         (100, "adam, 100 arrays")]
    assert "A list of arrays" in p.stdout
    for r in lists:
        assert r["time"] > 0 and r["flat_time"] > 0 and r["bytes"] == 28 * r["size"]
    assert [r["name"] for r in sharing] == ["adam + matmul"] * 2 + ["batchnorm + matmul"]
    for r in sharing:
        total = r["kernel_time"] + r["matmul_time"]
        assert r["ratio"] == pytest.approx(r["alternating_time"] / total)
        if "ratio_shared" in r:
            assert r["ratio_shared"] == pytest.approx(r["alternating_shared_time"] / total)
    assert "Sharing the cores" in p.stdout
    torch_installed = result["meta"]["torch"] is not None
    for r in rows:
        assert r["time"] > 0 and r["reference_time"] > 0
        if r["group"] in ("optimizer", "batchnorm", "model"):
            assert r["bytes"] > 0 and r["roofline_time"] > 0
            # (an optimizer without a PyTorch twin, as Lion, has no torch column)
            twin = r["group"] != "optimizer" or OPTIMIZERS[r["name"].split()[0]].torch
            assert ("torch_time" in r) == (torch_installed and twin is not None)
    if not torch_installed:
        assert "torch not installed" in lines[0]
    expected_load = ["adam 1M", "batchnorm 4096x1024", "MLP train step", "MLP step, BLAS 1 thread"]
    assert [r["name"] for r in load] == expected_load + ["torch fused Adam 1M"] * torch_installed
    assert "Under load: two processes side by side" in p.stdout
    for r in load:
        assert r["alone_time"] > 0 and r["single_time"] > 0
        assert r["ratio"] == pytest.approx(r["time"] / r["single_time"])
    adam = [r for r in rows if r["name"] == "adam"]
    assert [r["size"] for r in adam] == [1 << 16, 1 << 20]
    assert all(r["bytes"] == 28 * r["size"] for r in adam)
    (adam64,) = [r for r in rows if r["name"] == "adam float64"]
    assert adam64["bytes"] == 56 * adam64["size"]
    # whether the figures can be trusted: in the JSON, and said in the table when not
    load = result["meta"]["load"]
    assert load["threads"] == result["meta"]["threads"] and load["cores"] >= 1
    for r in result["rows"]:
        assert set(r["unstable"]) == {k for k, v in r["spread"].items() if v > 0.10}
    marked = [l for l in lines if "  ! spread " in l]
    assert len(marked) == sum(1 for r in result["rows"] if r["unstable"])
    for w in result["meta"]["warnings"]:
        assert f"warning: {w}" in p.stdout


@pytest.mark.slow
def test_bench_bad_arguments():
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--reps", "x"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "usage: fastopt bench" in p.stderr


def test_bench_sklearn_row_and_table():
    pytest.importorskip("sklearn")
    from fastopt.benchmark import cases, measure, suite

    (row,) = measure(cases.sklearn_case("float32", hidden=(16,), epochs=2, reps=1), 3)
    assert row.size == (16,)
    row = row.to_dict()
    assert row["group"] == "sklearn" and row["time"] > 0 and row["sklearn_time"] > 0
    assert 0 <= row["accuracy"] <= 1 and abs(row["accuracy"] - row["sklearn_accuracy"]) < 0.05
    meta = dict(version="x", isa="a", threads=1, torch=None, reps=1, blas_shared=False)
    text = suite.format_table({"meta": meta, "rows": [row]})
    assert "MLPClassifier float32" in text and "speed-up" in text


# ------------------------------------------------------------------ the "state" group


def _check_state_rows(rows, n, torch_installed):
    from fastopt.kernels import lowbit as L

    nb = L.absmax_size(n)
    assert [r["name"] for r in rows][:4] == ["adam float32", "adam bfloat16", "adam int8",
                                             "adam float8"]
    f32, bf16, i8, f8 = rows[:4]
    assert [r["state_dtype"] for r in rows[:4]] == ["float32", "bfloat16", "int8", "float8"]
    assert (f32["bytes"], bf16["bytes"], i8["bytes"]) == (28 * n, 20 * n, 16 * n + 16 * nb)
    assert f8["bytes"] == i8["bytes"]
    assert f32["state_bytes_per_param"] == 8 and bf16["state_bytes_per_param"] == 4
    assert i8["state_bytes_per_param"] == pytest.approx(2 + 8 * nb / n)
    assert f8["state_bytes_per_param"] == i8["state_bytes_per_param"]
    for r in rows:
        assert r["group"] == "state" and r["size"] == n
        assert r["time"] > 0 and r["bytes"] > 0
        assert ("torch_time" in r) == torch_installed
        if torch_installed:
            assert r["torch_time"] > 0 and r["torch_time"] == rows[0]["torch_time"]
            assert r["torch_ratio"] > 0
    for r in rows[:4]:
        assert r["roofline_time"] > 0 and r["roofline_f32_time"] > 0
        # the float32 pass's bandwidth applied to the row's bytes
        assert r["roofline_f32_time"] == pytest.approx(f32["roofline_time"] * r["bytes"] / (28 * n))
    assert f32["roofline_f32_time"] == f32["roofline_time"]
    for r in rows[4:]:
        assert r["name"] == "bitsandbytes Adam8bit" and "roofline_time" not in r


def test_bench_state_is_placed_as_the_optimizers(monkeypatch):
    """The rows that call a kernel directly take their dense state where fastopt's optimizers
    put theirs (staggered from the parameter within a page), not where np.zeros puts it (at
    the parameter's own page offset: issue 23, the float32-state row read 0.9x PyTorch)."""
    import fastopt
    from fastopt.benchmark import cases

    n = 1 << 16
    p = np.ones(n, np.float32)
    opt = fastopt.Adam([p], lr=1e-3)
    opt.step([np.ones(n, np.float32)])
    want = [opt.state[k][0].ctypes.data % 4096 for k in ("exp_avg", "exp_avg_sq")]
    state = cases.fastopt_state(p, 2)
    assert [a.ctypes.data % 4096 for a in state] == want
    assert p.ctypes.data % 4096 not in want and len(set(want)) == 2
    assert all(a.shape == p.shape and a.dtype == p.dtype and not a.any() for a in state)
    # the state row and the optimizer rows take it from there
    seen = []
    real = cases.fastopt_state

    def spy(param, count, dtype=None):
        seen.append((param.size, count))
        return real(param, count, dtype)

    monkeypatch.setattr(cases, "fastopt_state", spy)
    cases.state_case(n, use_bitsandbytes=False).build(None)
    assert seen == [(n, 2)]
    cases.optimizer_case("adam", n).build(None)
    cases.optimizer_case("rmsprop", n).build(None)
    assert seen[1:] == [(n, 2), (n, 1)]


@pytest.mark.parametrize("n", [1000, 4096])
def test_bench_state_rows(n):
    from fastopt.benchmark import cases, measure, suite

    torch = suite._torch()
    notes = []
    rows = [r.to_dict() for r in measure(cases.state_case(n), 2, torch, notes)]
    _check_state_rows(rows, n, torch is not None)
    try:
        import bitsandbytes  # noqa: F401
        have_bnb = torch is not None
    except ImportError:
        have_bnb = False
    if have_bnb:   # installed: a row when it steps on CPU, else the reason
        assert ([r["name"] for r in rows[4:]] == ["bitsandbytes Adam8bit"]) != bool(notes)
    else:
        assert len(rows) == 4 and len(notes) == 1 and "bitsandbytes" in notes[0]
    rows = [r.to_dict() for r in measure(cases.state_case(n, use_bitsandbytes=False), 1)]
    _check_state_rows(rows, n, False)
    assert len(rows) == 4


def test_bench_state_bitsandbytes_missing_or_broken(monkeypatch):
    """Without bitsandbytes, or with one that cannot step on CPU, the row is left out and the
    reason is a note; a working Adam8bit gives a row."""
    import types

    torch = pytest.importorskip("torch")
    from fastopt.benchmark import cases, measure, suite

    def bench_state(n, reps, torch, notes):
        return [r.to_dict() for r in measure(cases.state_case(n), reps, torch, notes)]

    p = np.ones(512, np.float32)
    assert cases.bitsandbytes_step(None, p, p) == "bitsandbytes not measured: torch not installed"
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)       # import fails
    assert cases.bitsandbytes_step(torch, p, p) == "bitsandbytes not installed"

    class NoCPU:
        def __init__(self, params, lr):
            pass

        def step(self):
            raise RuntimeError("no CUDA device")

    class Works(torch.optim.Adam):  # stands in for Adam8bit: any optimizer that steps
        pass

    fake = types.ModuleType("bitsandbytes")
    fake.__version__ = "0.0-test"
    fake.optim = types.SimpleNamespace(Adam8bit=NoCPU)
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    why = cases.bitsandbytes_step(torch, p, p)
    assert "cannot step a CPU float32 tensor" in why and "no CUDA device" in why
    notes = []
    rows = bench_state(512, 1, torch, notes=notes)
    assert [r["name"] for r in rows] == ["adam float32", "adam bfloat16", "adam int8",
                                         "adam float8"]
    assert notes == [why]
    fake.optim.Adam8bit = Works
    notes = []
    rows = bench_state(8192, 1, torch, notes=notes)
    assert notes == [] and rows[-1]["name"] == "bitsandbytes Adam8bit"
    assert rows[-1]["version"] == "0.0-test" and rows[-1]["state_dtype"] == "int8"
    _check_state_rows(rows, 8192, True)
    meta = dict(version="x", isa="a", threads=1, torch="t", reps=1, blas_shared=False,
                notes=["bitsandbytes not installed"])
    text = suite.format_table({"meta": meta, "rows": rows})
    assert "Adam with float32, bfloat16, int8 and float8 state" in text
    assert "note: bitsandbytes not installed" in text
    table = text.splitlines()
    for name in ("adam float32", "adam bfloat16", "adam int8", "adam float8",
                 "bitsandbytes Adam8bit"):
        assert any(line.startswith(name) for line in table)
    assert "kernel" not in table[1]   # no main-table rows: no main table


@pytest.mark.slow
def test_bench_only_state_cli(tmp_path):
    out_json = tmp_path / "s.json"
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--quick", "--only", "state",
                        "--json", str(out_json)], capture_output=True, text=True, cwd=ROOT,
                       timeout=HANG)
    assert p.returncode == 0, p.stderr
    result = json.loads(out_json.read_text())
    assert {r["group"] for r in result["rows"]} == {"state"}
    _check_state_rows(result["rows"], 1 << 20, result["meta"]["torch"] is not None)
    assert "Adam with float32, bfloat16, int8 and float8 state" in p.stdout
    assert all(f"note: {x}" in p.stdout for x in result["meta"]["notes"])
    assert "A list of arrays" not in p.stdout and "Clipping" not in p.stdout


@pytest.mark.slow
def test_bench_only_groups():
    from fastopt.benchmark import suite
    from fastopt.cli import bench

    assert bench.GROUPS == suite.GROUPS   # the CLI spells them out so as not to load the suite
    with pytest.raises(ValueError, match="only must name"):
        suite.run(only=["nope"])
    with pytest.raises(ValueError, match="only must name"):
        suite.run(only=[])
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--only", "state,nope"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "unknown group(s) ['nope']" in p.stderr


def _bench_main(monkeypatch, *argv):
    """``fastopt bench argv`` in this process, with a benchmark that fails the test if it runs."""
    import fastopt.benchmark
    from fastopt.cli import main

    def ran(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(fastopt.benchmark, "run", ran)
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    return e.value.code


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_bench_unwritable_output_is_a_usage_error_before_running(tmp_path, monkeypatch, capsys,
                                                                  option):
    # Before: the whole benchmark ran, then writing the file raised a traceback.
    if option == "--plot":
        pytest.importorskip("matplotlib")
    (tmp_path / "somefile").write_text("a regular file")
    bad = tmp_path / "somefile" / "out.x"      # (unwritable even for root)
    assert _bench_main(monkeypatch, "--quick", option, str(bad)) == 2
    out, err = capsys.readouterr()
    assert "usage: fastopt bench" in err
    assert f"error: {option} {bad}: directory {tmp_path / 'somefile'} is not a directory" in err
    assert out == ""
    missing = tmp_path / "no" / "out.x"
    assert _bench_main(monkeypatch, option, str(missing)) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _bench_main(monkeypatch, option, str(tmp_path)) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["somefile"]


@pytest.mark.parametrize("argv,msg", [
    (["--distributed", "--plot", "x.png"], "--plot: not taken with --distributed"),
    (["--distributed", "--only", "state", "--no-torch"],
     "--only, --no-torch: not taken with --distributed"),
    (["--only", "state", "--plot", "x.png"], "--plot draws the optimizer rows"),
])
def test_bench_options_that_would_be_ignored_or_fail_are_usage_errors(monkeypatch, capsys, argv,
                                                                      msg):
    # Before: --distributed ignored --plot, --only, --no-*; --plot with --only state drew nothing.
    pytest.importorskip("matplotlib")
    assert _bench_main(monkeypatch, *argv) == 2
    assert msg in capsys.readouterr().err


# ------------------------------------------------------------------ trusting the figures
# (injected samples and load averages: nothing here is timed)


def test_samples_spread_and_unstable():
    from fastopt.benchmark.timing import MAX_SPREAD, Samples, unstable

    assert MAX_SPREAD == 0.10
    steady, noisy = Samples((1.0, 1.0, 1.02)), Samples((1.0, 1.5, 1.0))
    assert steady.median == 1.0 and steady.spread == pytest.approx(np.std([1, 1, 1.02], ddof=1)
                                                                    / np.mean([1, 1, 1.02]))
    assert noisy.spread == pytest.approx(0.2474, abs=1e-4)
    assert Samples((3.0,)).spread == 0.0 and Samples(()).spread == 0.0
    assert unstable({"fastopt": steady, "torch": noisy}) == ["torch"]
    assert unstable({"fastopt": steady, "torch": noisy}, bound=0.3) == []
    assert noisy.scaled(0.5).times == (0.5, 0.75, 0.5)


@pytest.mark.parametrize("before,after,busy", [
    (0.1, 2.3, False),     # quiet before; after: the benchmark's own 2 threads and 0.3 more
    (0.4, 2.5, False),     # at the slack exactly: not busy
    (1.2, 2.0, True),      # someone else used a core before the run
    (0.1, 3.0, True),      # ... or during it
    (None, None, False),   # no load average on this system: nothing to say
])
def test_busy_machine(before, after, busy):
    from fastopt.benchmark.timing import Load, busy as why

    msg = why(Load(cores=2, threads=2, before=before, after=after))
    assert (msg is not None) == busy
    if busy:
        assert msg.startswith("the machine is busy: load average ")
        assert f"{before:.2f} before, {after:.2f} after the run, on 2 cores" in msg
    # the same load leaves 6 free cores of 8 to the others: not busy
    assert why(Load(cores=8, threads=2, before=before, after=after)) is None


def test_run_warns_on_a_busy_machine(monkeypatch):
    from fastopt.benchmark import suite, timing
    from fastopt.benchmark.report import KernelRow
    from fastopt.benchmark.timing import Samples

    readings = iter([3.5, 4.0])
    monkeypatch.setattr(timing, "load_average", lambda: next(readings))
    monkeypatch.setattr(timing, "available_cores", lambda: 2)
    monkeypatch.setattr(suite, "get_num_threads", lambda: 2)
    steady = Samples((1e-3, 1e-3, 1e-3))

    def measure(case, reps, torch=None, notes=None):
        samples = {"fastopt": steady, "reference": Samples((2e-3, 3e-3, 2e-3)),
                   "roofline": steady}
        return KernelRow.from_samples(case, samples, {})

    monkeypatch.setattr(suite, "measure", measure)
    result = suite.run(quick=True, only=["optimizer"], use_torch=False)
    assert result["meta"]["load"] == dict(cores=2, threads=2, before=3.5, after=4.0)
    (w,) = result["meta"]["warnings"]
    assert "the machine is busy: load average 3.50 before, 4.00 after the run" in w
    text = suite.format_table(result)
    from fastopt.runtime import machine
    assert result["meta"]["cpu"] == machine.describe()
    assert text.splitlines()[1] == f"cpu: {machine.describe()}"
    assert text.splitlines()[-2] == (f"warning: {w}; the figures above cannot be trusted "
                                     "(rerun on a quiet machine)")
    rows = result["rows"]
    assert all(r.unstable == ["reference"] for r in rows)
    assert text.splitlines()[-1].startswith(f"warning: {len(rows)} row(s) marked !")


def _row(name, spreads):
    """A main-table row from injected samples: ``spreads`` picks which ones disagree."""
    from fastopt.benchmark.cases import optimizer_case
    from fastopt.benchmark.report import KernelRow
    from fastopt.benchmark.timing import Samples

    def samples(t, noisy):
        return Samples((t, 1.5 * t, t) if noisy else (t, t, t))

    times = {"fastopt": 1e-3, "reference": 4e-3, "roofline": 5e-4, "torch": 2e-3}
    case = optimizer_case(name, 1 << 16)
    return KernelRow.from_samples(case, {k: samples(t, k in spreads)
                                         for k, t in times.items()}, {})[0]


def test_table_marks_the_rows_whose_samples_disagree():
    import json

    from fastopt.benchmark import format_table, to_json

    rows = [_row("adam", ()), _row("rmsprop", ("torch",)), _row("adamw", ("fastopt", "torch"))]
    meta = dict(version="x", isa="a", threads=2, torch="t", reps=3, blas_shared=False)
    text = format_table({"meta": meta, "rows": rows})
    lines = text.splitlines()
    (adam,) = [l for l in lines if l.startswith("adam ")]
    (rms,) = [l for l in lines if l.startswith("rmsprop ")]
    (adamw,) = [l for l in lines if l.startswith("adamw ")]
    assert "!" not in adam and adam.split()[-2:] == ["4.0x", "2.0x"]
    assert rms.endswith("  ! spread torch 25%")
    assert adamw.endswith("  ! spread fastopt 25%, torch 25%")
    assert "!: the samples of this measurement disagree" in text
    assert lines[-1] == ("warning: 2 row(s) marked !: their repeated samples disagree by more "
                         "than 10%; rerun with more --reps or on a quiet machine")
    # the JSON holds the same facts, and prints the same table
    data = json.loads(json.dumps(to_json({"meta": meta, "rows": rows})))
    assert data["rows"][1]["unstable"] == ["torch"]
    assert data["rows"][1]["spread"]["torch"] == pytest.approx(0.2474, abs=1e-4)
    assert data["rows"][0]["unstable"] == [] and data["rows"][0]["bytes"] == 28 << 16
    assert format_table(data) == text
    # steady samples and a quiet machine: no marks, no warnings
    quiet = format_table({"meta": {**meta, "warnings": []}, "rows": rows[:1]})
    assert "!" not in quiet and "warning" not in quiet


def test_round_robin_and_each_apart_call_order():
    from fastopt.benchmark import timing

    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    out = timing.round_robin(fns, reps=2, warmup=1, between=lambda: calls.append("-"))
    assert calls == ["a", "-", "b", "-", "c", "-"] * 3
    assert {k: len(s.times) for k, s in out.items()} == {"a": 2, "b": 2, "c": 2}
    calls.clear()
    s = timing.each_apart(fns["a"], reps=4, warmup=2)
    assert calls == ["a"] * 6 and len(s.times) == 4


def test_cases_are_the_benchmarks_cases():
    """benchmarks/ times the cases fastopt bench runs (no case rebuilt there)."""
    from fastopt.benchmark.cases import OPTIMIZERS, QUICK_SIZES, ROLES, run_cases

    text = (ROOT / "benchmarks" / "test_bench_cases.py").read_text()
    assert "run_cases(" in text and "np.random" not in text
    assert not list((ROOT / "benchmarks").glob("test_bench_optim.py"))
    quick = run_cases(quick=True, torch=True)
    # each optimizer row at each quick size, and Adam in float64 (9 for the 4 twinned ones)
    assert [c.group for c in quick].count("optimizer") == len(OPTIMIZERS) * len(QUICK_SIZES) + 1
    assert {"sgd-momentum", "rmsprop", "adam", "adamw"} <= set(OPTIMIZERS)
    assert {c.group for c in quick} <= set(ROLES)
    (case,) = [c for c in quick if c.name == "adam float64"]
    assert case.bytes == 56 * case.size
    work = case.build(None)
    assert list(work.calls) == ["fastopt", "reference", "roofline"]   # no torch given


def test_bench_timeout_only_with_distributed(monkeypatch, capsys):
    assert _bench_main(monkeypatch, "--timeout", "5") == 2
    assert "--timeout: only taken with --distributed" in capsys.readouterr().err
    assert _bench_main(monkeypatch, "--distributed", "--timeout", "0") == 2
    assert "expected a positive finite number, got '0'" in capsys.readouterr().err


def test_bench_threading_rows_time_both_backends():
    # Issue 23: the pool and the OpenMP backend, round robin in one run, on every machine.
    import fastopt
    from fastopt import _threadpool
    from fastopt.benchmark import report, suite

    if not _threadpool.HAVE_OPENMP:
        pytest.skip("built without OpenMP")
    jobs, omp = _threadpool.stats()["jobs"], _threadpool.openmp_stats()["used"]
    result = suite.run(quick=True, reps=1, only=["threading"], use_torch=False)
    rows = result["rows"]
    assert [(r.name, r.size) for r in rows] == [
        ("adam", 1 << 16), ("adam", 1 << 20), ("batchnorm fwd+bwd", (16, 16, 28, 28))]
    for r in rows:
        assert r.time > 0 and r.openmp_time > 0
        # (one round: the median of one ratio is that round's ratio, the medians' ratio)
        assert r.ratio == pytest.approx(r.time / r.openmp_time)
    assert _threadpool.stats()["jobs"] > jobs and _threadpool.openmp_stats()["used"]
    assert fastopt.runtime.threads.get_backend() == "pool"       # switched back
    text = report.format_table(result)
    assert "pool/openmp" in text and "FASTOPT_THREADING=openmp" in text
    back = report.typed(report.to_json(result)["rows"])
    assert back == rows


def test_roofline_is_one_module_with_the_loops_of_every_level():
    # fastopt._roofline is built once; ext._roofline follows set_isa; each level's passes
    # move and add the values they are given.
    from fastopt import _roofline
    from fastopt.runtime import dispatch

    assert dispatch.ext._roofline.level == dispatch.ext.level
    assert not any(name == "_roofline" for name in dispatch._module_names("baseline"))
    rng = np.random.default_rng(0)
    n = 3 * 16384 + 5   # several blocks and a tail
    for level in dispatch.supported_levels():
        r = _roofline.Roofline(level)
        x, y = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
        out = np.empty_like(x)
        r.map(x, y, out, 2)
        np.testing.assert_array_equal(out, x + y)
        r.map(x, None, out, 1)
        np.testing.assert_array_equal(out, x + np.float32(1))
        assert r.reduce(x, y, 2) == pytest.approx(float(x.astype(np.float64).sum()
                                                        + y.astype(np.float64).sum()), rel=1e-9)
        a, b, c = x.copy(), y.copy(), out.copy()
        r.update([a, b, c], x, 2)
        np.testing.assert_array_equal(a, x + x)
        np.testing.assert_array_equal(b, y + x)
        np.testing.assert_array_equal(c, out + x)
        with fastopt_isa(level):
            assert dispatch.ext._roofline.level == level
    with pytest.raises(ValueError, match="level must be one of"):
        _roofline.Roofline("sse9")


@contextlib.contextmanager
def fastopt_isa(level):
    from fastopt.runtime import dispatch

    before = dispatch.ext.level
    dispatch.set_isa(level)
    try:
        yield
    finally:
        dispatch.set_isa(before)


def test_paired_ratio_is_the_median_of_the_rounds_ratios():
    """The round-robin ratios (state rows' "vs torch", pool/openmp): per round, then the
    median; a load that slows both calls of one round leaves it alone, where the ratio of the
    medians pairs one call's quiet round with the other's busy one."""
    from fastopt.benchmark.timing import Samples, paired_ratio

    a = Samples((1.0, 2.0, 10.0, 1.1, 2.2))
    b = Samples((2.0, 4.0, 20.0, 2.0, 4.0))
    assert paired_ratio(a, b) == pytest.approx(0.5)          # ratios .5 .5 .5 .55 .55
    assert a.median / b.median == pytest.approx(2.0 / 4.0)
    c = Samples((1.0, 1.0, 5.0, 5.0, 5.0))                   # load in rounds 3-5 of c only
    d = Samples((1.0, 1.0, 1.0, 5.0, 5.0))
    assert paired_ratio(c, d) == pytest.approx(1.0) and c.median / d.median == 5.0
    for bad in (Samples((1.0,)), Samples(())):
        with pytest.raises(ValueError, match="same rounds"):
            paired_ratio(a, bad)


def test_state_rows_torch_ratio_is_paired():
    from fastopt.benchmark import report
    from fastopt.benchmark.cases import STATE_DTYPES
    from fastopt.benchmark.timing import Samples

    class Case:
        group, name, size = "state", "adam", 1 << 16

    rounds = 4
    samples = {"torch": Samples((2.0, 2.0, 8.0, 2.0)),
               "roofline adam float32": Samples((1.0,) * rounds)}
    for i, name in enumerate(STATE_DTYPES):
        samples[name] = Samples((1.0 + i, 1.0 + i, 4.0 * (1 + i), 1.0 + i))
        samples[f"roofline {name}"] = Samples((1.0,) * rounds)
    rows = report.StateRow.from_samples(Case, samples, {})
    for i, r in enumerate(rows):
        assert r.torch_ratio == pytest.approx(2.0 / (1 + i))
        assert r.torch_time == 2.0
    (table,) = [t for t in report.TABLES if t.groups == ("state",)]
    (col,) = [c for c in table.columns if c.head == "vs torch"]
    assert [col.cell(r, {}).strip() for r in rows[:2]] == ["2.00x", "1.00x"]
