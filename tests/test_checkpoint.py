import io
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastopt
from fastopt.optim import SPECS
from fastopt.train.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def _model():
    fp = fastopt.FlatParams({"W": (20, 5), "b": (5,)})
    fp.data[...] = np.random.default_rng(0).standard_normal(fp.size).astype(np.float32)
    return fp


def _train(fp, opt, steps, start=0):
    for t in range(start, start + steps):
        fp.grad[...] = np.random.default_rng(t).standard_normal(fp.size).astype(np.float32) + fp.data
        opt.step()


# every optimizer of the registry (those with state by default: SGD's comes with momentum)
@pytest.mark.parametrize("cls", [s.cls for s in SPECS.values() if s.name != "sgd"])
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


# ------------------------------------------------------------------ damaged files: all or nothing

def _saved(tmp_path, **extra):
    """A checkpoint of an Adam model after 2 steps, and a fresh model + optimizer to load into."""
    path = tmp_path / "c.npz"
    fp = _model()
    opt = fastopt.Adam(fp, lr=0.01)
    _train(fp, opt, 2)
    fastopt.save_checkpoint(path, fp, opt, epoch=2, history=[{"loss": 1.0}], **extra)
    fp2 = fastopt.FlatParams({"W": (20, 5), "b": (5,)})
    fp2.data[...] = 7.0
    opt2 = fastopt.Adam(fp2, lr=0.5)
    return path, fp2, opt2


def _entries(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _rewrite(path, entries):
    with open(path, "wb") as f:
        np.savez(f, **entries)


def _write_members(z, entries, raw=(), skip=()):
    """Write ``entries`` (name -> array) into the open zip ``z`` as ``name.npy`` members, in
    order, as NumPy writes them; a name in ``raw`` (name -> bytes) gets those bytes instead, a
    name in ``skip`` no member."""
    raw = dict(raw)
    for k, v in entries.items():
        if k in raw:
            z.writestr(k + ".npy", raw[k])
        elif k not in skip:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, v)
            z.writestr(k + ".npy", buf.getvalue())


def _edit_meta(path, **change):
    e = _entries(path)
    meta = json.loads(str(e["optimizer/meta"]))
    meta.update(change)
    for k, v in change.items():
        if v is None:
            del meta[k]
    e["optimizer/meta"] = np.asarray(json.dumps(meta))
    _rewrite(path, e)


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _huge_declared_shape(path):
    # A 3 KB file whose params/data header declares 2**50 float32 (4 PiB).
    e = _entries(path)
    with zipfile.ZipFile(path, "w") as z:
        _write_members(z, e, raw={"params/data": _npy_header((2**50,)) + b"\0" * 12})


def _corrupt_deflate(path):
    e = _entries(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        _write_members(z, e)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params/data.npy")
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        f.write(b"\xff")  # deflate block type 3 does not exist: zlib.error


def _overlapping_entries(path):
    # A stored zip whose directory lists params/data 50 more times, every time pointing at its one
    # copy of the bytes: a small file that asks for 51 arrays' worth of memory.
    out, central = io.BytesIO(), []
    for key, value in _entries(path).items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, value)
        data, name = buf.getvalue(), (key + ".npy").encode()
        offset, crc = out.tell(), zlib.crc32(data)
        out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data),
                              len(data), len(name), 0) + name + data)
        record = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data),
                             len(data), len(name), 0, 0, 0, 0, 0, offset) + name
        central += [record] * (51 if key == "params/data" else 1)
    directory, start = b"".join(central), out.tell()
    out.write(directory + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(central), len(central),
                                      len(directory), start, 0))
    path.write_bytes(out.getvalue())
    with zipfile.ZipFile(path) as z:
        assert [i.filename for i in z.infolist()].count("params/data.npy") == 51


