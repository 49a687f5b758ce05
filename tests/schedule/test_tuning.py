"""Tuning writes records after every batch, resumes from them, and the records apply at build time."""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm.s_tir import meta_schedule as ms

from mnet_compile.schedule.kernels import schedule_kernels
from mnet_compile.schedule.tunable import tunable_kernels
from mnet_compile.schedule.tuning import count_records, tune

from .blocks import TARGET, fused_of, rule_of, run_vm, separable_block


def test_tuning_writes_resumes_and_applies(tmp_path):
    block = separable_block(16, 24, 1, seed=3)
    x = np.random.default_rng(2).standard_normal((1, 16, 14, 14)).astype("float32")
    fused = fused_of(block, x.shape)
    _, found = tunable_kernels(fused, TARGET)
    gv, _, kmod = next(k for k in found if "mnet.dw3x3.x86-avx2" in rule_of(k[1]))
    one_task = tvm.IRModule({gv: fused[gv]})
    calls = []
    db = tune(one_task, TARGET, str(tmp_path), 3, progress=lambda *a: calls.append(a), seed=0)
    first, _ = count_records(db, [kmod])
    assert first >= 1 and calls[-1][0] >= first and calls[-1][1] == 3
    db = tune(one_task, TARGET, str(tmp_path), first + 3, seed=1)
    second, best = count_records(db, [kmod])
    assert second > first and best[0] is not None
    reopened = ms.database.JSONDatabase(work_dir=str(tmp_path))
    mod, applied, total = schedule_kernels(fused, TARGET, reopened)
    assert applied == 1 and total >= 3
    np.testing.assert_allclose(run_vm(mod, x), block(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_known_records_are_measured_here_beside_the_default(tmp_path):
    """A shipped record starts the search with the time measured on this machine, not the one it shipped
    with, and the derived default competes with it: the best seed is never worse than the default."""
    from mnet_compile.schedule.measure import InProcessBuilder, InProcessRunner
    from mnet_compile.schedule.rules import default_schedule
    from mnet_compile.schedule.tuning import seed_defaults

    fused = fused_of(separable_block(16, 24, 1, seed=3), (1, 16, 14, 14))
    known = ms.database.MemoryDatabase(module_equality="structural")
    tasks = []
    for rule in ("mnet.dw3x3.x86-avx2", "mnet.conv1x1.x86-avx2"):  # the 1x1 one takes packed weights
        kmod = next(k for _, f, k in tunable_kernels(fused, TARGET)[1] if rule in rule_of(f))
        sch = default_schedule(kmod, TARGET)
        args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
        known.commit_tuning_record(ms.database.TuningRecord(sch.trace, known.commit_workload(kmod), [123.0], TARGET, args))
        tasks.append((rule, kmod, 1))
    db = ms.database.MemoryDatabase(module_equality="structural")
    assert seed_defaults(db, tasks, TARGET, InProcessBuilder(), InProcessRunner(), known) == 4
    for _, kmod, _ in tasks:
        secs = [float(r.run_secs[0]) for r in db.get_top_k(db.commit_workload(kmod), 10)]
        assert len(secs) == 2 and max(secs) < 1.0  # measured here, not the shipped 123 s


def test_cold_cache_flushes_the_weights_before_every_timed_run(tmp_path, monkeypatch):
    """`tune --cold-cache`: every candidate (the seeds too) is timed run by run, with its non-first
    arguments (weights, output) flushed from the caches before each run; without it, back to back."""
    from mnet_compile.schedule import measure

    seen = []
    real = measure.run_evaluator_common
    monkeypatch.setattr(measure, "run_evaluator_common", lambda mod, dev, cfg, args: seen.append(cfg) or real(mod, dev, cfg, args))
    block = separable_block(16, 24, 1, seed=3)
    fused = fused_of(block, (1, 16, 14, 14))
    _, found = tunable_kernels(fused, TARGET)
    gv, _, _ = next(k for k in found if "mnet.dw3x3.x86-avx2" in rule_of(k[1]))
    one_task = tvm.IRModule({gv: fused[gv]})
    tune(one_task, TARGET, str(tmp_path / "cold"), 2, seed=0, cold_cache=True)
    assert seen and all(c.enable_cpu_cache_flush and c.number == 1 and not c.min_repeat_ms for c in seen)
    seen.clear()
    tune(one_task, TARGET, str(tmp_path / "hot"), 2, seed=0)
    assert seen and not any(c.enable_cpu_cache_flush for c in seen)


def test_cold_cache_reaches_tuning_and_the_resume_line(capsys, tmp_path, monkeypatch):
    from mnet_compile.schedule import tuning

    from ..helpers import run_cli

    got = {}
    monkeypatch.setattr(tuning, "tune", lambda *a, **kw: got.update(kw))
    code, _, _ = run_cli(capsys, "tune", "--alpha", "0.25", "--resolution", "32", "--trials", "1", "--cold-cache",
                         "--fuse-blocks", "--work-dir", tmp_path / "w")
    assert code == 0 and got["cold_cache"] is True
    from mnet_compile.cli import _resume_hint
    from mnet_compile.pipeline import CompileRequest

    _, line = _resume_hint(CompileRequest(fuse_blocks=True), {"fuse_blocks": True}, 5, str(tmp_path), None, None, None, True)
    assert line.endswith("--fuse-blocks --cold-cache")
    _, line = _resume_hint(CompileRequest(fuse_blocks=False), {"fuse_blocks": False}, 5, str(tmp_path), None, None, None, False)
    assert line.endswith("--no-fuse-blocks")
