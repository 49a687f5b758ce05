"""Transfer tuning: a kernel without its own record takes the nearest tuned kernel's record, refitted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from mnet_compile.frontends import from_torch
from mnet_compile.graph.passes import fuse, optimize
from mnet_compile.models import create_model
from mnet_compile.schedule import transfer
from mnet_compile.schedule.kernels import schedule_kernels
from mnet_compile.schedule.records import family_for, shipped_database
from mnet_compile.schedule.rules import isa_for
from mnet_compile.schedule.tunable import tunable_kernels

from .blocks import PIPELINE
from .test_records import AVX512, HOST, RUNS_HERE


def _kernels(target, alpha, res):
    fused = fuse(optimize(from_torch(create_model(alpha=alpha), (1, 3, res, res)), isa_for(target).lanes))
    return {gv.name_hint: kmod for gv, _, kmod in tunable_kernels(fused, target)[1]}


def test_refit_tile_keeps_inner_factors_that_divide_and_shrinks_the_rest():
    assert transfer.refit_tile([392, 8], 96 * 96, 32) == [1152, 8]  # 8 divides the new extent: kept
    assert transfer.refit_tile([1, 4], 3, 8) == [1, 3]  # never larger than tuned: 3 of 4 vectors
    assert transfer.refit_tile([2, 7, 14], 12 * 12, 16) == [2, 6, 12]
    assert transfer.refit_tile([1, 28], 36, 16) == [3, 12]  # the rule's max innermost factor holds
    for decision, extent in [([392, 8], 9216), ([5, 6, 7], 210), ([1, 1], 1)]:
        assert math.prod(transfer.refit_tile(decision, extent, 64)) == extent


def test_only_spatial_extents_may_differ():
    a = ((1, 56, 56, 32), (1, 1, 32, 64), (1, 56, 56, 64))
    assert transfer.distance(a, a) == 0
    assert transfer.distance(a, ((1, 28, 28, 32), (1, 1, 32, 64), (1, 28, 28, 64))) == pytest.approx(4 * math.log(2))
    assert transfer.distance(a, ((1, 56, 56, 32), (1, 1, 32, 48), (1, 56, 56, 48))) == math.inf  # channels
    assert transfer.distance(a, a[:2]) == math.inf


def test_nearest_tuned_kernel_of_the_same_kind():
    """0.25-96 is not shipped: its kernels find the 0.25-128 ones (nearer than 0.25-160), of their own kind."""
    db = shipped_database("x86-avx512")
    index = transfer.TransferIndex(db)
    kernels = _kernels(AVX512, 0.25, 96)
    pointwise = [
        k for k in kernels.values() if "mnet.conv1x1" in str(transfer.kind_and_shape(k)[0]) and not db.has_workload(k)
    ]
    assert pointwise
    for kmod in pointwise:
        kind, shapes = transfer.kind_and_shape(kmod)
        (near, *_) = index.nearest(kmod)
        near_kind, near_shapes = transfer.kind_and_shape(near.mod)
        assert near_kind == kind and near_shapes[0][1] == shapes[0][1] * 128 // 96  # 0.25-128's layer
    # 0.9-224's 464-channel kernels (0.9 x 512, padded to 16) share their channels with no tuned kernel
    wide = [k for k in _kernels(AVX512, 0.9, 224).values() if transfer.kind_and_shape(k)[1][-1][-1] == 464]
    assert wide and all(index.nearest(k) == [] for k in wide)


def test_untuned_resolution_gets_transferred_records_and_matches_pytorch():
    """0.25-96, a resolution nobody tuned, built with the host family's records: mostly transferred."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": HOST.attrs["mcpu"], "num-cores": 2})
    family = family_for(target)
    if family not in RUNS_HERE:
        pytest.skip(f"no shipped records for this {family} host")
    model = create_model(alpha=0.25)
    fused = fuse(optimize(from_torch(model, (1, 3, 96, 96)), isa_for(target).lanes))
    report = {}
    mod, applied, total = schedule_kernels(fused, target, shipped_database(family), report)
    kinds = [k["schedule"] for k in report.values()]
    assert kinds.count("transferred") >= total // 2 and kinds.count("record") == applied
    x = np.random.default_rng(5).standard_normal((1, 3, 96, 96)).astype("float32")
    ref = model(torch.from_numpy(x)).detach().numpy()
    out = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=PIPELINE), tvm.cpu())["main"](tvm.runtime.tensor(x))
    np.testing.assert_allclose((out[0] if not hasattr(out, "numpy") else out).numpy(), ref, rtol=1e-3, atol=1e-3)


