"""fastopt.data.tabular: reading the user's own data (an .npz or a CSV), every problem named."""

import numpy as np
import pytest

from fastopt.data.tabular import DataError, Table, load_table, split_table


def _csv(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_header_and_word_labels(tmp_path):
    t = load_table(_csv(tmp_path, "a,b,label\n1,2,cat\n3,4.5,dog\n5,6,cat\n-1e3,0,bird\n"))
    assert t.X.dtype == np.float32 and t.X.shape == (4, 2)
    np.testing.assert_array_equal(t.X[:, 1], [2, 4.5, 6, 0])
    assert t.classes.tolist() == ["bird", "cat", "dog"] and t.y.tolist() == [1, 2, 1, 0]
    assert t.features == ["a", "b"] and t.target == "label" and t.n_outputs == 3


def test_csv_without_header_target_by_index_and_name(tmp_path):
    path = _csv(tmp_path, "1,10,0.5\n2,20,1.5\n3,30,2.5\n")
    t = load_table(path, task="regression")          # the last column, no header
    assert t.y.dtype == np.float32 and t.y.tolist() == [0.5, 1.5, 2.5] and t.classes is None
    t = load_table(path, target=0)                   # integer labels in the first column
    assert t.y.tolist() == [0, 1, 2] and t.classes.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(t.X, [[10, 0.5], [20, 1.5], [30, 2.5]])
    assert load_table(path, target="-3").classes.tolist() == [1, 2, 3]
    named = _csv(tmp_path, "x,y,z\n1,10,0.5\n2,20,1.5\n3,30,2.5\n", "n.csv")
    t = load_table(named, target="y")
    assert t.target == "y" and t.features == ["x", "z"] and t.classes.tolist() == [10, 20, 30]


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(20) % 4)
    t = load_table(tmp_path / "d.npz")
    np.testing.assert_array_equal(t.X, X.astype(np.float32))
    assert t.classes.tolist() == [0, 1, 2, 3] and t.target == "y"
    t = load_table(tmp_path / "d.npz", task="regression")
    assert t.y.dtype == np.float32 and t.n_outputs == 1


@pytest.mark.parametrize("text,kw,msg", [
    ("", {}, "has no rows"),
    ("1\n2\n3\n", {}, "needs at least 2 columns"),
    ("a,b\n", {}, "header but no data rows"),
    ("a,b,c\n1,2,3\n4,5\n6,7,8\n", {}, "row 3 has 2 columns, expected 3"),
    ("a,b,c\n1,,3\n4,5,6\n6,7,8\n", {}, "row 2, column 'b': an empty cell is not a number"),
    ("a,b,c\n1,2,3\n4,x,6\n6,7,8\n", {}, "row 3, column 'b': 'x' is not a number"),
    ("a,b,c\n1,2,3\n4,5,6\n6,7,8\n", {"target": "d"}, "no column named 'd'"),
    ("1,2,3\n4,5,6\n6,7,8\n", {"target": "c"}, "has no header row"),
    ("1,2,3\n4,5,6\n6,7,8\n", {"target": 3}, "target column 3 is out of range"),
    ("a,b\n1,1\n2,1\n3,1\n", {}, "has a single class (1)"),
    ("a,b\n1,1.5\n2,1\n3,1\n", {}, "holds 1.5, not a whole number"),
    ("a,b\n1,x\n2,y\n3,z\n", {"task": "regression"}, "'x', which is not a number"),
    ("a,b\n1,2\n3,4\n", {}, "has 2 samples; training needs at least 3"),
    ("a,b\n1,1\n2,0\ninf,1\n", {}, "feature 'a' of sample 2 is inf"),
    ("a,b\n1,1\n2,0\n1e39,1\n", {}, "beyond float32's range"),
    ("a,b\n1,nan\n2,0\n3,1\n", {"task": "regression"}, "non-finite"),
])
def test_bad_csv_is_named(tmp_path, text, kw, msg):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as e:
        load_table(path, **kw)
    assert msg in str(e.value) and str(path) in str(e.value)


def test_bad_npz_and_arguments_are_named(tmp_path):
    np.savez(tmp_path / "noy.npz", X=np.zeros((4, 2)))
    with pytest.raises(DataError, match="no array named 'y'.*has 'X'"):
        load_table(tmp_path / "noy.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([[1, None]] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(DataError, match="obj.npz: holds an object \\(pickled\\) array"):
        load_table(tmp_path / "obj.npz")
    np.savez(tmp_path / "shape.npz", X=np.zeros(4), y=np.arange(4))
    with pytest.raises(DataError, match=r"X must be 2-D .*got shape \(4,\)"):
        load_table(tmp_path / "shape.npz")
    np.savez(tmp_path / "n.npz", X=np.zeros((4, 2)), y=np.arange(5))
    with pytest.raises(DataError, match="X has 4 samples but y has 5"):
        load_table(tmp_path / "n.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_table(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="--target.*is for CSV files"):
        load_table(tmp_path / "n.npz", target="y")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_table(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00a,b\n")
    with pytest.raises(DataError, match="not a UTF-8 text"):
        load_table(tmp_path / "bin.csv")
    with pytest.raises(ValueError, match="task must be one of classification, regression"):
        load_table(tmp_path / "n.npz", task="clustering")
    with pytest.raises(TypeError, match="target must be a column name"):
        load_table(tmp_path / "n.npz", target=1.5)


def test_split_is_seeded_and_standardizes_on_the_training_part(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3)) * 5 + 2
    np.savez(tmp_path / "d.npz", X=X, y=rng.standard_normal(50))
    t = load_table(tmp_path / "d.npz", task="regression")
    Xtr, ytr, Xte, yte = split_table(t, seed=3, test_fraction=0.2)
    assert len(ytr) == 40 and len(yte) == 10
    np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Xtr.std(axis=0), 1, atol=1e-5)
    again = split_table(t, seed=3, test_fraction=0.2)
    for a, b in zip((Xtr, ytr, Xte, yte), again):
        np.testing.assert_array_equal(a, b)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == sorted(t.y.tolist())
    with pytest.raises(ValueError, match="leaves 0 to train|needs at least"):
        split_table(Table(X=t.X[:3], y=t.y[:3], task="regression", classes=None, features=[],
                          target="y", source="x"), seed=0, test_fraction=0.9)
    with pytest.raises(TypeError, match="table must be a Table"):
        split_table((X, X), seed=0)


def test_trainer_regression_arguments_are_checked():
    from fastopt.train import Trainer

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="task 'regression' needs data"):
        Trainer(task="regression")
    with pytest.raises(ValueError, match="task must be one of classification, regression"):
        Trainer(task="ranking")
    with pytest.raises(TypeError, match="y_train must be a 1-D float array of targets"):
        Trainer(task="regression", data=(X[:20], np.arange(20), X[20:], np.arange(10.0)))
    t = Trainer(task="regression", hidden=8, epochs=2, data=(X[:20], X[:20, 0] * 50.0 + 7,
                                                             X[20:], X[20:, 0] * 50.0 + 7))
    rec = t.fit()[-1]
    assert set(rec) >= {"r2", "test_r2", "loss", "test_loss"} and "acc" not in rec
    loss, r2 = t.evaluate()
    assert loss == pytest.approx(rec["test_loss"]) and r2 == pytest.approx(rec["test_r2"])
    assert t.model.loss == "mse" and t.model.sizes[-1] == 1
