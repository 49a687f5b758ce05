"""Kernel scheduling: custom conv rules are correct, tuning resumes, records apply (no timing here)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from mnet_compile.frontends import from_torch
from mnet_compile.model import build_model
from mnet_compile.passes import finalize, fuse, optimize
from mnet_compile.records import family_for, shipped_database
from mnet_compile.rules import annotate
from mnet_compile.schedule import kernel_mod, kernels, schedule_kernels
from mnet_compile.tuning import count_records, tune

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
PIPELINE = tvm.transform.module_pass(lambda mod, _ctx: finalize(mod), opt_level=0, name="finalize")


def separable_block(cin: int, cout: int, stride: int, seed: int = 0) -> nn.Module:
    """3x3 depthwise + 1x1 pointwise, each with BatchNorm (folded into a bias) and ReLU."""
    torch.manual_seed(seed)
    block = nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    return block.eval()


def fused_of(model: nn.Module, shape) -> tvm.IRModule:
    return fuse(optimize(from_torch(model, shape)))


def run_vm(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, TARGET, relax_pipeline=PIPELINE)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return (out[0] if not hasattr(out, "numpy") else out).numpy()


def run_kernel(kmod: tvm.IRModule, inputs: list[np.ndarray]) -> np.ndarray:
    args = [tvm.runtime.tensor(a) for a in inputs]
    tvm.compile(kmod, TARGET)["main"](*args)
    return args[-1].numpy()


def rule_of(func) -> set[str]:
    """The custom rules named by the kernel's block annotations."""
    return set(re.findall(r'"schedule_rule": "(mnet\.[^"]+)"', func.script()))


CASES = [(20, 12, 1, 14), (12, 20, 2, 16)]  # channel counts that are no multiple of 8 lanes


@pytest.mark.parametrize("cin,cout,stride,res", CASES)
def test_custom_rules_match_unscheduled_kernels(cin, cout, stride, res):
    fused = annotate(fused_of(separable_block(cin, cout, stride), (1, cin, res, res)), TARGET)
    seen = set()
    rng = np.random.default_rng(0)
    for _gv, func in kernels(fused):
        rule = rule_of(func)
        if not rule:
            continue
        seen |= rule
        kmod = kernel_mod(func)
        shapes = [[int(d) for d in info.shape] for info in ms.arg_info.ArgInfo.from_prim_func(func)]
        inputs = [rng.standard_normal(shape).astype("float32") for shape in shapes]
        expected = run_kernel(kmod, [a.copy() for a in inputs])
        for seed in (1, 2):  # every sketch (loop order x epilogue place), two samples of its knobs
            ctx = ms.TuneContext(mod=kmod, target=TARGET, space_generator="post-order-apply", rand_state=seed)
            sketches = ctx.generate_design_space()
            assert len(sketches) == 4
            for sch in sketches:
                assert all(p.apply(sch) for p in ctx.space_generator.postprocs)
                text = sch.mod.script()
                assert "T.parallel" in text and "T.vectorized" in text
                got = run_kernel(sch.mod, [a.copy() for a in inputs])
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert seen == {"mnet.dw3x3.v8", "mnet.conv1x1.v8"}


@pytest.mark.parametrize("cin,cout,stride,res", CASES)
def test_default_schedules_match_torch(cin, cout, stride, res):
    block = separable_block(cin, cout, stride)
    x = np.random.default_rng(1).standard_normal((1, cin, res, res)).astype("float32")
    mod, applied, total = schedule_kernels(fused_of(block, x.shape), TARGET, None)
    assert applied == 0 and total >= 3
    for _gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and "conv" in _gv.name_hint:
            assert "T.parallel" in func.script() and "T.vectorized" in func.script()
    np.testing.assert_allclose(run_vm(mod, x), block(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_tuning_writes_resumes_and_applies(tmp_path):
    block = separable_block(16, 24, 1, seed=3)
    x = np.random.default_rng(2).standard_normal((1, 16, 14, 14)).astype("float32")
    fused = fused_of(block, x.shape)
    gv = next(g for g, f in kernels(annotate(fused, TARGET)) if "mnet.dw3x3.v8" in rule_of(f))
    one_task = tvm.IRModule({gv: fused[gv]})
    calls = []
    db = tune(one_task, TARGET, str(tmp_path), 3, progress=lambda *a: calls.append(a), seed=0)
    first, _ = count_records(db, [kernel_mod(annotate(one_task, TARGET)[gv])])
    assert first >= 1 and calls[-1][0] >= first and calls[-1][1] == 3
    db = tune(one_task, TARGET, str(tmp_path), first + 3, seed=1)
    second, best = count_records(db, [kernel_mod(annotate(one_task, TARGET)[gv])])
    assert second > first and best[0] is not None
    reopened = ms.database.JSONDatabase(work_dir=str(tmp_path))
    mod, applied, total = schedule_kernels(fused, TARGET, reopened)
    assert applied == 1 and total >= 3
    np.testing.assert_allclose(run_vm(mod, x), block(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_shipped_records_apply_to_two_alphas():
    assert family_for(TARGET) == "x86-avx2"
    db = shipped_database("x86-avx2")
    assert db is not None
    for alpha, res in [(0.25, 128), (0.5, 224)]:
        model = build_model(alpha)
        mod, applied, total = schedule_kernels(fused_of(model, (1, 3, res, res)), TARGET, db)
        assert applied > 0, (alpha, res, applied, total)
        if alpha == 0.25:
            x = np.random.default_rng(3).standard_normal((1, 3, res, res)).astype("float32")
            ref = model(torch.from_numpy(x)).detach().numpy()
            np.testing.assert_allclose(run_vm(mod, x), ref, rtol=1e-3, atol=1e-3)


def test_missing_family_has_no_database():
    assert shipped_database("no-such-family") is None