def test_tuning_starts_an_untuned_shape_from_the_nearest_known_kernel(tmp_path):
    """`tune` seeds a kernel that the known records lack with the nearest known kernel's record, refitted,
    as well as its derived default, both measured here: the search starts from the better of the two."""
    from tvm.s_tir import meta_schedule as ms

    from mnet_compile.schedule.measure import InProcessBuilder, InProcessRunner
    from mnet_compile.schedule.rules import default_schedule
    from mnet_compile.schedule.tuning import seed_defaults

    from .blocks import TARGET, fused_of, rule_of, separable_block

    def depthwise(size):
        found = tunable_kernels(fused_of(separable_block(16, 24, 1), (1, 16, size, size)), TARGET)[1]
        return next(kmod for _, func, kmod in found if "mnet.dw3x3.x86-avx2" in rule_of(func))

    tuned, untuned = depthwise(14), depthwise(10)
    known = ms.database.MemoryDatabase(module_equality="structural")
    sch = default_schedule(tuned, TARGET)
    args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
    known.commit_tuning_record(ms.database.TuningRecord(sch.trace, known.commit_workload(tuned), [1e-5], TARGET, args))
    db = ms.database.MemoryDatabase(module_equality="structural")
    assert seed_defaults(db, [("dw", untuned, 1)], TARGET, InProcessBuilder(), InProcessRunner(), known) == 2
    assert len(db.get_top_k(db.commit_workload(untuned), 10)) == 2


def test_a_transferred_1x1_takes_the_parallel_order_of_its_own_shape():
    """A record of a 1x1 whose weights outweigh its input (channel panels) transferred to a larger map
    keeps its register block but splits the rows, as that map's own default does; and computes the same."""
    from tvm.s_tir import meta_schedule as ms

    from mnet_compile.schedule.rules import default_schedule

    from .blocks import TARGET, fused_of, parallel_loop, rule_of, run_kernel, separable_block

    def pointwise(size):
        found = tunable_kernels(fused_of(separable_block(12, 40, 2), (1, 12, size, size)), TARGET)[1]
        return next(kmod for _, func, kmod in found if "mnet.conv1x1.x86-avx2" in rule_of(func))

    tuned, untuned = pointwise(4), pointwise(8)  # 2x2 and 4x4 pixels, 40 channels
    known = ms.database.MemoryDatabase(module_equality="structural")
    sch = default_schedule(tuned, TARGET)
    assert parallel_loop(sch.mod["main"]).startswith("nn_ff")
    args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
    known.commit_tuning_record(ms.database.TuningRecord(sch.trace, known.commit_workload(tuned), [1e-5], TARGET, args))
    moved = transfer.transferred_schedule(transfer.TransferIndex(known), untuned, TARGET)
    assert moved is not None and parallel_loop(moved.mod["main"]).startswith("nn_yy")
    shapes = [[int(d) for d in a.shape] for a in ms.arg_info.ArgInfo.from_prim_func(untuned["main"])]
    inputs = [np.random.default_rng(1).standard_normal(s).astype("float32") for s in shapes]
    np.testing.assert_allclose(run_kernel(moved.mod, [a.copy() for a in inputs]), run_kernel(untuned, [a.copy() for a in inputs]), rtol=1e-5, atol=1e-5)
