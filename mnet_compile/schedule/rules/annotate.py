"""Mark the fused kernels that the custom conv rules handle (block annotation "schedule_rule")."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.target import Target, codegen

RULE_KEY = "schedule_rule"
SKIP = "None"  # ApplyCustomRule leaves such a block alone and the default rules skip it too


def vector_lanes(target: Target) -> int:
    """fp32 lanes per SIMD register: 16 with AVX-512, 8 with AVX2, 4 for NEON and anything else."""
    if "arm_cpu" in target.keys or "aarch64" in str(target.attrs.get("mtriple", "")):
        return 4
    try:
        if codegen.llvm_cpu_has_features("avx512f", target):
            return 16
        if codegen.llvm_cpu_has_features("avx2", target):
            return 8
    except Exception:  # a target LLVM cannot describe
        pass
    return 4


def _shape(buf) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)


def classify(sch: s_tir.Schedule, block) -> str | None:
    """'dw3x3' for a 3x3 depthwise NHWC conv, 'conv1x1' for a 1x1 NHWC conv (HWIO weights), else None."""
    stmt = sch.get(block)
    name = stmt.name_hint
    if len(stmt.iter_vars) != 7 or len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    if kinds != [0, 0, 0, 0, 2, 2, 2]:  # SSSS RRR
        return None
    weight = _shape(stmt.reads[1].source)
    out = _shape(stmt.writes[0].source)
    if len(weight) != 4 or len(out) != 4 or out[0] != 1:
        return None
    if name.startswith(("group_conv2d_nhwc", "depthwise_conv2d_nhwc")) and weight[:3] == (3, 3, 1):
        return "dw3x3" if weight[3] == out[3] else None
    if name.startswith("conv2d_nhwc") and weight[:2] == (1, 1) and weight[3] == out[3]:
        return "conv1x1"
    return None


def _epilogue_ok(sch: s_tir.Schedule, block) -> bool:
    """The conv's consumers form a single chain of elementwise blocks (bias add, ReLU, ...)."""
    cur = block
    while True:
        consumers = sch.get_consumers(cur)
        if not consumers:
            return True
        if len(consumers) != 1:
            return False
        cur = consumers[0]
        if any(int(iv.iter_type) != 0 for iv in sch.get(cur).iter_vars):
            return False


def rule_name(kind: str, lanes: int) -> str:
    return f"mnet.{kind}.v{lanes}"


def _annotate_func(func: tirx.PrimFunc, lanes: int) -> tirx.PrimFunc:
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    convs = [(b, classify(sch, b)) for b in blocks]
    convs = [(b, k) for b, k in convs if k is not None]
    if len(convs) != 1 or not _epilogue_ok(sch, convs[0][0]):
        return func
    conv, kind = convs[0]
    for b in blocks:
        is_conv = sch.get(b).same_as(sch.get(conv))
        sch.annotate(b, RULE_KEY, rule_name(kind, lanes) if is_conv else SKIP)
    sch.annotate(root, RULE_KEY, SKIP)  # no default ParallelVectorizeUnroll on top of the rule's own
    return sch.mod["main"]


def annotate(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Return `mod` with the custom-rule annotations on every matching kernel (idempotent; CPU rules only)."""
    if target.kind.name != "llvm":
        return mod
    lanes = vector_lanes(target)
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            new = _annotate_func(func, lanes)
            if not new.same_as(func):
                updates[gv] = new
    if not updates:
        return mod
    mod = mod.shallow_copy() if hasattr(mod, "shallow_copy") else tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in updates.items():
        mod[gv] = func
    return mod
