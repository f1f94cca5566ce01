"""fastopt.distributed under ``mpiexec -n 2`` and ``-n 3`` (3: uneven slices).

Each launch runs scenarios of ``mpi_child.py`` (which check their own results on every
rank) in its own session with a timeout: a hang is killed and reported as a failure, never
a hung CI.  Skipped where mpi4py or mpiexec is missing (``pip install '.[mpi]'``).
No timing thresholds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt

# Slow system tests (subprocesses): out of the quick loop, pytest -m "not slow".
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180

try:
    import mpi4py  # noqa: F401  (not mpi4py.MPI: that would initialize MPI in pytest)
except ImportError:
    mpi4py = None


def _mpiexec():
    here = Path(sys.executable).with_name("mpiexec")
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(mpi4py is None or MPIEXEC is None,
                                reason="needs mpi4py and mpiexec: pip install '.[mpi]'")


#: Messages of mpiexec failing to start (no rank ran): launch tries again, up to 3 times
_LAUNCHER_FAILURES = ("The PMIx server's listener thread failed to start",)


def launch(n, args, timeout=TIMEOUT, expect_ok=True, module=None):
    """``mpiexec -n n python <mpi_child.py | -m module> args``: (returncode, stdout, stderr)."""
    cmd = [MPIEXEC, "-n", str(n)]
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "FASTOPT_"))}
    if "Open MPI" in version or "OpenRTE" in version:
        cmd.append("--oversubscribe")          # 3 ranks on a 2-core CI machine
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")]
                                        + ([env["PYTHONPATH"]] if "PYTHONPATH" in env else []))
    cmd += [sys.executable] + (["-m", module] if module else [str(ROOT / "tests" / "mpi_child.py")])
    cmd += list(args)
    for _ in range(3):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"hang: {' '.join(cmd[1:])} still running after {timeout} s\n{out}\n"
                        f"{err}", pytrace=False)
        # (the launcher itself failing before any rank ran: Open MPI 5's PRRTE once failed to
        # start its PMIx listener thread in a CI run, 2026-12-06; the same test then passed)
        if proc.returncode == 0 or not any(m in err for m in _LAUNCHER_FAILURES):
            break
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}\n{out}\n{err}", pytrace=False)
    return proc.returncode, out, err


SCENARIOS = ["deterministic", "weighted", "allreduce_100_steps", "zero1_rank_order", "buckets",
             "state_memory", "zero1_every_feature", "zero1_clip_without_nan",
             "lists_and_dicts", "state_dicts", "checkpoints", "mismatches", "small_and_threads",
             "threads_restored",
             "low_precision_state", "resume_keeps_everything", "weighting_mismatch",
             "attributes"]

SHAPES = {"W1": (300, 170), "b1": (170,), "W2": (170, 7), "b2": (7,)}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    """A directory with a checkpoint written by one process, for the MPI runs to load."""
    d = tmp_path_factory.mktemp("mpi")
    fp = fastopt.FlatParams(SHAPES)
    fp.data[...] = np.random.default_rng(0).standard_normal(fp.size)
    opt = fastopt.Adam(fp, lr=0.01)
    for s in range(2):
        fp.grad[...] = np.random.default_rng(s).standard_normal(fp.size)
        opt.step()
    fastopt.save_checkpoint(d / "single.npz", fp, opt, epoch=2)
    np.savez(d / "single_expected.npz", data=fp.data, exp_avg_sq=opt.state["exp_avg_sq"][0])
    return d


@pytest.fixture(scope="module", params=[pytest.param(2, id="n=2"), pytest.param(3, id="n=3")])
def mpi_run(request, ckpt_dir):
    n = request.param
    _, out, err = launch(n, [f"--dir={ckpt_dir}"] + SCENARIOS)
    result = json.loads(next(line[len("result "):] for line in out.splitlines()
                             if line.startswith("result ")))
    return n, out, result, ckpt_dir


@needs_mpi
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(mpi_run, scenario):
    n, out, _, _ = mpi_run
    assert any(line.startswith(f"ok {scenario}") for line in out.splitlines()), out


@needs_mpi
def test_sharded_state_is_one_pth_per_rank(mpi_run):
    n, _, result, _ = mpi_run
    per_rank, full = result["state_bytes"], result["full_state_bytes"]
    assert len(per_rank) == n and sum(per_rank) == full
    block = 16_384 * 2 * 4          # Adam: 2 float32 buffers per element
    assert max(per_rank) <= full / n + block


@needs_mpi
def test_each_rank_gets_its_share_of_the_cores(mpi_run):
    n, _, result, _ = mpi_run
    threads = result["threads"]
    assert len(threads) == n and min(threads) >= 1
    assert sum(threads) <= max(n, os.cpu_count())


@needs_mpi
def test_checkpoint_of_a_sharded_run_loads_in_one_process(mpi_run):
    n, _, _, d = mpi_run
    fp = fastopt.FlatParams(SHAPES)
    opt = fastopt.Adam(fp, lr=0.01)
    extras = fastopt.load_checkpoint(d / f"ckpt{n}.npz", fp, opt)
    assert extras == {"epoch": 3, "note": "from mpi"}
    expected = np.load(d / f"expected{n}.npz")
    np.testing.assert_array_equal(fp.data, expected["data"])
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(opt.state[name][0], expected[name])
    assert opt.step_count == 3


@needs_mpi
def test_checkpoint_of_a_sharded_run_with_every_feature_loads_in_one_process(mpi_run):
    # ZeRO-1 with parameter groups, clipping, the guard and int8 state: the gathered file is
    # the state one optimizer over the whole model holds (its state dict, bit for bit)
    import pickle

    n, _, _, d = mpi_run
    fp = fastopt.FlatParams(SHAPES)
    opt = fastopt.AdamW(fp, lr=0.01, weight_decay=0.3, max_grad_norm=5.0, skip_nonfinite=True,
                        state_dtype="int8", min_lowbit_size=100,
                        groups=[{"params": ["b1", "b2"], "weight_decay": 0.0, "lr": 0.02}])
    assert fastopt.load_checkpoint(d / f"features{n}.npz", fp, opt) == {"epoch": 4}
    np.testing.assert_array_equal(fp.data, np.load(d / f"features_data{n}.npy"))
    want = pickle.loads((d / f"features_sd{n}.pkl").read_bytes())
    got = opt.state_dict()
    for key in ("step", "skipped_steps", "groups", "hyper", "state_dtype"):
        assert got[key] == want[key], key
    assert got["step"] == 3 and got["skipped_steps"] == 1
    for name, entries in want["state"].items():
        assert len(got["state"][name]) == len(entries) == len(opt.state_runs)
        for a, b in zip(got["state"][name], entries):
            if isinstance(b, dict):
                for f, v in b.items():
                    if isinstance(v, np.ndarray):
                        np.testing.assert_array_equal(a[f], v)
                    else:
                        assert a[f] == v
            else:
                np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ faults: no hang, non-zero exit

@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_an_exception_on_one_rank_aborts_the_job(n):
    rc, out, err = launch(n, ["fault_exception"], timeout=90, expect_ok=False)
    assert rc != 0
    assert f"uncaught RuntimeError on rank {n - 1}" in err and "boom on the last rank" in err, err


@needs_mpi
def test_different_layouts_fail_on_every_rank():
    rc, out, err = launch(2, ["fault_layout"], timeout=90, expect_ok=False)
    assert rc != 0
    assert "DistributedError" in err and "differ" in err and "W9" in err, err


@needs_mpi
def test_a_rank_that_never_arrives_is_a_timeout_not_a_hang():
    rc, out, err = launch(2, ["fault_hang"], timeout=90, expect_ok=False)
    assert rc != 0
    assert "waited more than 2 s" in err and "rank 0 of 2" in err, err


STUCK = {"construct": "DataParallel()", "average_buffers": "average_buffers",
         "verify_parameters": "verify_parameters", "load_state_dict": "load_state_dict",
         "save_checkpoint": "save_checkpoint", "load_checkpoint": "load_checkpoint"}


@needs_mpi
@pytest.mark.parametrize("where", list(STUCK))
def test_a_stuck_rank_is_a_timeout_in_every_collective(where, tmp_path):
    # DataParallel(timeout=2): every collective it (or a distributed checkpoint) makes is
    # guarded, so a rank that never arrives ends the job instead of hanging the others.
    rc, out, err = launch(2, [f"--dir={tmp_path}", f"fault_stuck_{where}"], timeout=90,
                          expect_ok=False)
    assert rc != 0
    waiting = 1 if where == "load_checkpoint" else 0     # (there the root is the stuck one)
    assert f"rank {waiting} of 2 waited more than 2 s in {STUCK[where]}" in err, err


# ------------------------------------------------------------------ the command line

def _accuracy(out):
    return float(next(line.split()[-1] for line in out.splitlines()
                      if line.startswith("held-out accuracy")))


@needs_mpi
def test_train_distributed_matches_one_process_and_resumes_anywhere(tmp_path):
    ckpt = tmp_path / "d.npz"
    args = ["train", "--epochs", "4", "--quiet"]
    single = subprocess.run([sys.executable, "-m", "fastopt.cli", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert single.returncode == 0, single.stderr
    _, out, err = launch(2, [*args, "--distributed", "--shard-state", "--save", str(ckpt)],
                         module="fastopt.cli")
    assert "2 ranks" in out and "ZeRO-1" in out, out
    assert out.count("held-out accuracy") == 1          # rank 0 prints, the others stay quiet
    assert abs(_accuracy(out) - _accuracy(single.stdout)) <= 0.02, (out, single.stdout)
    # the 2-rank checkpoint continues in one process (world size 1) and under 3 ranks
    one = subprocess.run([sys.executable, "-m", "fastopt.cli", "train", "--epochs", "5",
                          "--quiet", "--resume", str(ckpt)], cwd=ROOT, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    assert "resumed from" in one.stdout and "epoch   5" in one.stdout, one.stdout
    _, out3, _ = launch(3, ["train", "--epochs", "5", "--quiet", "--distributed",
                            "--resume", str(ckpt)], module="fastopt.cli")
    assert "resumed from" in out3 and "epoch   5" in out3, out3


def _epoch_line(out, epoch):
    """The numbers of one epoch's line (not its times): loss, acc, test loss, test acc."""
    line = next(x for x in out.splitlines() if x.startswith(f"epoch {epoch:3d}"))
    return line.split("  time")[0]


