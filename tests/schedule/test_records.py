"""The shipped records: found by workload, so every alpha and resolution sharing a layer shape reuses them."""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

from mnet_compile.frontends import from_torch
from mnet_compile.graph.passes import fuse, optimize
from mnet_compile.models import create_model
from mnet_compile.schedule.kernels import schedule_kernels
from mnet_compile.schedule.records import family_for, shipped_database

from .blocks import PIPELINE

AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def test_shipped_records_cover_two_tuned_configs():
    """Every kernel of a tuned config has a record of its family; on an AVX-512 host they also run right."""
    assert family_for(AVX512) == "x86-avx512"
    db = shipped_database("x86-avx512")
    assert db is not None
    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    for alpha, res in [(0.25, 128), (0.5, 224)]:
        model = create_model(alpha=alpha)
        fused = fuse(optimize(from_torch(model, (1, 3, res, res)), 16))
        mod, applied, total = schedule_kernels(fused, AVX512, db)
        assert applied == total, (alpha, res, applied, total)
        if alpha == 0.25 and family_for(host) == "x86-avx512":  # AVX-512 code runs only on such a host
            x = np.random.default_rng(3).standard_normal((1, 3, res, res)).astype("float32")
            ref = model(torch.from_numpy(x)).detach().numpy()
            out = relax.VirtualMachine(tvm.compile(mod, AVX512, relax_pipeline=PIPELINE), tvm.cpu())["main"](
                tvm.runtime.tensor(x)
            )
            got = (out[0] if not hasattr(out, "numpy") else out).numpy()
            np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_missing_family_has_no_database():
    assert shipped_database("no-such-family") is None
