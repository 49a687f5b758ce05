"""Mark the fused kernels that the custom conv rules handle (block annotation "schedule_rule"): a kernel
with one 1x1 or 3x3 depthwise conv, or a separable block (graph/blocks.py: a depthwise conv feeding a 1x1).

A 1x1 kernel's (or block's) weight is also marked layout-free, so MetaSchedule's RewriteLayout postproc packs it into
the panels the schedule reads, and `passes.fold_weight_layouts` does that once, at compile time.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.target import Target

from ...graph.groups import STEM_CHANNELS  # input channels of a first conv; its 9 x Cin taps are unrolled
from ...graph.passes import with_functions
from .isa import Isa, isa_for

RULE_KEY = "schedule_rule"
SKIP = "None"  # ApplyCustomRule leaves such a block alone and the default rules skip it too
LAYOUT_FREE = "layout_free_buffers"


def _shape(buf) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)


def classify(sch: s_tir.Schedule, block) -> str | None:
    """'dw3x3' for a 3x3 depthwise NHWC conv, 'conv1x1' for a 1x1 NHWC conv (HWIO weights), 'stem3x3' for a
    float32 3x3 NHWC conv of at most STEM_CHANNELS input channels (a network's first conv), else None."""
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
    floats = all(str(r.source.dtype) == "float32" for r in (*stmt.reads, *stmt.writes))
    if name.startswith("conv2d_nhwc") and weight[:2] == (3, 3) and weight[2] <= STEM_CHANNELS and floats:
        return "stem3x3"
    return None


def _epilogue_ok(sch: s_tir.Schedule, block, until=None) -> bool:
    """The conv's consumers form a single chain of elementwise blocks (bias add, ReLU, ...), ending at the
    kernel's output or, with `until`, at that block."""
    cur = block
    while True:
        consumers = sch.get_consumers(cur)
        if not consumers:
            return until is None
        if len(consumers) != 1:
            return False
        cur = consumers[0]
        if until is not None and sch.get(cur).same_as(sch.get(until)):
            return True
        if any(int(iv.iter_type) != 0 for iv in sch.get(cur).iter_vars):
            return False


def _rule_block(sch: s_tir.Schedule, blocks) -> tuple | None:
    """(the block the rule schedules, kind): the one conv of a conv kernel, or the 1x1 conv of a separable
    block (graph/blocks.py: a 3x3 depthwise conv whose elementwise chain feeds a 1x1 conv)."""
    convs = [(b, classify(sch, b)) for b in blocks]
    convs = [(b, k) for b, k in convs if k is not None]
    if len(convs) == 1 and _epilogue_ok(sch, convs[0][0]):
        return convs[0]
    if [k for _, k in convs] == ["dw3x3", "conv1x1"]:
        (dw, _), (pw, _) = convs
        if _epilogue_ok(sch, dw, until=pw) and _epilogue_ok(sch, pw):
            return pw, "sepblock"
    return None


def _param_index(func: tirx.PrimFunc, buffer) -> int | None:
    """The parameter that is `buffer` itself (a separable block has two `param_0`s: names do not tell)."""
    return next((i for i, p in enumerate(func.params) if p.same_as(buffer)), None)


def _annotate_func(func: tirx.PrimFunc, isa: Isa) -> tirx.PrimFunc:
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    found = _rule_block(sch, blocks)
    if found is None:
        return func
    conv, kind = found
    for b in blocks:
        is_conv = sch.get(b).same_as(sch.get(conv))
        sch.annotate(b, RULE_KEY, isa.rule(kind) if is_conv else SKIP)
    sch.annotate(root, RULE_KEY, SKIP)  # no default ParallelVectorizeUnroll on top of the rule's own
    out = sch.mod["main"]
    weight = _param_index(func, sch.get(conv).reads[1].source)
    if kind in ("conv1x1", "sepblock") and weight is not None:
        out = out.with_attr(LAYOUT_FREE, [weight])
    return out


def annotate(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Return `mod` with the custom-rule annotations on every matching kernel (idempotent; CPU rules only)."""
    if target.kind.name != "llvm":
        return mod
    isa = isa_for(target)
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            new = _annotate_func(func, isa)
            if not new.same_as(func):
                updates[gv] = new
    return with_functions(mod, updates)
