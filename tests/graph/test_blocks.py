"""Whole separable blocks: which depthwise + 1x1 pairs become one kernel (graph/blocks.py)."""

import re

import pytest
import tvm

from mnet_compile import frontends
from mnet_compile.graph import passes
from mnet_compile.graph.blocks import MIN_ROWS
from mnet_compile.models import create_model


def _block_kernels(mod) -> list[tuple[int, ...]]:
    """Output shapes of the kernels that hold two convs."""
    out = []
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and re.fullmatch(r"block_conv2d\d*_conv2d\d*", gv.name_hint):
            out.append(tuple(int(d) for d in func.params[-1].shape))
    return sorted(out)


@pytest.fixture(scope="module")
def v1_224():
    return passes.optimize(frontends.from_torch(create_model(alpha=0.25), (1, 3, 224, 224)), 16)


def test_stride1_blocks_on_large_maps_are_fused(v1_224):
    """MobileNet v1 at 224: the stride-1 blocks on 112, 56 and 28 rows; not the stride-2 ones, not 14/7."""
    fused = passes.fuse(v1_224, blocks=True)
    assert [s[1] for s in _block_kernels(fused)] == [28, 56, 112]
    assert all(s[1] >= MIN_ROWS for s in _block_kernels(fused))
    kernels = [f for f in fused.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    separate = [f for f in passes.fuse(v1_224).functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == len(separate) - 3


def test_without_blocks_every_conv_is_its_own_kernel(v1_224):
    assert _block_kernels(passes.fuse(v1_224)) == []
