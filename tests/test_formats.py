"""The state formats (:mod:`fastopt.optim.formats`): dense, bfloat16, int8 and float8 as equal members
of one protocol, and the state objects' buffers fixed once the compiled tables point at them."""

import numpy as np
import pytest

import fastopt
from fastopt.optim import formats
from fastopt.optim.lowstate import BFloat16State, Float8State, Int8State

NAMES = ("float32", "bfloat16", "int8", "float8")


def test_the_registry_names_every_state_dtype():
    assert list(formats.FORMATS) == list(fastopt.optim.lowstate.STATE_DTYPES)
    assert [formats.get(n).name for n in NAMES] == list(NAMES)
    assert formats.get("float32") is formats.DENSE and not formats.DENSE.compact
    assert formats.BFLOAT16.compact and formats.INT8.compact
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        formats.get("float16")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("signed", [True, False])
def test_each_format_round_trips_through_its_entry(rng, name, signed):
    fmt = formats.get(name)
    p = rng.standard_normal((20, 30)).astype(np.float32)
    e = fmt.zeros(p.shape, p.dtype, signed, like=p, k=1)
    assert np.array_equal(fmt.values(e), np.zeros(p.shape, np.float32))
    assert fmt.values(e).shape == p.shape
    rows = fmt.rows(e)
    assert fmt.nbytes(e) == sum(r.nbytes for r in rows)
    # fill the rows with a state a kernel could have written, and carry it over by entry
    for r in rows:
        r[...] = (rng.integers(0, 200, r.shape) if r.dtype.kind == "u"
                  else np.abs(rng.standard_normal(r.shape))).astype(r.dtype)
    other = fmt.zeros(p.shape, p.dtype, signed, like=p, k=2)
    fmt.load(other, fmt.check_entry("state x[0]", other, fmt.entry(e)))
    for a, b in zip(fmt.rows(e), fmt.rows(other)):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(fmt.values(e), np.asarray(e))


@pytest.mark.parametrize("name", NAMES)
def test_a_refused_entry_names_the_buffer_and_changes_nothing(rng, name):
    fmt = formats.get(name)
    e = fmt.zeros((300,), np.dtype(np.float32), True)
    before = [r.copy() for r in fmt.rows(e)]
    wrong = formats.get(NAMES[(NAMES.index(name) + 1) % len(NAMES)])
    bad = wrong.entry(wrong.zeros((300,), np.dtype(np.float32), True))
    short = fmt.entry(fmt.zeros((299,), np.dtype(np.float32), True))
    for src in (bad, short):
        with pytest.raises(ValueError, match=r"state m\[3\]"):
            fmt.check_entry("state m[3]", e, src)
    for a, b in zip(before, fmt.rows(e)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sd, field", [("bfloat16", "bits"), ("bfloat16", "flat_bits"),
                                       ("int8", "codes"), ("int8", "absmax"),
                                       ("int8", "flat_codes"), ("int8", "tables"),
                                       ("float8", "codes"), ("float8", "absmax"),
                                       ("float8", "flat_codes"), ("float8", "code")])
def test_state_buffers_refuse_rebinding(rng, sd, field):
    # Rebinding a buffer used to detach it silently from the compiled tables: the step kept
    # updating the old array while opt.state showed the new one.
    P = [rng.standard_normal(5000).astype(np.float32)]
    opt = fastopt.Adam(P, lr=1e-2, state_dtype=sd)
    s = opt.state["exp_avg"][0]
    assert isinstance(s, {"bfloat16": BFloat16State, "int8": Int8State,
                          "float8": Float8State}[sd])
    old = getattr(s, field)
    with pytest.raises(AttributeError, match=f"{field} cannot be rebound"):
        setattr(s, field, old.copy() if hasattr(old, "copy") else old)
    assert getattr(s, field) is old
    opt.step([np.ones(5000, np.float32)])
    assert np.asarray(s).any()      # the step updated the buffers opt.state shows


def test_the_optimizer_state_keeps_its_types(rng):
    P = [rng.standard_normal(5000).astype(np.float32), np.ones(3, np.float32),
         np.ones(4, np.float64)]
    dense = fastopt.Adam(P, lr=1e-2)
    assert all(type(e) is np.ndarray for e in dense.state["exp_avg"])
    low = fastopt.Adam(P[:2], lr=1e-2, state_dtype="int8")
    assert [type(e) for e in low.state["exp_avg"]] == [Int8State, np.ndarray]


@pytest.mark.parametrize("cls, kind, other", [(Int8State, "unsigned", "signed"),
                                               (Float8State, "e4m4", "e3m4")])
def test_block_state_entries_round_trip_and_mismatches_are_refused_by_name(cls, kind, other):
    """The block-wise formats' state-dict entries: a round trip gives the same values; another
    block size, code/map, shape or dtype is refused naming what differs."""
    rng = np.random.default_rng(0)
    state = cls.zeros((3, 300), kind)
    state.codes[...] = rng.integers(0, 100, state.codes.shape, dtype=np.uint8)
    state.absmax[...] = rng.random(state.absmax.shape, dtype=np.float32)
    entry = state.entry()
    key = "map" if cls is Int8State else "code"
    assert entry["format"] == cls.format and entry[key] == kind and entry["block"] == 256
    back = cls.zeros((3, 300), kind)
    for dst, src in zip(back.buffers(), back.check_entry("s", entry)):
        dst[...] = src
    np.testing.assert_array_equal(np.asarray(back), np.asarray(state))
    with pytest.raises(ValueError, match=f"s has {cls.format} blocks of 128 elements, expected 256"):
        state.check_entry("s", {**entry, "block": 128})
    with pytest.raises(ValueError, match=f"s uses the '{other}' .*, expected '{kind}'"):
        state.check_entry("s", {**entry, key: other})
    with pytest.raises(ValueError, match=r"s\['codes'\] has shape \(3, 299\)"):
        state.check_entry("s", {**entry, "codes": entry["codes"][:, :299]})
    with pytest.raises(ValueError, match=r"s\['absmax'\] has shape .* and dtype float64"):
        state.check_entry("s", {**entry, "absmax": entry["absmax"].astype(np.float64)})
    with pytest.raises(ValueError, match=f"s lacks \\['{key}'\\]"):
        state.check_entry("s", {k: v for k, v in entry.items() if k != key})
    with pytest.raises(ValueError, match=f"s must be {cls.format} state"):
        state.check_entry("s", {**entry, "format": "bfloat16"})
