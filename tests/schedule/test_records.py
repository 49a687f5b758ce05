"""The shipped records: found by workload, so every alpha and resolution sharing a layer shape reuses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from mnet_compile.frontends import from_torch
from mnet_compile.graph.passes import fuse, optimize
from mnet_compile.models import create_model
from mnet_compile.schedule.kernels import schedule_kernels
from mnet_compile.schedule.records import family_for, shipped_database
from mnet_compile.schedule.rules import isa_for

from .blocks import PIPELINE

AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
HOST = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
RUNS_HERE = {"x86-avx512": {"x86-avx512"}, "x86-avx2": {"x86-avx512", "x86-avx2"}}  # host family -> code it runs


def _scheduled(target, alpha, res):
    """(model, scheduled module, kernels with a record, kernels) with the target family's shipped records."""
    db = shipped_database(family_for(target))
    assert db is not None
    model = create_model(alpha=alpha)
    fused = fuse(optimize(from_torch(model, (1, 3, res, res)), isa_for(target).lanes))
    return (model, *schedule_kernels(fused, target, db))


@pytest.mark.parametrize("target", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_shipped_records_cover_two_tuned_configs(target):
    """Every kernel of a tuned config has a record of its family."""
    for alpha, res in [(0.25, 128), (0.5, 224)]:
        _, _, applied, total = _scheduled(target, alpha, res)
        assert applied == total, (alpha, res, applied, total)


@pytest.mark.parametrize("target", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_shipped_records_compute_the_model(target):
    family = family_for(target)
    if family_for(HOST) not in RUNS_HERE[family]:
        pytest.skip(f"{family} code does not run on this {family_for(HOST)} host")
    model, mod, _, _ = _scheduled(target, 0.25, 128)
    x = np.random.default_rng(3).standard_normal((1, 3, 128, 128)).astype("float32")
    ref = model(torch.from_numpy(x)).detach().numpy()
    out = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=PIPELINE), tvm.cpu())["main"](tvm.runtime.tensor(x))
    got = (out[0] if not hasattr(out, "numpy") else out).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_missing_family_has_no_database():
    assert shipped_database("no-such-family") is None