DAMAGE = {
    # what each raised before instead of CheckpointError, and whether params had changed
    "corrupt json extra (JSONDecodeError, after loading)":
        lambda p: _rewrite(p, {**_entries(p), "extra.json/history": np.asarray("[{\"loss\": 1.")}),
    "json extra is not a string":
        lambda p: _rewrite(p, {**_entries(p), "extra.json/history": np.arange(3)}),
    "an extra stored twice":
        lambda p: _rewrite(p, {**_entries(p), "extra/history": np.asarray(1.0)}),
    "meta state is a list (AttributeError)": lambda p: _edit_meta(p, state=[]),
    "meta without epoch (KeyError)": lambda p: _edit_meta(p, epoch=None),
    "meta hyper is a list (TypeError)": lambda p: _edit_meta(p, hyper=["betas"]),
    "meta is not a dict (TypeError)":
        lambda p: _rewrite(p, {**_entries(p), "optimizer/meta": np.asarray("[1, 2]")}),
    "huge declared array (MemoryError)": _huge_declared_shape,
    "corrupt deflate stream (zlib.error)": _corrupt_deflate,
    "format is an array": lambda p: _rewrite(p, {**_entries(p), "fastopt/format": np.arange(2)}),
    "layout item is not a pair": lambda p: _rewrite(
        p, {**_entries(p), "params/layout": np.asarray('[["W", 20, 5]]')}),
    "step beyond the kernels' counter": lambda p: _edit_meta(p, step=2**63),
    "state count is not an int": lambda p: _edit_meta(p, state={"exp_avg": "1", "exp_avg_sq": 1}),
    "entries overlapping in the file": _overlapping_entries,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_is_a_checkpoint_error_and_changes_nothing(tmp_path, damage):
    path, fp, opt = _saved(tmp_path)
    DAMAGE[damage](path)
    data, sd = fp.data.copy(), opt.state_dict()
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\")):
        fastopt.load_checkpoint(path, fp, opt)
    np.testing.assert_array_equal(fp.data, data)
    assert opt.state_dict()["step"] == sd["step"] and opt.lr == 0.5
    for n in sd["state"]:
        np.testing.assert_array_equal(opt.state[n][0], sd["state"][n][0])


def test_huge_declared_array_is_refused_before_allocating(tmp_path):
    path, fp, opt = _saved(tmp_path)
    _huge_declared_shape(path)
    assert path.stat().st_size < 10_000
    with pytest.raises(CheckpointError, match=r"declares shape \(1125899906842624,\) of float32"):
        fastopt.load_checkpoint(path, fp, opt)


def _bomb(path, key, nbytes):
    """Rewrite the checkpoint at ``path`` compressed (DEFLATE), with entry ``key`` replaced by
    ``nbytes`` of float32 zeros: a file of about nbytes / 1000 that declares nbytes."""
    e = _entries(path)
    header = _npy_header((nbytes // 4,))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        _write_members(z, e, skip={key})
        with z.open(key + ".npy", "w", force_zip64=True) as f:
            f.write(header)
            for start in range(0, nbytes, 1 << 20):
                f.write(bytes(min(1 << 20, nbytes - start)))


@pytest.mark.parametrize("key,msg", [
    ("params/data", r"params/data has shape \(25000000,\), expected \(105,\)"),
    ("optimizer/state/exp_avg/0", r"declares 100000420 bytes of optimizer state; a Adam of 105 "
                                  r"float32 parameters keeps at most 1049416"),
    ("extra/stats", r"corrupt or not a fastopt checkpoint: its metadata and extras declare "
                    r"1000\d{5} bytes"),
    ("optimizer/meta", r"its metadata and extras declare 1000\d{5} bytes"),
])
def test_small_compressed_file_declaring_a_huge_array_is_refused_before_allocating(tmp_path, key,
                                                                                  msg):
    # 100 MB declared in a 0.1 MB file, for a 105-parameter model: refused from the headers,
    # before anything near that size is allocated (before: allocated and filled, then refused).
    path, fp, opt = _saved(tmp_path, stats=np.arange(4.0))
    _bomb(path, key, 100_000_000)
    assert path.stat().st_size < 200_000
    data, sd = fp.data.copy(), opt.state_dict()
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=msg):
            fastopt.load_checkpoint(path, fp, opt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000
    np.testing.assert_array_equal(fp.data, data)
    assert opt.step_count == sd["step"] == 0


def test_compressed_checkpoint_loads(tmp_path):
    # fastopt writes stored (uncompressed) entries; a file compressed by other tools loads too.
    path, fp, opt = _saved(tmp_path, stats=np.zeros(50_000))   # 400 kB of zeros: compressed 99%
    e = _entries(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        _write_members(z, e)
    assert path.stat().st_size < 10_000
    extras = fastopt.load_checkpoint(path, fp, opt)
    np.testing.assert_array_equal(extras["stats"], np.zeros(50_000))
    np.testing.assert_array_equal(fp.data, e["params/data"])
    assert opt.step_count == 2


# ------------------------------------------------------------------ extras round-trip exactly

def _reload_extras(directory, **extra):
    fp = fastopt.FlatParams({"w": (3,)})
    opt = fastopt.SGD(fp, lr=0.1)
    path = os.path.join(directory, "c.npz")
    fastopt.save_checkpoint(path, fp, opt, **extra)
    return fastopt.load_checkpoint(path, fp, opt)


def test_string_extras_that_look_encoded_come_back_as_strings(tmp_path):
    # Before: "json:..." strings came back decoded, or made the file unloadable.
    strings = {"a": "json:[1, 2]", "b": "json:{", "c": 'json:"x"', "d": "json:", "e": "",
               "f": "extra.json/x", "g": "trailing NUL\0", "h": "\0", "i": "\ud800 lone surrogate"}
    nested = {"k": ["json:1", {"json:2": "json:{"}]}
    extras = _reload_extras(tmp_path, **strings, nested=nested, none=None)
    assert extras == {**strings, "nested": nested, "none": None}
    assert all(type(extras[k]) is str for k in strings)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False) | st.text(st.characters(codec=None)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(codec=None), max_size=8), inner, max_size=4),
    max_leaves=12)
_prefixed = st.sampled_from(["json:", "extra.json/", "extra/", "\0", ""]).flatmap(
    lambda prefix: st.text(st.characters(codec=None)).map(lambda t: prefix + t))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
                       _prefixed | st.text(st.characters(codec=None)) | _json, max_size=5))