@needs_mpi
@pytest.mark.parametrize("n", [1, 2])
def test_train_distributed_int8_resumes_as_if_never_stopped(n, tmp_path):
    # a plain DataParallel loads its own int8 state (it exited 2 "does not fit"); the
    # resumed run continues bit for bit (deterministic), parameter groups and all
    ckpt = tmp_path / "c.npz"
    base = ["train", "--quiet", "--state-dtype", "int8", "--hidden", "64", "--schedule",
            "constant", "--distributed", "--deterministic"]
    launch(n, [*base, "--epochs", "2", "--save", str(ckpt)], module="fastopt.cli")
    _, resumed, _ = launch(n, [*base, "--epochs", "3", "--resume", str(ckpt)],
                           module="fastopt.cli")
    assert f"resumed from {ckpt} after epoch 2" in resumed, resumed
    _, straight, _ = launch(n, [*base, "--epochs", "3"], module="fastopt.cli")
    assert _epoch_line(resumed, 3) == _epoch_line(straight, 3), (resumed, straight)


@needs_mpi
def test_bench_distributed_quick():
    _, out, err = launch(2, ["bench", "--distributed", "--quick"], module="fastopt.cli")
    for needle in ("allreduce", "GB/s", "compute", "communication", "optimizer",
                   "state per rank", "ZeRO-1", "Gb/s"):
        assert needle in out, (needle, out)
    from fastopt.runtime import machine
    assert out.splitlines()[1] == f"cpu: {machine.describe()}", out


