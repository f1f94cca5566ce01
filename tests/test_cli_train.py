"""`fastopt train` and `fastopt tune`, run as a user would, in a subprocess."""

import json
import os
import re

import numpy as np
import pytest

from cli_run import run

# Slow system tests (subprocesses): out of the quick loop, pytest -m "not slow".
pytestmark = pytest.mark.slow


def _accuracy(out):
    return float(re.search(r"^held-out accuracy: ([0-9.]+)$", out, re.M).group(1))


def test_train_two_epochs_prints_progress_and_results():
    out = run("train", "--epochs", "2").stdout
    lines = [l for l in out.splitlines() if re.match(r"epoch +\d+ ", l)]
    assert len(lines) == 2
    for l in lines:
        assert re.search(r"loss [0-9.]+ +acc [0-9.]+ +test loss [0-9.]+ +test acc [0-9.]+", l)
        assert re.search(r"kernels +[0-9.]+%", l)
    assert _accuracy(out) > 0.85
    assert re.search(r"^time per epoch: [0-9.]+ ms .*fastopt kernels \(fused\): [0-9.]+ ms = [0-9.]+%$",
                     out, re.M)


def test_train_defaults_reach_095():
    out = run("train", "--quiet").stdout
    assert "20 epochs" in out
    assert _accuracy(out) >= 0.95


def test_train_reference_impl_runs():
    out = run("train", "--epochs", "2", "--impl", "reference", "--quiet").stdout
    assert "impl=reference" in out and "fastopt kernels (reference)" in out
    assert _accuracy(out) > 0.85


def test_save_and_resume_give_the_same_bits(tmp_path):
    # (a schedule that does not depend on --epochs: cosine and step stretch to the total)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    sched = ["--schedule", "exponential", "--quiet"]
    run("train", "--epochs", "4", "--save", str(a), *sched)
    run("train", "--epochs", "2", "--save", str(b), *sched)
    out = run("train", "--epochs", "4", "--resume", str(b), "--save", str(b), *sched).stdout
    assert "resumed from" in out and "after epoch 2" in out
    assert len(re.findall(r"^epoch +\d+ ", out, re.M)) == 2
    with np.load(a) as za, np.load(b) as zb:
        np.testing.assert_array_equal(za["params/data"], zb["params/data"])
        for k in za.files:
            if k.startswith("optimizer/state") or "running" in k:
                np.testing.assert_array_equal(za[k], zb[k])