def test_extras_round_trip_exactly(extras):
    with tempfile.TemporaryDirectory() as d:
        got = _reload_extras(d, **extras)
    assert got == extras
    assert repr(got) == repr(extras)   # (types and float signs included: -0.0 is not 0.0 here)


@pytest.mark.parametrize("key", ["a\0b", "\udc80"])
def test_extra_keys_a_file_cannot_hold_are_refused_before_writing(tmp_path, key):
    # Before: "a\0b" wrote a checkpoint that could not be loaded; "\udc80" raised UnicodeEncodeError.
    fp = fastopt.FlatParams({"w": (3,)})
    with pytest.raises(ValueError, match="extra key .* cannot be stored"):
        fastopt.save_checkpoint(tmp_path / "c.npz", fp, fastopt.SGD(fp, lr=0.1), **{key: 1})
    assert os.listdir(tmp_path) == []


def test_extra_keys_round_trip(tmp_path):
    keys = ["a/b", "", "x.npy", "ü", "../x", "extra.json/y", "k" * 300]
    extras = _reload_extras(tmp_path, **{k: i for i, k in enumerate(keys)}, s="t")
    assert extras == {**{k: i for i, k in enumerate(keys)}, "s": "t"}


def test_format_1_files_still_load(tmp_path):
    # As written by the previous version: format 1, JSON extras as "json:"-prefixed strings.
    path, fp, opt = _saved(tmp_path)
    e = _entries(path)
    e["fastopt/format"] = np.asarray(1)
    del e["extra.json/history"]
    e["extra/history"] = np.asarray('json:[{"loss": 1.0}]')
    e["extra/note"] = np.asarray("json: not JSON, so a plain string")
    e["extra/text"] = np.asarray("plain")
    _rewrite(path, e)
    extras = fastopt.load_checkpoint(path, fp, opt)
    assert extras == {"epoch": 2, "history": [{"loss": 1.0}],
                      "note": "json: not JSON, so a plain string", "text": "plain"}
    assert opt.step_count == 2


def _failing_after_5(epoch):
    if epoch > 5:
        raise OverflowError("no lr after epoch 5")
    return 0.01


def test_schedule_failing_at_the_saved_epoch_changes_nothing(tmp_path):
    path = tmp_path / "c.npz"
    fp = _model()
    opt = fastopt.SGD(fp, lr=0.01, momentum=0.9)
    _train(fp, opt, 2)
    opt.set_epoch(9)
    fastopt.save_checkpoint(path, fp, opt)
    fp2 = _model()
    fp2.data[...] = 3.0
    opt2 = fastopt.SGD(fp2, lr=_failing_after_5, momentum=0.9)
    with pytest.raises(CheckpointError, match="failed at epoch 9: OverflowError"):
        fastopt.load_checkpoint(path, fp2, opt2)
    np.testing.assert_array_equal(fp2.data, 3.0)
    assert opt2.step_count == 0 and opt2.epoch == 1 and not opt2.state["momentum_buf"][0].any()


