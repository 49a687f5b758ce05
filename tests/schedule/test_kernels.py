"""Default schedules: every kernel parallel and vectorized, numbers equal to PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

from mnet_compile.schedule.kernels import schedule_kernels

from .blocks import TARGET, fused_of, run_vm, separable_block

CASES = [(20, 12, 1, 14), (12, 20, 2, 16)]  # channel counts that are no multiple of 8 lanes


@pytest.mark.parametrize("cin,cout,stride,res", CASES)
def test_default_schedules_match_torch(cin, cout, stride, res):
    block = separable_block(cin, cout, stride)
    x = np.random.default_rng(1).standard_normal((1, cin, res, res)).astype("float32")
    mod, applied, total = schedule_kernels(fused_of(block, x.shape), TARGET, None)
    assert applied == 0 and total >= 3
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and "conv" in gv.name_hint:
            assert "T.parallel" in func.script() and "T.vectorized" in func.script()
    np.testing.assert_allclose(run_vm(mod, x), block(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
