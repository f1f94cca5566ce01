"""fastopt.runtime.alloc: buffers fastopt allocates start at staggered offsets within a page."""

import numpy as np
import pytest

import fastopt
from fastopt.runtime.alloc import PAGE, STAGGER, staggered_zeros


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_staggered_zeros_are_plain_zeros_at_the_asked_offset(dtype, k):
    like = np.ones(1 << 16, np.float32)
    a = staggered_zeros((300, 700), dtype, like=like, k=k)
    assert a.shape == (300, 700) and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.aligned and a.flags.writeable
    assert not a.any()
    assert (a.ctypes.data - like.ctypes.data) % PAGE == (k * STAGGER) % PAGE
    b = staggered_zeros(1 << 15, dtype, k=k)           # an int shape, no like: from the page
    assert b.shape == (1 << 15,) and b.ctypes.data % PAGE == (k * STAGGER) % PAGE


def test_small_buffers_are_ordinary_arrays():
    a = staggered_zeros((10,), np.float32, k=1)
    assert a.base is None and not a.any()


def test_optimizer_state_and_flat_grad_do_not_share_a_page_offset():
    fp = fastopt.FlatParams({"W": (512, 512)})
    opt = fastopt.Adam(fp)
    offsets = [x.ctypes.data % PAGE for x in
               (fp.data, fp.grad, opt.state["exp_avg"][0], opt.state["exp_avg_sq"][0])]
    assert len(set(offsets)) == 4
    W = np.zeros((512, 512), np.float32)
    opt = fastopt.SGD([W], lr=0.1, momentum=0.9)
    assert opt.state["momentum_buf"][0].ctypes.data % PAGE != W.ctypes.data % PAGE