@needs_mpi
@pytest.mark.parametrize("where,what", [
    ("start", "fastopt bench --distributed"),
    ("timing", "fastopt bench --distributed: timing a collective"),
    ("step", "DataParallel()")])
def test_bench_distributed_stuck_rank_is_a_timeout_not_a_hang(where, what):
    # Before: the benchmark's collectives had no timeout; a stuck rank hung the job.
    rc, out, err = launch(2, [f"fault_bench_{where}"], timeout=120, expect_ok=False)
    assert rc != 0
    assert f"rank 0 of 2 waited more than 2 s in {what}" in err, err


def test_without_mpi4py_the_error_says_what_to_install(tmp_path):
    # a module named mpi4py that fails to import stands for a machine without it
    (tmp_path / "mpi4py").mkdir()
    (tmp_path / "mpi4py" / "__init__.py").write_text("raise ImportError('no MPI here')\n")
    code = ("import fastopt, fastopt.distributed as d\n"
            "try:\n    d.DataParallel(fastopt.Adam(fastopt.FlatParams({'w': (2,)})))\n"
            "except ImportError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert "pip install 'fastopt[mpi]'" in p.stdout, p.stdout + p.stderr


@needs_mpi
def test_docs_example_under_mpiexec(tmp_path):
    # docs/guide/distributed.rst's script (tests/test_docs.py runs the docs' other examples)
    from docs_examples import DOCS, rst_blocks

    block = next(b for b in rst_blocks(DOCS / "guide" / "distributed.rst") if "DataParallel(" in b)
    script = tmp_path / "example.py"
    script.write_text(block)
    # (launch() runs mpi_child.py or a module: tests/fastopt_run_path.py runs the file)
    _, out, err = launch(2, ["runpy", "run_path", str(script)], module="fastopt_run_path")
    assert float(out.split()[-1]) >= 0.98, out


def _raw_comm_uses(source):
    """Uses of a raw communicator attribute (``self.comm``, ``optimizer.comm``) other than
    setting it and the local queries (``.Get_rank()``, ``.Get_size()``): a collective made
    through one would escape the timeout guard."""
    import ast

    tree = ast.parse(source)
    allowed = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ("Get_rank", "Get_size")
                and isinstance(node.value, ast.Attribute)):
            allowed.add(id(node.value))
        elif isinstance(node, ast.Assign):
            allowed.update(id(t) for t in node.targets)
    return sorted((node.lineno, ast.unparse(node)) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "comm"
            and id(node) not in allowed)


