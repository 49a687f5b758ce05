"""The shipped records: found by workload, so every alpha and resolution sharing a layer shape reuses them."""

from __future__ import annotations

import numpy as np
import torch

from mnet_compile.models import create_model
from mnet_compile.schedule.kernels import schedule_kernels
from mnet_compile.schedule.records import family_for, shipped_database

from .blocks import TARGET, fused_of, run_vm


def test_shipped_records_apply_to_two_alphas():
    assert family_for(TARGET) == "x86-avx2"
    db = shipped_database("x86-avx2")
    assert db is not None
    for alpha, res in [(0.25, 128), (0.5, 224)]:
        model = create_model(alpha=alpha)
        mod, applied, total = schedule_kernels(fused_of(model, (1, 3, res, res)), TARGET, db)
        assert applied > 0, (alpha, res, applied, total)
        if alpha == 0.25:
            x = np.random.default_rng(3).standard_normal((1, 3, res, res)).astype("float32")
            ref = model(torch.from_numpy(x)).detach().numpy()
            np.testing.assert_allclose(run_vm(mod, x), ref, rtol=1e-3, atol=1e-3)


def test_missing_family_has_no_database():
    assert shipped_database("no-such-family") is None
