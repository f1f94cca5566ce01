"""int8 state with maps other than each buffer's default, kernels against their NumPy twins bit
for bit: the AVX2 blocks pick a quantizer by the map (``posonly``: every negative value takes
code 0, as for the unsigned map), so each buffer is run with the signed map, the unsigned map
and a custom map, whatever the sign of its values."""

import numpy as np
import pytest

from fastopt.kernels import _formats as F
from fastopt.kernels import lowbit as K
from fastopt.reference import lowbit as R

import table_grid


def _mixed_map():
    # signed and lopsided: 100 negative values, zero, 155 positive ones (not a dynamic map)
    v = np.concatenate([-np.geomspace(1e-4, 1, 100), [0.0], np.geomspace(1e-5, 1, 155)])
    return F.QuantMap(np.sort(v).astype(np.float32))


def _positive_map():
    # non-negative, but its lowest threshold is below every bucket (zero and 1e-9 both coded)
    v = np.concatenate([[0.0, 1e-9], np.geomspace(1e-6, 1, 254)]).astype(np.float32)
    return F.QuantMap(v)


MAPS = {"signed": F.signed_map, "unsigned": F.unsigned_map, "mixed": _mixed_map,
        "positive": _positive_map}


def _run(mod, opt, p, g, state, maps, t):
    if opt not in ("adam", "rmsprop", "sgd"):   # a kernel of the table without its own case
        k = table_grid.KERNELS[opt]
        kw = {f"{b.name}_map": m for b, m in zip(k.state, maps)}
        if k.step:
            kw["step"] = t
        getattr(mod, f"{opt}_step_int8")(p, g, *state, lr=table_grid.lr(opt),
                                         **table_grid.options(opt)[0], **kw)
        return
    if opt == "adam":
        mod.adam_step_int8(p, g, *state, step=t, lr=0.01, weight_decay=0.01,
                           exp_avg_map=maps[0], exp_avg_sq_map=maps[1])
    elif opt == "rmsprop":
        mod.rmsprop_step_int8(p, g, *state, lr=0.01, square_avg_map=maps[0])
    else:
        mod.sgd_step_int8(p, g, *state, lr=0.05, momentum=0.9, nesterov=True,
                          momentum_buf_map=maps[0])


@table_grid.quick(family=lambda p: p["opt"], option="first")   # signed first: every level
@pytest.mark.parametrize("n", [256 * 9 + 5])
@pytest.mark.parametrize("first", list(MAPS))
@pytest.mark.parametrize("opt", table_grid.LOWBIT)
def test_any_map_matches_reference(isa, opt, first, n, rng):
    second = {"signed": "unsigned", "unsigned": "signed", "mixed": "positive",
              "positive": "mixed"}[first]
    maps = [MAPS[first](), MAPS[second]()][:len(table_grid.KERNELS[opt].state)]
    p_k = rng.standard_normal(n).astype(np.float32)
    p_r = p_k.copy()
    state = []
    for m in maps:
        state += list(F.zeros_int8(n, m))
    s_k = [s.copy() for s in state]
    s_r = [s.copy() for s in state]
    for t in range(1, 5):
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 2, n)).astype(np.float32)
        g[rng.integers(0, n, 3)] = 0.0
        _run(K, opt, p_k, g, s_k, maps, t)
        _run(R, opt, p_r, g, s_r, maps, t)
        np.testing.assert_array_equal(p_k, p_r, err_msg=f"param, step {t}")
        for k, (x, y) in enumerate(zip(s_k, s_r)):
            np.testing.assert_array_equal(x, y, err_msg=f"state[{k}], step {t}")
