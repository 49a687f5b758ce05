"""The default schedule of a kernel the conv rules handle: the rule's sketch with the knobs that
`blocking` derives from the shape and the ISA, postprocessed exactly as a tuning candidate is."""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from .annotate import RULE_KEY
from .blocking import depthwise, pointwise, separable, stem
from .conv import RULES, padded_copy, simd_width
from .isa import ISAS


def _rule_block(sch: s_tir.Schedule):
    """(block, kind, isa) of the block annotated with one of our rules, or None."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = str(sch.get(block).annotations.get(RULE_KEY, ""))
        if name.startswith("mnet."):
            _, kind, isa = name.split(".", 2)
            if kind in RULES and isa in ISAS:
                return block, kind, ISAS[isa]
    return None


def _decisions(sch: s_tir.Schedule, block, kind: str, isa, cores: int) -> dict:
    out = [int(d) for d in sch.get(block).writes[0].source.shape]  # (1, H, W, C)
    vectors = out[3] // simd_width(out[3], isa.lanes)
    if kind == "conv1x1":
        return pointwise(out[1], out[2], vectors, isa, cores)
    if kind == "stem3x3":
        return stem(out[1], out[2], vectors, isa, cores)
    if kind == "sepblock":
        cin = int(sch.get(block).reads[0].source.shape[3])
        return separable(out[1], out[2], cin // simd_width(cin, isa.lanes), vectors, isa, cores)
    reads = {str(region.source.dtype) for region in sch.get(block).reads}
    float_sums = str(sch.get(block).writes[0].source.dtype) == "float32"
    exact_int8 = float_sums and "int8" in reads  # int8 summed in float32 (frontends.integer.exact_float_depthwise)
    return depthwise(out[1], out[2], vectors, isa, cores, exact_int8, padded=padded_copy(sch, block))


def default_schedule(kmod: tvm.IRModule, target: Target) -> s_tir.Schedule | None:
    """The derived schedule of `kmod` (a kernel module as MetaSchedule hashes it), or None when no conv
    rule handles it. Deterministic: the same kernel and target always give the same schedule; its trace
    is a tuning candidate's (sketch with fixed decisions, then the postprocs)."""
    sch = s_tir.Schedule(kmod)
    found = _rule_block(sch)
    if found is None:
        return None
    block, kind, isa = found
    cores = int(target.attrs.get("num-cores", 1) or 1)
    (sch,) = RULES[kind](sch, block, isa, decide=_decisions(sch, block, kind, isa, cores))
    if (rejected := postprocess(sch, target)) is not None:
        raise RuntimeError(f"postproc {rejected} rejected the default {kind} schedule")
    return sch


def own_sketch(kmod: tvm.IRModule) -> s_tir.Schedule | None:
    """`kmod` on the one sketch of the fp32 conv rule that handles it (knobs sampled), or None when no rule
    or a rule of several sketches (the separable block's) handles it. Its trace replays a record of a
    similar kernel with the parallel order this kernel's own shape derives (`conv.tile_order`)."""
    sch = s_tir.Schedule(kmod)
    found = _rule_block(sch)
    if found is None:
        return None
    block, kind, isa = found
    sketches = RULES[kind](sch, block, isa)
    return sketches[0] if len(sketches) == 1 else None


def postprocess(sch: s_tir.Schedule, target: Target) -> str | None:
    """Apply the CPU postprocs to `sch` as a tuning candidate gets them; the name of the one that rejects
    it, or None."""
    sch.enter_postproc()
    with target:
        for postproc in ms.Postproc.create("llvm"):
            if not postproc.apply(sch):
                return type(postproc).__name__
    return None
