"""The input's NCHW -> NHWC transpose inside the first conv's kernel (graph/input_layout.py)."""

import pytest
import tvm

from mnet_compile import frontends
from mnet_compile.graph import passes
from mnet_compile.models import create_model


def _kernels(mod) -> dict:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.fixture(scope="module")
def v1_128():
    return passes.optimize(frontends.from_torch(create_model(alpha=0.25), (1, 3, 128, 128)), 16)


def test_the_first_conv_kernel_reads_the_nchw_image(v1_128):
    kernels = _kernels(passes.fuse(v1_128))
    first = [f for f in kernels.values() if [int(d) for d in f.params[0].shape] == [1, 3, 128, 128]]
    assert len(first) == 1 and [int(d) for d in first[0].params[-1].shape] == [1, 64, 64, 8]
    assert "transpose" not in kernels  # no kernel of its own
    assert "T_transpose" in first[0].script() and "conv2d_nhwc" in first[0].script()


def test_without_it_the_transpose_is_a_kernel_of_its_own(v1_128):
    """As the CUDA backend builds it."""
    kernels = _kernels(passes.fuse(v1_128, input_transpose=False))
    assert [int(d) for d in kernels["transpose"].params[0].shape] == [1, 3, 128, 128]
    assert not any("T_transpose" in f.script() and "conv2d_nhwc" in f.script() for f in kernels.values())
