import os

import numpy as np
import pytest

import fastopt
from fastopt.train.checkpoint import CheckpointError


def _model():
    fp = fastopt.FlatParams({"W": (20, 5), "b": (5,)})
    fp.data[...] = np.random.default_rng(0).standard_normal(fp.size).astype(np.float32)
    return fp


def _train(fp, opt, steps, start=0):
    for t in range(start, start + steps):
        fp.grad[...] = np.random.default_rng(t).standard_normal(fp.size).astype(np.float32) + fp.data
        opt.step()


@pytest.mark.parametrize("cls", [fastopt.Adam, fastopt.AdamW, fastopt.RMSprop, fastopt.Momentum])
def test_resume_gives_the_same_bits(tmp_path, cls):
    path = tmp_path / "ckpt.npz"
    fp, opt = _model(), cls(_model(), lr=0.01)
    opt = cls(fp, lr=0.01)
    _train(fp, opt, 10)
    straight = fp.data.copy()

    fp, opt = _model(), None
    opt = cls(fp, lr=0.01)
    _train(fp, opt, 4)
    fastopt.save_checkpoint(path, fp, opt, epoch=4, note="hi", stats=np.arange(3.0),
                            history=[{"loss": 1.5}])
    fp2 = fastopt.FlatParams({"W": (20, 5), "b": (5,)})
    opt2 = cls(fp2, lr=0.5)
    extras = fastopt.load_checkpoint(path, fp2, opt2)
    assert extras["epoch"] == 4 and extras["note"] == "hi" and extras["history"] == [{"loss": 1.5}]
    np.testing.assert_array_equal(extras["stats"], [0, 1, 2])
    assert opt2.lr == 0.01 and opt2.step_count == 4
    _train(fp2, opt2, 6, start=4)
    np.testing.assert_array_equal(fp2.data, straight)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    fp = _model()
    opt = fastopt.Adam(fp)
    fastopt.save_checkpoint(path, fp, opt, epoch=1)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        f = args[0]
        f.write(b"partial garbage")
        raise KeyboardInterrupt("simulated crash while writing")

    monkeypatch.setattr(np, "savez", crash)
    fp.data[...] = 9.0
    with pytest.raises(KeyboardInterrupt):
        fastopt.save_checkpoint(path, fp, opt, epoch=2)
    assert path.read_bytes() == before           # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # and no temporary file is left


def test_missing_and_corrupt_files_change_nothing(tmp_path):
    fp = _model()
    opt = fastopt.Adam(fp)
    data_before = fp.data.copy()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fastopt.load_checkpoint(tmp_path / "nope.npz", fp, opt)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(CheckpointError, match="corrupt"):
        fastopt.load_checkpoint(bad, fp, opt)
    assert bad.read_bytes() == b"this is not a zip file"
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(CheckpointError, match="not a fastopt checkpoint"):
        fastopt.load_checkpoint(other, fp, opt)
    np.testing.assert_array_equal(fp.data, data_before)
    assert opt.step_count == 0


def test_mismatched_model_or_optimizer_is_rejected(tmp_path):
    path = tmp_path / "c.npz"
    fp = _model()
    opt = fastopt.Adam(fp)
    _train(fp, opt, 2)
    fastopt.save_checkpoint(path, fp, opt)
    small = fastopt.FlatParams({"W": (2, 2)})
    with pytest.raises(CheckpointError, match="holds parameters"):
        fastopt.load_checkpoint(path, small, fastopt.Adam(small))
    fp2 = _model()
    sgd = fastopt.SGD(fp2, lr=0.1)
    before = fp2.data.copy()
    with pytest.raises(CheckpointError, match="holds a Adam optimizer, not SGD"):
        fastopt.load_checkpoint(path, fp2, sgd)
    np.testing.assert_array_equal(fp2.data, before)


def test_bad_save_arguments(tmp_path):
    fp = _model()
    opt = fastopt.Adam(fp)
    with pytest.raises(TypeError, match="FlatParams"):
        fastopt.save_checkpoint(tmp_path / "x.npz", {"W": fp.params["W"]}, opt)
    with pytest.raises(TypeError, match="cannot be stored"):
        fastopt.save_checkpoint(tmp_path / "x.npz", fp, opt, thing=object())
    assert not (tmp_path / "x.npz").exists()