@pytest.mark.parametrize("args,msg", [
    (["train", "--epochs", "0"], "positive integer"),
    (["train", "--epochs", "two"], "positive integer"),
    (["train", "--lr", "-1"], "positive finite number"),
    (["train", "--lr", "nan"], "positive finite number"),
    (["train", "--optimizer", "lbfgs"], "invalid choice"),
    (["train", "--schedule", "linear"], "invalid choice"),
    (["train", "--beta", "1.5"], "[0, 1)"),
    (["train", "--batch-size", "0"], "an integer >= 2"),
    (["tune", "--trials", "0"], "positive integer"),
    (["train", "--bogus"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_usage(args, msg):
    p = run(*args, check=False)
    assert p.returncode == 2
    assert "usage: fastopt" in p.stderr and msg in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_or_corrupt_checkpoint(tmp_path):
    p = run("train", "--epochs", "1", "--resume", str(tmp_path / "none.npz"), check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    p = run("train", "--epochs", "1", "--resume", str(bad), "--save", str(bad), check=False)
    assert p.returncode == 2 and "corrupt" in p.stderr and "Traceback" not in p.stderr
    assert bad.read_bytes() == b"garbage"


def test_plot(tmp_path):
    png = tmp_path / "curves.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        p = run("train", "--epochs", "1", "--plot", str(png), check=False)
        assert p.returncode == 2 and "needs matplotlib" in p.stderr
        assert not png.exists()
    else:
        out = run("train", "--epochs", "2", "--plot", str(png), "--quiet").stdout
        assert "saved plot" in out and png.stat().st_size > 1000


def test_tune_two_trials_prints_a_ranked_table(tmp_path):
    out = run("tune", "--trials", "2", "--epochs", "1", "--json", str(tmp_path / "t.json")).stdout
    rows = re.findall(r"^ +(\d) +([0-9.]+) +([0-9.e+-]+) +([0-9.]+) +(\d+) +(\d+) +[0-9.]+s$",
                      out, re.M)
    assert [r[0] for r in rows] == ["1", "2"]
    scores = [float(r[1]) for r in rows]
    assert scores[0] >= scores[1] and 0 <= scores[1] <= 1
    for r in rows:
        assert 1e-4 <= float(r[2]) <= 1e-1 and 32 <= int(r[4]) <= 512
        assert int(r[5]) in (32, 64, 128, 256, 512)
    assert "validation" in out and "best: fastopt train" in out
    import json
    assert len(json.loads((tmp_path / "t.json").read_text())) == 2


@pytest.mark.parametrize("args,msg", [
    (["train", "--batch-size", "1"], "--batch-size: expected an integer >= 2"),
    (["train", "--optimizer", "momentum", "--beta", "0"], "--optimizer momentum needs --beta in (0, 1)"),
    (["train", "--lr", "1e39"], "--lr = 1e+39 overflows float32"),
    (["train", "--save", "{tmp}/missing/ckpt.npz"], "directory {tmp}/missing does not exist"),
    (["train", "--save", "{tmp}"], "is a directory"),
    (["train", "--hidden", "1000000000"], "cannot build the model and optimizer"),
    (["tune", "--json", "{tmp}/missing/trials.json"], "directory {tmp}/missing does not exist"),
    (["tune", "--json", "{tmp}"], "is a directory"),
])
def test_bad_combinations_exit_2_before_training(tmp_path, args, msg):
    args = [a.format(tmp=tmp_path) for a in args]
    p = run(*args, "--epochs", "1", check=False)
    assert p.returncode == 2, p.stderr
    assert "usage: fastopt" in p.stderr and msg.format(tmp=tmp_path) in p.stderr
    assert "Traceback" not in p.stderr
    assert not re.search(r"^epoch +\d+ ", p.stdout, re.M) and "rank" not in p.stdout  # nothing ran


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes to read-only directories")
def test_unwritable_save_directory_exits_2_before_training(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        p = run("train", "--epochs", "1", "--save", str(ro / "c.npz"), check=False)
    finally:
        ro.chmod(0o700)
    assert p.returncode == 2 and "cannot create files" in p.stderr and "epoch" not in p.stdout


def _saved_run(tmp_path):
    from fastopt.cli.train import Run

    path = tmp_path / "r.npz"
    run_ = Run(optimizer="adam", lr=0.01, schedule="constant", epochs=1, batch_size=256, seed=0,
               hidden=16)
    run_.train_epoch()
    run_.save(path)
    fresh = Run(optimizer="adam", lr=0.01, schedule="constant", epochs=1, batch_size=256, seed=0,
                hidden=16)
    return path, fresh


@pytest.mark.parametrize("key,value,msg", [
    ("bn1__running_var", np.full(16, -1.0, np.float32), "running_var'] must be finite and >= 0"),
    ("bn2__running_mean", np.full(16, np.nan, np.float32), "running_mean'] is not finite"),
    ("rng_state", {"bit_generator": "PCG64", "state": 5}, "unusable extras"),
    ("history", [{"epoch": 1}], "history must be a list of records"),
    ("epoch", np.asarray(-1), "epoch must be >= 0"),
])
def test_resume_is_all_or_nothing(tmp_path, key, value, msg):
    from fastopt.train.checkpoint import CheckpointError

    path, fresh = _saved_run(tmp_path)
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    if isinstance(value, (dict, list)):  # (JSON values: their own namespace, see fastopt.checkpoint)
        entries[f"extra.json/{key}"] = np.asarray(json.dumps(value))
    else:
        entries[f"extra/{key}"] = np.asarray(value)
    with open(path, "wb") as f:
        np.savez(f, **entries)
    params, rng = fresh.model.params.data.copy(), fresh.rng.bit_generator.state
    bn = [(b.running_mean.copy(), b.running_var.copy()) for b in fresh.model.bns]
    with pytest.raises(CheckpointError, match=re.escape(msg)):
        fresh.resume(path)
    np.testing.assert_array_equal(fresh.model.params.data, params)
    assert fresh.opt.step_count == 0 and fresh.epochs_done == 0
    assert fresh.rng.bit_generator.state == rng
    for b, (m, v) in zip(fresh.model.bns, bn):
        np.testing.assert_array_equal(b.running_mean, m)
        np.testing.assert_array_equal(b.running_var, v)
    p = run("train", "--hidden", "16", "--epochs", "2", "--resume", str(path), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and msg in p.stderr


def test_train_max_grad_norm(tmp_path):
    out = run("train", "--epochs", "1", "--max-grad-norm", "0.5", "--quiet")
    assert "held-out accuracy" in out.stdout
    bad = run("train", "--max-grad-norm", "0", check=False)
    assert bad.returncode == 2 and "--max-grad-norm" in bad.stderr


@pytest.mark.parametrize("sd", ["int8", "float8"])
def test_train_state_dtype_int8_resumes_bit_identically(tmp_path, sd):
    """--state-dtype int8 / float8: the header reports the state's bytes per parameter, and a
    run resumed from its checkpoint ends with the same held-out figures as an uninterrupted one."""
    full = run("train", "--epochs", "2", "--state-dtype", sd, "--quiet", "--hidden", "96")
    assert f"optimizer state in {sd} for arrays of 4,096+ elements" in full.stdout
    ck = tmp_path / "c.npz"
    run("train", "--epochs", "1", "--state-dtype", sd, "--quiet", "--hidden", "96",
        "--save", str(ck))
    resumed = run("train", "--epochs", "2", "--state-dtype", sd, "--quiet", "--hidden", "96",
                  "--resume", str(ck))
    last = [ln.split("time")[0] for ln in full.stdout.splitlines() if ln.startswith("epoch   2")]
    again = [ln.split("time")[0] for ln in resumed.stdout.splitlines()
             if ln.startswith("epoch   2")]
    assert last and last == again
    mixed = run("train", "--epochs", "2", "--state-dtype", "bfloat16", "--quiet", "--hidden", "96",
                "--resume", str(ck), check=False)
    assert mixed.returncode == 2 and "state_dtype" in mixed.stderr
    bad = run("train", "--state-dtype", "float16", check=False)
    assert bad.returncode == 2 and "--state-dtype" in bad.stderr


def test_beta_is_refused_for_an_optimizer_without_one():
    # A --beta that would be ignored is refused: Adagrad has no beta (the registry says so).
    p = run("train", "--optimizer", "adagrad", "--beta", "0.5", "--epochs", "1", check=False)
    assert p.returncode == 2 and "--beta does not apply" in p.stderr and "epoch" not in p.stdout
