"""Default schedules: every kernel parallel and vectorized, numbers equal to PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

from mnet_compile.schedule.kernels import schedule_kernels

from .blocks import TARGET, fused_of, run_vm, separable_block

CASES = [(20, 12, 1, 14), (12, 20, 2, 16)]  # channel counts that are no multiple of 8 lanes


@pytest.mark.parametrize("cin,cout,stride,res,blocks", [(*c, False) for c in CASES] + [(20, 12, 1, 56, True)])
def test_default_schedules_match_torch(cin, cout, stride, res, blocks):
    """With `blocks`, the depthwise + 1x1 pair runs as one kernel (the block rule's default schedule)."""
    block = separable_block(cin, cout, stride)
    x = np.random.default_rng(1).standard_normal((1, cin, res, res)).astype("float32")
    report = {}
    mod, applied, total = schedule_kernels(fused_of(block, x.shape, blocks), TARGET, None, report)
    assert applied == 0 and total == (3 if blocks else 4)  # (with the input and output transposes)
    assert sum(name.startswith("block_conv2d") for name in report) == (1 if blocks else 0)
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and "conv" in gv.name_hint:
            assert "T.parallel" in func.script() and "T.vectorized" in func.script()
    np.testing.assert_allclose(run_vm(mod, x), block(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_rejected_derived_schedule_falls_back_to_a_sample(monkeypatch):
    from mnet_compile.schedule import kernels

    def reject(kmod, target):
        raise RuntimeError("postproc RewriteLayout rejected the default conv1x1 schedule")

    monkeypatch.setattr(kernels, "derived_schedule", reject)
    block = separable_block(16, 24, 1)
    x = np.random.default_rng(1).standard_normal((1, 16, 14, 14)).astype("float32")
    mod, applied, total = schedule_kernels(fused_of(block, x.shape), TARGET, None)
    scheduled = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert applied == 0 and all(f.attrs.get("tirx.is_scheduled", False) for f in scheduled)
    np.testing.assert_allclose(run_vm(mod, x), block(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
