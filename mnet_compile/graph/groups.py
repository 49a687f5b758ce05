"""Shared helpers of the graph passes that merge FuseOps' groups (blocks.py, input_layout.py): what a group
computes, two groups as one, and `main` rebuilt with new bindings."""

from __future__ import annotations

import tvm
from tvm import relax, s_tir

STEM_CHANNELS = 4  # input channels of a network's first conv (RGB)
_CONV_BLOCKS = ("conv2d_nhwc", "group_conv2d_nhwc", "depthwise_conv2d_nhwc")


def shape(sinfo) -> tuple[int, ...] | None:
    """The static shape of a float32 tensor's type; else None."""
    dims = getattr(sinfo, "shape", None)
    if dims is None or str(getattr(sinfo, "dtype", "")) != "float32":
        return None
    try:
        return tuple(int(d) for d in dims.values)
    except (AttributeError, TypeError):
        return None


def conv_kind(mod: tvm.IRModule, group: relax.Function) -> str | None:
    """'dw3x3' (stride 1), 'dw3x3-strided', 'conv1x1' or 'stem3x3' (a 3x3 conv of at most STEM_CHANNELS
    input channels) for a fused group that is one NHWC conv of its first parameter (weights HWIO) followed
    by elementwise ops of the conv's output shape; else None."""
    bindings = [b for block in group.body.blocks for b in block.bindings]
    calls = [b.value for b in bindings]
    if not calls or not all(isinstance(c, relax.Call) and c.op.name == "relax.call_tir" for c in calls):
        return None
    conv_args = calls[0].args[1].fields
    if len(group.params) < 2 or len(conv_args) != 2 or not conv_args[0].same_as(group.params[0]):
        return None
    x, weight, out = (shape(group.params[0].ty), shape(conv_args[1].ty), shape(bindings[0].var.ty))
    if x is None or weight is None or out is None or len(x) != 4 or len(weight) != 4:
        return None
    if any(shape(b.var.ty) != out for b in bindings):
        return None
    sch = s_tir.Schedule(tvm.IRModule({"main": mod[calls[0].args[0]]}))
    names = {str(sch.get(block).name_hint) for block in sch.get_child_blocks(sch.get_sblock("root"))}
    if not names & set(_CONV_BLOCKS):
        return None
    if weight[:3] == (3, 3, 1) and weight[3] == x[3] == out[3]:
        return "dw3x3" if out[1:3] == x[1:3] else "dw3x3-strided"
    if weight[:2] == (1, 1) and weight[2] == x[3] and out[:3] == x[:3]:
        return "conv1x1"
    if weight[:2] == (3, 3) and weight[2] == x[3] <= STEM_CHANNELS:
        return "stem3x3"
    return None


def merge_groups(first: relax.Function, second: relax.Function) -> relax.Function:
    """One primitive function: the `first` group's bindings, then those of `second`, whose first parameter
    is the result of `first`."""
    second = second.bind_params({second.params[0]: first.body.body})
    bindings = [b for f in (first, second) for block in f.body.blocks for b in block.bindings]
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], second.body.body)
    return relax.Function(list(first.params) + list(second.params), body, second.ret_ty).with_attr("Primitive", True)


def use_counts(main: relax.Function) -> dict:
    """{variable: how many bindings (and the result) of `main`'s dataflow block read it}."""
    uses: dict = {}
    for expr in [b.value for b in main.body.blocks[0].bindings] + [main.body.body]:
        for v in relax.analysis.free_vars(expr):
            uses[v] = uses.get(v, 0) + 1
    return uses


def rebuilt_main(mod: tvm.IRModule, builder: relax.BlockBuilder, bindings: list) -> tvm.IRModule:
    """`builder`'s module (`mod` plus the merged groups added to it) with `main`'s dataflow block replaced by
    `bindings`; groups no longer called are dropped."""
    main = mod["main"]
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], main.body.body)
    builder.update_func(mod.get_global_var("main"), relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs))
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(builder.get()))
