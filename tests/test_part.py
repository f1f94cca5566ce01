"""fastopt.optim.part in one process: parts of an optimizer update their elements as the whole
optimizer does (groups, every state format, int8 blocks, bfloat16 rounding indices), and
their state dicts cut from and join into the whole one (ZeRO-1's machinery, without MPI).
"""

import math

import numpy as np
import pytest

import fastopt
from fastopt.optim import part as P

SHAPES = {"W1": (60, 50), "b1": (300,), "W2": (50, 7), "b2": (7,)}
FORMATS = ["float32", "bfloat16", "int8", "float8"]


def _whole(kind, fmt, clip=None, skip=False):
    """(params, AdamW) with a group of its own lr and no decay, alike on every call."""
    kw = dict(lr=0.01, weight_decay=0.3, max_grad_norm=clip, skip_nonfinite=skip)
    if fmt != "float32":
        kw.update(state_dtype=fmt, min_lowbit_size=100)
    rng = np.random.default_rng(3)
    if kind == "flat":
        fp = fastopt.FlatParams(SHAPES)
        fp.data[...] = rng.standard_normal(fp.size)
        return fp, fastopt.AdamW(fp, groups=[{"params": ["b1", "b2"], "weight_decay": 0.0,
                                             "lr": 0.02}], **kw)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in SHAPES.values()]
    if kind == "list":
        return arrays, fastopt.AdamW([{"params": arrays[:2]},
                                      {"params": arrays[2:], "weight_decay": 0.0, "lr": 0.02}],
                                     **kw)
    return arrays, fastopt.AdamW(dict(zip(SHAPES, arrays)), groups=[
        {"params": ["W2", "b2"], "weight_decay": 0.0, "lr": 0.02}], **kw)


def _flat_of(params):
    return params.data if isinstance(params, fastopt.FlatParams) else \
        np.concatenate([a.reshape(-1) for a in params])


def _step_whole(params, opt, g):
    if isinstance(params, fastopt.FlatParams):
        params.grad[...] = g
        opt.step()
    else:
        grads, o = [], 0
        for a in params:
            grads.append(g[o:o + a.size].reshape(a.shape))
            o += a.size
        opt.step(dict(zip(SHAPES, grads)) if opt.params.keys else grads)


def _parts(opt, buf, cuts):
    """Parts of ``opt`` over ``buf`` (the flat float32 vector) cut at ``cuts``, each moved
    back to the start of the int8 block it would split (any such cut gives the whole's bits;
    DataParallel cuts at chunk starts only, for the norm)."""
    exts = P.extents(opt)
    n = buf.size

    def snap(x):
        for e in exts:
            if e.fmt in ("int8", "float8") and e.start < x < e.stop:
                return e.start + (x - e.start) // 256 * 256
        return x

    edges = [0] + [snap(c) for c in cuts] + [n]
    parts = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        ps = P.pieces(exts, np.dtype(np.float32), lo, hi)
        views = [(e, a, buf[a:b]) for e, a, b in ps] or [(None, lo, buf[lo:lo])]
        parts.append((lo, hi, ps, P.part(opt, views)))
    return parts


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["flat", "list", "dict"])
def test_parts_update_as_the_whole_and_their_state_joins_into_its_state_dict(kind, fmt, impl):
    params, whole = _whole(kind, fmt)
    whole.impl = impl
    buf = _flat_of(params).copy()
    # cuts off every block boundary: inside W1, inside b1 (a run of its own with groups)
    parts = _parts(whole, buf, [1234, 3100])
    if fmt in ("int8", "float8"):
        for lo, _, ps, _ in parts:
            for e, a, _ in ps:
                assert e.fmt != fmt or (a - e.start) % 256 == 0
    rng = np.random.default_rng(9)
    for _ in range(3):
        g = rng.standard_normal(buf.size).astype(np.float32)
        _step_whole(params, whole, g)
        for lo, hi, ps, opt in parts:
            opt.step(opt.params.pack([g[a:b] for _, a, b in ps] or [g[lo:lo]]))
    np.testing.assert_array_equal(buf, _flat_of(params))
    # the parts' state streams, concatenated in order, are the whole state dict's
    layout = P.StateLayout(whole)
    streams = {name: {kind_: [] for kind_ in layout.sizes()} for name in layout.names}
    for _, _, _, opt in parts:
        mine = P.StateLayout(opt).streams(opt.state_dict()["state"])
        for name in layout.names:
            for kind_ in layout.sizes():
                if kind_ in mine[name]:
                    streams[name][kind_].append(mine[name][kind_])
    joined = layout.state({n: {k: np.concatenate(v) for k, v in per.items()}
                           for n, per in streams.items()})
    want = whole.state_dict()["state"]
    again = layout.streams(want)
    for name in layout.names:
        for kind_, arr in again[name].items():
            np.testing.assert_array_equal(np.concatenate(streams[name][kind_]), arr)
        a, b = joined[name], want[name]
        for k in (b if isinstance(b, dict) else range(len(b))):
            if isinstance(b[k], dict):
                assert {f: v for f, v in a[k].items() if not isinstance(v, np.ndarray)} == \
                    {f: v for f, v in b[k].items() if not isinstance(v, np.ndarray)}
                for f in b[k]:
                    if isinstance(b[k][f], np.ndarray):
                        np.testing.assert_array_equal(a[k][f], b[k][f])
            else:
                assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype
                np.testing.assert_array_equal(a[k], b[k])
    # the parts keep the groups, with their values
    for *_, opt in parts:
        assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == 0.02