@pytest.mark.parametrize("name", ["parallel.py", "checkpoint.py", "syncbn.py"])
def test_no_collective_escapes_the_guard(name):
    # DataParallel and the checkpoints make their collectives through the guarded communicator
    # (the stuck-rank tests above check that it works); the public ``dp.comm`` is raw.
    source = (ROOT / "fastopt" / "distributed" / name).read_text()
    assert _raw_comm_uses(source) == []
    control = ("self.comm = comm\nn = self.comm.Get_size()\nself.comm.Allreduce(x)\n"
               "c = optimizer.comm\n")
    assert _raw_comm_uses(control) == [(3, "self.comm"), (4, "optimizer.comm")]


def test_a_state_dict_crosses_as_its_structure_and_its_arrays():
    # load_state_dict sends a state_dict as a pickled skeleton plus each array as bytes:
    # every state format's entries (dicts of arrays), read-only and strided arrays included
    from fastopt.distributed.parallel import _fill, _hollow

    ro = np.arange(6, dtype=np.float32)
    ro.flags.writeable = False
    sd = {"type": "Adam", "step": 3, "hyper": {"lr": 0.1, "betas": (0.9, 0.999)},
          "groups": [{}, {"weight_decay": 0.0}], "skipped_steps": 1,
          "state": {"exp_avg": [ro, np.ones((4, 4))[:, ::2]],
                    "exp_avg_sq": [{"format": "int8", "block": 256, "map": "unsigned",
                                    "codes": np.arange(5, dtype=np.uint8),
                                    "absmax": np.ones(1, np.float32)}, np.zeros(0)]}}
    arrays = []
    skeleton = _hollow(sd, arrays)
    assert len(arrays) == 5 and all(a.flags.c_contiguous and a.flags.writeable for a in arrays)
    import pickle
    skeleton = pickle.loads(pickle.dumps(skeleton))
    back = _fill(skeleton, [a.copy() for a in arrays])
    assert back["hyper"] == sd["hyper"] and back["groups"] == sd["groups"]
    assert back["skipped_steps"] == 1 and back["step"] == 3
    np.testing.assert_array_equal(back["state"]["exp_avg"][0], ro)
    np.testing.assert_array_equal(back["state"]["exp_avg"][1], np.ones((4, 2)))
    entry = back["state"]["exp_avg_sq"][0]
    assert {k: v for k, v in entry.items() if not isinstance(v, np.ndarray)} == \
        {"format": "int8", "block": 256, "map": "unsigned"}
    np.testing.assert_array_equal(entry["codes"], np.arange(5, dtype=np.uint8))
    assert back["state"]["exp_avg_sq"][1].shape == (0,)