def test_check_callback_sees_the_extras_before_anything_changes(tmp_path):
    path, fp, opt = _saved(tmp_path, note="hello")
    seen = []

    def check(extras):
        seen.append(dict(extras))
        np.testing.assert_array_equal(fp.data, 7.0)   # nothing loaded yet
        raise KeyError("rng_state")

    with pytest.raises(CheckpointError, match="unusable extras: KeyError"):
        fastopt.load_checkpoint(path, fp, opt, check=check)
    assert seen[0]["note"] == "hello" and seen[0]["epoch"] == 2
    np.testing.assert_array_equal(fp.data, 7.0)
    assert opt.step_count == 0
    assert fastopt.load_checkpoint(path, fp, opt, check=lambda e: None)["note"] == "hello"
    assert opt.step_count == 2


def test_load_checks_its_arguments(tmp_path):
    path, fp, opt = _saved(tmp_path)
    with pytest.raises(TypeError, match="params must be a FlatParams"):
        fastopt.load_checkpoint(path, fp.data, opt)
    with pytest.raises(TypeError, match="optimizer must be a fastopt optimizer"):
        fastopt.load_checkpoint(path, fp, {"lr": 0.1})


def test_a_directory_is_not_a_checkpoint(tmp_path):
    fp = _model()
    with pytest.raises(CheckpointError, match="is not a file"):
        fastopt.load_checkpoint(tmp_path, fp, fastopt.Adam(fp))


# ------------------------------------------------------------------ leftovers and permissions

_WRITER = """
import os, signal, sys, time
import numpy as np
import fastopt
fp = fastopt.FlatParams({"w": (100_000,)})
fp.data[...] = 1.0
opt = fastopt.Adam(fp)
def stop(fd):  # the temporary file is complete: die (or hang) before the rename
    print("written", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
os.fsync = stop
fastopt.save_checkpoint(sys.argv[1], fp, opt)
"""


def _writer(path, mode):
    """A process that writes a checkpoint to path and is killed (or hangs) before the rename."""
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), mode], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    assert p.stdout.readline() == "written\n"
    return p


def _temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".fastopt-tmp"))


def test_next_save_removes_what_killed_writers_left(tmp_path):
    path = tmp_path / "ckpt.npz"
    fp = _model()
    opt = fastopt.Adam(fp)
    for _ in range(3):
        w = _writer(path, "kill")
        w.wait()
        # a full-size leftover, but only the last one: each writer removed its predecessor's
        (left,) = _temporaries(tmp_path)
        assert os.path.getsize(tmp_path / left) > 400_000
    other = tmp_path / "other.npz"                          # another target's leftover stays
    w = _writer(other, "kill")
    w.wait()
    (tmp_path / ".ckpt.npz.notes").write_text("not ours")   # so does anything not ours
    fastopt.save_checkpoint(path, fp, opt)
    assert _temporaries(tmp_path) == [n for n in _temporaries(tmp_path) if n.startswith(".other")]
    assert len(_temporaries(tmp_path)) == 1 and (tmp_path / ".ckpt.npz.notes").exists()
    fastopt.load_checkpoint(path, fastopt.FlatParams({"W": (20, 5), "b": (5,)}), fastopt.Adam(
        fastopt.FlatParams({"W": (20, 5), "b": (5,)})))


def test_a_live_writer_keeps_its_file_and_other_hosts_files_expire(tmp_path):
    path = tmp_path / "ckpt.npz"
    fp = _model()
    opt = fastopt.Adam(fp)
    w = _writer(path, "hang")
    try:
        (live,) = _temporaries(tmp_path)
        fastopt.save_checkpoint(path, fp, opt)
        assert _temporaries(tmp_path) == [live]       # its writer is still running
    finally:
        w.kill()
        w.wait()
    # The name is .<target>.<host>.<pid>.<random>.fastopt-tmp: as if written on other hosts,
    # where the process cannot be asked about, only the age counts (a day without a write).
    parts = live.split(".")
    host_at = len(".ckpt.npz".split("."))
    fresh = ".".join(parts[:host_at] + ["otherhost"] + parts[host_at + 1:])
    old = ".".join(parts[:host_at] + ["oldhost"] + parts[host_at + 1:])
    os.rename(tmp_path / live, tmp_path / fresh)
    (tmp_path / old).write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(tmp_path / old, (two_days_ago, two_days_ago))
    fastopt.save_checkpoint(path, fp, opt)
    assert _temporaries(tmp_path) == [fresh]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_honours_the_umask(tmp_path, umask, mode):
    fp = _model()
    old = os.umask(umask)
    try:
        fastopt.save_checkpoint(tmp_path / "c.npz", fp, fastopt.Adam(fp))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "c.npz").st_mode) == mode
