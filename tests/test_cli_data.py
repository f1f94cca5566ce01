"""`fastopt train --data` and `fastopt tune --data`: the user's own .npz or CSV, in a subprocess."""

import re

import numpy as np
import pytest

from cli_run import run

pytestmark = pytest.mark.slow


def _blobs(n=300, seed=0):
    """Three separable classes in 5 features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 5)) + 4.0 * np.eye(3, 5)[y]
    return X, y


def _linear(n=300, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = X @ np.array([3.0, -2.0, 0.5, 1.0]) + 100.0 + 0.1 * rng.standard_normal(n)
    return X, y


def _last(out, key):
    return float(re.findall(rf"^held-out {key}: ([-0-9.]+)", out, re.M)[-1])


def test_train_on_an_npz_classification(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    out = run("train", "--data", str(tmp_path / "blobs.npz"), "--epochs", "5", "--hidden", "16",
              "--quiet").stdout
    assert "blobs.npz (classification, 3 classes, 5 features), 240 train / 60 held-out" in out
    assert "MLP 5-16-16-3" in out
    assert _last(out, "accuracy") >= 0.9


def test_train_on_a_csv_with_words_and_a_named_target(tmp_path):
    X, y = _blobs(seed=2)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    rows = ["label,a,b,c,d,e"] + [f"{n}," + ",".join(f"{v:.6g}" for v in x)
                                  for n, x in zip(names, X)]
    (tmp_path / "iris.csv").write_text("\n".join(rows) + "\n")
    out = run("train", "--data", str(tmp_path / "iris.csv"), "--target", "label", "--epochs",
              "5", "--hidden", "16", "--val-split", "0.25", "--quiet").stdout
    assert "(classification, 3 classes, 5 features), 225 train / 75 held-out" in out
    assert _last(out, "accuracy") >= 0.9


def test_train_regression_on_a_csv_reports_mse_and_r2(tmp_path):
    X, y = _linear()
    rows = ["x1,x2,x3,x4,price"] + [",".join(f"{v:.8g}" for v in (*x, t)) for x, t in zip(X, y)]
    (tmp_path / "lin.csv").write_text("\n".join(rows) + "\n")
    out = run("train", "--data", str(tmp_path / "lin.csv"), "--task", "regression", "--epochs",
              "15", "--hidden", "32", "--lr", "0.01", "--quiet").stdout
    assert "(regression, target 'price', 4 features)" in out and "MLP 4-32-32-1" in out
    epochs = re.findall(r"^epoch +\d+ .*loss ([0-9.]+) +R2 ([-0-9.]+) +test loss ([0-9.]+) +"
                        r"test R2 ([-0-9.]+)", out, re.M)
    assert len(epochs) == 15
    r2 = _last(out, "R2")
    mse = float(re.search(r"mean squared error ([0-9.e+-]+)\)", out).group(1))
    assert r2 > 0.9
    # the MSE is in the target's units: R2 = 1 - MSE / variance of the held-out targets
    var = np.var(y)     # (about the held-out targets' variance: 14.3 for these weights)
    assert 0 < mse < 0.2 * var
    assert float(epochs[-1][3]) == pytest.approx(r2, abs=1e-4)


def test_resume_on_data_gives_the_same_bits(tmp_path):
    X, y = _blobs(seed=3)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    common = ["--data", str(tmp_path / "d.npz"), "--hidden", "8", "--schedule", "exponential",
              "--quiet"]
    run("train", "--epochs", "3", "--save", str(a), *common)
    run("train", "--epochs", "1", "--save", str(b), *common)
    out = run("train", "--epochs", "3", "--resume", str(b), "--save", str(b), *common).stdout
    assert "after epoch 1" in out
    with np.load(a) as za, np.load(b) as zb:
        np.testing.assert_array_equal(za["params/data"], zb["params/data"])
    # a checkpoint of other data (another model) is refused, naming the problem
    np.savez(tmp_path / "other.npz", X=X[:, :3], y=y)
    p = run("train", "--epochs", "3", "--resume", str(b), "--data", str(tmp_path / "other.npz"),
            "--hidden", "8", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "usage: fastopt" in p.stderr


def test_tune_on_data(tmp_path):
    X, y = _linear(n=200)
    np.savez(tmp_path / "lin.npz", X=X, y=y)
    out = run("tune", "--data", str(tmp_path / "lin.npz"), "--task", "regression", "--trials",
              "2", "--epochs", "1").stdout
    assert "lin.npz (regression" in out and "scored by validation R2" in out
    rows = re.findall(r"^ +(\d) +([-0-9.]+) +", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"]
    assert float(rows[0][1]) >= float(rows[1][1])
    assert f"best: fastopt train --data {tmp_path / 'lin.npz'} --task regression" in out


@pytest.mark.parametrize("setup,args,msg", [
    (None, ["--data", "{tmp}/missing.csv"], "--data: {tmp}/missing.csv: no such file"),
    ("a,b\nx,1\n2,3\n3,4\n", ["--data", "{tmp}/d.csv"], "row 2, column 'a': 'x' is not a number"),
    ("a,b\n1,2\n2,3\n3,4\n", ["--data", "{tmp}/d.csv", "--target", "c"], "no column named 'c'"),
    ("a,b\n1,2.5\n2,3\n3,4\n", ["--data", "{tmp}/d.csv"], "not a whole number"),
    ("a,b\n1,x\n2,y\n3,z\n", ["--data", "{tmp}/d.csv", "--task", "regression"],
     "regression needs numeric targets"),
    (None, ["--task", "regression"], "--task regression needs --data"),
    (None, ["--target", "a"], "--target needs --data"),
    (None, ["--task", "ranking"], "invalid choice"),
    (None, ["--val-split", "1.5"], "--val-split: expected a fraction in (0, 1)"),
])
def test_bad_data_exits_2_naming_the_problem(tmp_path, setup, args, msg):
    if setup is not None:
        (tmp_path / "d.csv").write_text(setup)
    args = [a.format(tmp=tmp_path) for a in args]
    for cmd in ("train", "tune"):
        if cmd == "tune" and "--val-split" in args:
            continue
        p = run(cmd, *args, "--epochs", "1", check=False)
        assert p.returncode == 2, p.stderr
        assert msg.format(tmp=tmp_path) in p.stderr and "Traceback" not in p.stderr
        assert not re.search(r"^epoch +\d+ ", p.stdout, re.M)