def test_a_state_dict_that_does_not_fit_the_layout_is_named():
    _, whole = _whole("flat", "int8")
    layout = P.StateLayout(whole)
    sd = whole.state_dict()["state"]
    bad = {n: list(v) for n, v in sd.items()}
    bad["exp_avg"][0] = {**bad["exp_avg"][0], "map": "unsigned"}
    with pytest.raises(ValueError, match=r"state exp_avg\[0\] uses the 'unsigned'"):
        layout.streams(bad)
    bad = {n: list(v) for n, v in sd.items()}
    bad["exp_avg"][-1] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"state exp_avg\[3\] has values float32 of shape"):
        layout.streams(bad)
    with pytest.raises(ValueError, match="must be a list of 4 entries"):
        layout.streams({n: v[:2] for n, v in sd.items()})


def test_grad_stats_clips_and_skips_a_part_by_the_whole_gradient():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(1000).astype(np.float32)
    g = rng.standard_normal(1000).astype(np.float32)
    whole_p = p.copy()
    whole = fastopt.Adam([whole_p], lr=0.01, max_grad_norm=1.0, skip_nonfinite=True)
    whole.step([g])
    halves = [p[:500].copy(), p[500:].copy()]
    sumsq = float(np.dot(g.astype(np.float64), g.astype(np.float64)))
    for k, h in enumerate(halves):
        opt = fastopt.Adam([h], lr=0.01, max_grad_norm=1.0, skip_nonfinite=True)
        opt.step([g[500 * k:500 * (k + 1)]], grad_stats=(sumsq, True))
        assert opt.grad_norm == pytest.approx(whole.grad_norm, rel=1e-12)
        # a non-finite whole gradient: skipped, though this part's is finite
        before = h.copy()
        opt.step([g[500 * k:500 * (k + 1)]], grad_stats=(float("nan"), False))
        assert opt.skipped_steps == 1 and opt.step_count == 1
        np.testing.assert_array_equal(h, before)
    np.testing.assert_array_equal(np.concatenate(halves), whole_p)


@pytest.mark.parametrize("bad", [(1.0,), (-1.0, True), ("1", True), (1.0, 1), [1.0, True],
                                 (True, True)])
def test_grad_stats_is_checked_before_anything_changes(bad):
    p = np.ones(3)
    opt = fastopt.SGD([p], lr=0.1, max_grad_norm=1.0)
    with pytest.raises(TypeError, match="grad_stats"):
        opt.step([np.ones(3)], grad_stats=bad)
    assert opt.step_count == 0
    np.testing.assert_array_equal(p, np.ones(3))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_norm_order_gives_the_bits_of_the_fused_step(dtype, fmt):
    # chunk sums (one sum_of_squares each) added in NormOrder's order: the whole optimizer's
    # grad_norm, bit for bit; parts cut at NormOrder.cuts split no chunk
    from fastopt.runtime.dispatch import ext

    if dtype == np.float64 and fmt != "float32":
        pytest.skip("low-precision state takes float32 parameters")
    shapes = {"W1": (300, 170), "b1": (170,), "W2": (170, 7), "b2": (7,)}
    fp = fastopt.FlatParams(shapes, dtype=dtype)
    kw = dict(state_dtype=fmt, min_lowbit_size=100) if fmt != "float32" else {}
    opt = fastopt.Adam(fp, lr=0.01, max_grad_norm=1.0, groups=[{"params": ["b1"], "lr": 0.1}],
                       **kw)
    order = P.NormOrder(opt)
    cuts = order.cuts(np.dtype(dtype))
    assert cuts[0] == 0 and cuts[-1] == fp.size and 16_384 in cuts and 16_383 not in cuts
    assert sorted((a, b) for _, a, b in order.chunks) == list(zip(cuts[:-1], cuts[1:]))
    other_order_differs = False
    for seed in range(5):
        fp.grad[...] = np.random.default_rng(seed).standard_normal(fp.size) * 1e3
        sums = [ext._optim.sum_of_squares(fp.grad[a:b], 1) for _, a, b in order.chunks]
        opt.step()
        assert math.sqrt(order.total(np.array(sums))) == opt.grad_norm
        other_order_differs |= math.sqrt(sum(sums[::-1])) != opt.grad_norm
    assert other_order_differs      # (the control: the order is what makes the bits)


@pytest.mark.parametrize("fmt, key, other", [("int8", "map", "unsigned"),
                                             ("float8", "code", "e4m4")])
def test_a_block_state_entry_that_does_not_fit_is_named(fmt, key, other):
    _, whole = _whole("flat", fmt)
    layout = P.StateLayout(whole)
    sd = whole.state_dict()["state"]

    def with_first(**change):
        bad = {n: list(v) for n, v in sd.items()}
        bad["exp_avg"][0] = {k: v for k, v in {**bad["exp_avg"][0], **change}.items()
                             if v is not None}
        return bad

    with pytest.raises(ValueError, match=rf"state exp_avg\[0\] uses the '{other}'"):
        layout.streams(with_first(**{key: other}))
    with pytest.raises(ValueError, match=rf"state exp_avg\[0\] has {fmt} blocks of 128 elements"):
        layout.streams(with_first(block=128))
    with pytest.raises(ValueError, match=rf"state exp_avg\[0\] lacks \['absmax'\]"):
        layout.streams(with_first(absmax=None))
    with pytest.raises(ValueError, match=rf"state exp_avg\[0\] must be {fmt} state"):
        layout.streams(with_first(format="bfloat16"))
    # the entries the layout writes are the optimizer's own
    again = layout.state(layout.streams(sd))
    for got, want in zip(again["exp_avg"], sd["exp_avg"]):
        if isinstance(want, dict):
            assert {k: v for k, v in got.items() if not isinstance(v, np.ndarray)} == \
                {k: v for k, v in want.items() if not isinstance(v, np.ndarray)}
