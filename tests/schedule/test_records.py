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


def test_pruned_records_ship_gzipped_and_load(tmp_path):
    """prune writes what the builds use as .json.gz (the workloads are base64 JSON: 13x smaller), and
    load_records reads a shipped (.gz) folder as well as a tuning folder (.json)."""
    import os

    from tvm.s_tir import meta_schedule as ms

    from mnet_compile.schedule.records import load_records, prune
    from mnet_compile.schedule.rules import default_schedule
    from mnet_compile.schedule.tunable import tunable_kernels

    from .blocks import TARGET, fused_of, separable_block

    kmods = [k for _, _, k in tunable_kernels(fused_of(separable_block(16, 24, 1), (1, 16, 14, 14)), TARGET)[1]]
    work = tmp_path / "work"
    work.mkdir()
    db = ms.database.JSONDatabase(work_dir=str(work), module_equality="structural")
    for kmod in kmods:
        if (sch := default_schedule(kmod, TARGET)) is not None:
            args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
            db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(kmod), [1e-5], TARGET, args))
    del db
    assert prune(str(work), str(tmp_path / "ship"), top_k=1, keep=kmods[-1:]) == 1
    assert sorted(os.listdir(tmp_path / "ship")) == ["database_tuning_record.json.gz", "database_workload.json.gz"]
    shipped, tuned = load_records(tmp_path / "ship"), load_records(work)
    assert shipped.has_workload(kmods[-1]) and not shipped.has_workload(kmods[-2])
    assert tuned.has_workload(kmods[-1]) and tuned.has_workload(kmods[-2])
    assert load_records(tmp_path) is None


@pytest.mark.parametrize("family,target", [("x86-avx512", AVX512), ("x86-avx2", AVX2)])
def test_x86_records_cover_the_paper_grid(family, target):
    """In the grid's configs the benchmark does not build, with the separable blocks fused (the default on
    x86) or not: x86-avx512 has a record for every kernel; x86-avx2 for every separable block and every
    kernel outside the conv rules (the pool, the reshapes: MetaSchedule's sampled generic sketches), its
    other convs taking a transferred record or the derived default."""
    db = shipped_database(family)
    for alpha, res in [(0.75, 160), (1.0, 192)]:
        model = optimize(from_torch(create_model(alpha=alpha), (1, 3, res, res)), isa_for(target).lanes)
        for blocks in (False, True):
            report = {}
            schedule_kernels(fuse(model, blocks), target, db, report)
            kinds = {name: k["schedule"] for name, k in report.items()}
            covered = kinds if family == "x86-avx512" else {k: v for k, v in kinds.items() if "conv" not in k or k.startswith("block_")}
            assert len(kinds) >= 21 and set(covered.values()) == {"record"}, (alpha, res, covered)
            assert sum(name.startswith("block_") for name in covered) == (2 if blocks else 0)


@pytest.mark.parametrize("family", ["x86-avx512", "x86-avx2"])
def test_shipped_records_schedule_as_the_rules_derive(family):
    """Every shipped 1x1 and depthwise record splits its parallel tiles in the order the rule derives from
    the shape (rules/conv.py, tile_order): an order picked by timing kernels alone is not shipped; a 1x1
    record prefetches its weights exactly where the rule does (prefetches_weights); a first-conv or
    float32 depthwise record reads its input in the taps (no padded copy)."""
    from tvm import s_tir

    from mnet_compile.schedule.kernels import replayed
    from mnet_compile.schedule.lowering import PREFETCH
    from mnet_compile.schedule.rules.conv import prefetches_weights, tile_order
    from mnet_compile.schedule.rules.default import _rule_block

    from .blocks import parallel_loop

    db = shipped_database(family)
    checked = prefetching = inlined = 0
    for rec in db.get_all_tuning_records():
        sch = s_tir.Schedule(rec.workload.mod)
        found = _rule_block(sch)
        if found is not None and found[1] in ("stem3x3", "dw3x3"):
            scheduled = s_tir.Schedule(replayed(rec.trace, rec.workload.mod).mod)
            blocks = [scheduled.get(b).name_hint for b in scheduled.get_child_blocks(scheduled.get_sblock("root"))]
            inputs = {str(r.source.dtype) for pad in sch.get_producers(found[0]) for r in sch.get(pad).reads}
            integer = found[1] == "dw3x3" and inputs != {"float32"}  # converted once per column tile
            assert any(name.startswith("pad") for name in blocks) == integer, blocks
            inlined += not integer
        if found is None or found[1] not in ("conv1x1", "dw3x3"):
            continue
        _, height, width, channels = (int(d) for d in sch.get(found[0]).writes[0].source.shape)
        rows = found[1] == "dw3x3" or tile_order(height, width, channels) == "row"
        loops = parallel_loop(replayed(rec.trace, rec.workload.mod).mod["main"]).split("_")
        assert (loops[1] in ("yy", "y")) == rows, (found[1], height, width, channels, loops)  # after the batch
        if found[1] == "conv1x1":
            prefetch = prefetches_weights(height, width, channels, found[2])
            assert (PREFETCH in str(rec.trace)) == prefetch, (height, width, channels)
            prefetching += prefetch
        checked += 1
    assert checked > 50 and inlined >= 40 and (prefetching > 10) == (family == "x86-avx512"), (checked, inlined, prefetching)
