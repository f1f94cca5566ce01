"""`fastopt bench --quick` runs and its table and JSON hold what they claim (no timing asserts)."""

import json

import pytest
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_table_and_json(tmp_path):
    out_json = tmp_path / "b.json"
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--quick", "--json",
                        str(out_json)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("fastopt ") and "bench: isa" in lines[0]
    assert lines[1].split()[:3] == ["kernel", "size", "fastopt"]
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
    from fastopt.benchmark.suite import MAIN_TABLE

    assert {r["group"] for r in rows} <= set(MAIN_TABLE) | {"sharing", "load", "list", "clip"}
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
            assert ("torch_time" in r) == torch_installed
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


def test_bench_bad_arguments():
    p = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--reps", "x"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "usage: fastopt bench" in p.stderr


def test_bench_sklearn_row_and_table():
    pytest.importorskip("sklearn")
    from fastopt.benchmark import suite

    row = suite.bench_sklearn(1, "float32", hidden=(16,), epochs=2)
    assert row["group"] == "sklearn" and row["time"] > 0 and row["sklearn_time"] > 0
    assert 0 <= row["accuracy"] <= 1 and abs(row["accuracy"] - row["sklearn_accuracy"]) < 0.05
    meta = dict(version="x", isa="a", threads=1, torch=None, reps=1, blas_shared=False)
    text = suite.format_table({"meta": meta, "rows": [row]})
    assert "MLPClassifier float32" in text and "speed-up" in text
