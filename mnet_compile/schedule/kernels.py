"""Schedule every TIR kernel of a fused module: its own tuned record where the database has one, else the
record of the nearest tuned kernel of the same kind refitted to it (transfer.py; CPU), else a default.

    mod, applied, total = schedule_kernels(fused_mod, target, database)

`fused_mod` is `passes.fuse(...)` output; the custom-rule annotations (`rules.annotate`) are added here, so
lookups hash the same kernels that `tuning.tune` tuned. `applied` counts kernels whose own record was found
AND replayed; a kernel whose record fails to replay falls back to a transferred or default schedule and is
not counted. The report tells the three apart ("record", "transferred", "default").
"""

from __future__ import annotations

import logging

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..graph.passes import with_functions
from .rules import default_schedule as derived_schedule
from .transfer import TransferIndex, transferred_schedule
from .tunable import tunable_kernels

log = logging.getLogger(__name__)
DEFAULT_SEED = 20240601
DEFAULT_TRIES = 8
RECORD_TRIES = 3


def _from_record(database, kmod: tvm.IRModule, target: Target, name: str):
    """The kernel scheduled by its best record that replays (up to RECORD_TRIES records), or None."""
    if database is None or not database.has_workload(kmod):
        return None
    for rec in database.get_top_k(database.commit_workload(kmod), RECORD_TRIES):
        if (sch := replayed(rec.trace, kmod, name)) is not None:
            return sch.mod["main"]
    return None


def replayed(trace, kmod: tvm.IRModule, name: str = "kernel") -> s_tir.Schedule | None:
    """`kmod` scheduled by a record's trace, or None (with a warning) if it no longer replays on this TVM."""
    sch = s_tir.Schedule(kmod, enable_check=False, error_render_level="none")
    try:
        trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception as exc:
        log.warning("a record for %s does not replay (%s)", name, str(exc).splitlines()[0][:200])
        return None
    return sch


def design_space(target: Target):
    """MetaSchedule's default space; on CUDA without the tensor-core rules (fp32 model; their intrinsics
    cost a 90 s import): multi-level tiling with shared-memory reuse, thread binding, cross-thread reduction."""
    if target.kind.name != "cuda":
        return "post-order-apply"
    return ms.space_generator.PostOrderApply(
        sch_rules=ms.ScheduleRule.create("cuda"),
        postprocs=ms.Postproc.create("cuda"),
        mutator_probs=ms.Mutator.create("cuda"),
    )


def default_schedule(kmod: tvm.IRModule, target: Target) -> tirx.PrimFunc:
    """The conv rules' blocking derived from shape and ISA (`rules.default_schedule`); for any other
    kernel a deterministic sample of the MetaSchedule design space, postprocessed: parallel outer loop,
    vectorized inner loop, tiled; never the bare loop nest (a derived schedule that a postproc rejects
    falls back to the sample)."""
    if target.kind.name == "llvm":
        try:
            derived = derived_schedule(kmod, target)
        except RuntimeError as exc:
            log.warning("derived schedule rejected (%s); using a sampled one", str(exc).splitlines()[0][:200])
            derived = None
        if derived is not None:
            return derived.mod["main"]
    for attempt in range(DEFAULT_TRIES):
        ctx = ms.TuneContext(
            mod=kmod,
            target=target,
            space_generator=design_space(target),
            rand_state=DEFAULT_SEED + attempt,
            num_threads=1,
        )
        for sketch in ctx.generate_design_space():
            sch = sketch.copy()
            try:
                if all(p.apply(sch) for p in ctx.space_generator.postprocs):
                    return sch.mod["main"]
            except Exception:  # an invalid sample; try the next one
                continue
    raise RuntimeError("no valid default schedule for kernel")


def _restore_attrs(new: tirx.PrimFunc, old: tirx.PrimFunc) -> tirx.PrimFunc:
    """Keep the kernel's own symbol status (fused kernels are private: no global_symbol)."""
    if "global_symbol" not in old.attrs and "global_symbol" in new.attrs:
        new = new.without_attr("global_symbol")
    return new.with_attr("tirx.is_scheduled", True)


def schedule_kernels(fused_mod: tvm.IRModule, target: Target, database: ms.Database | None, report=None):
    """Return (module with every kernel scheduled, kernels scheduled from their own record, total kernels).
    `report` (a dict) receives {kernel name: {"flops": per call, "schedule": "record" | "transferred" |
    "default"}}."""
    if not any(isinstance(f, tirx.PrimFunc) for f in fused_mod.functions.values()):
        raise ValueError("schedule_kernels wants the fused module (passes.fuse output): it has no TIR kernels")
    mod, found = tunable_kernels(fused_mod, target)
    index = TransferIndex(database) if database is not None and target.kind.name == "llvm" else None
    applied, total = 0, 0
    updates = {}
    with target:
        for gv, func, kmod in found:
            total += 1
            new, how = _from_record(database, kmod, target, gv.name_hint), "record"
            if new is None and index is not None and (sch := transferred_schedule(index, kmod, target)) is not None:
                new, how = sch.mod["main"], "transferred"
            if report is not None:
                flops = s_tir.analysis.estimate_tir_flops(kmod)
                report[gv.name_hint] = {"flops": int(flops), "schedule": how if new is not None else "default"}
            if how == "record" and new is not None:
                applied += 1
            elif new is None:
                try:
                    new = default_schedule(kmod, target)
                except RuntimeError:  # no valid sample (a few GPU kernels): left to the caller's fallback
                    continue
            updates[gv] = _restore_attrs(new, func)
    return with_functions(mod, updates), applied, total
