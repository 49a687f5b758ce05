"""Whole separable blocks as one kernel: a 3x3 depthwise conv (+ bias, ReLU) and the 1x1 conv that is its only
consumer, merged into one primitive function after FuseOps, so that FuseTIR makes a single kernel of both.

The depthwise output then lives inside the kernel; the block schedule (`schedule/rules/conv.py`,
`separable_block`) computes it a few rows at a time, into a cache-resident tile the 1x1 consumes at once,
instead of a round trip through memory. It pays where the feature map is large and the 1x1 weights small;
where the weights are large (14x14x512, 7x7x1024) every row tile streams them again. Measured per block on
AVX-512 (1.0-224, 2 threads):
- default schedules of both forms, each kernel alone: fused 0.57-0.82x the separate kernels' time on maps
  of 28 rows or more, 1.0-1.8x at 14 and 7 rows;
- in the whole model, fused default against the shipped tuned records of the separate kernels: 0.74-0.93x
  for the stride-1 blocks of 28-112 rows, 1.11x for the two stride-2 ones (112->56, 56->28).
Hence only stride-1 blocks with at least `MIN_ROWS` output rows are fused. Whole-model runs against the
tuned records of the separate kernels showed no gain yet (README), so it is opt-in: `--fuse-blocks`.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir

MIN_ROWS = 28
_CONV_BLOCKS = ("conv2d_nhwc", "group_conv2d_nhwc", "depthwise_conv2d_nhwc")


def _shape(sinfo) -> tuple[int, ...] | None:
    shape = getattr(sinfo, "shape", None)
    if shape is None or str(getattr(sinfo, "dtype", "")) != "float32":
        return None
    try:
        return tuple(int(d) for d in shape.values)
    except (AttributeError, TypeError):
        return None


def _conv_kind(mod: tvm.IRModule, group: relax.Function) -> str | None:
    """'dw3x3' (stride 1), 'dw3x3-strided' or 'conv1x1' for a fused group that is one NHWC conv of its first parameter (weights HWIO)
    followed by elementwise ops of the conv's output shape; else None."""
    bindings = [b for block in group.body.blocks for b in block.bindings]
    calls = [b.value for b in bindings]
    if not calls or not all(isinstance(c, relax.Call) and c.op.name == "relax.call_tir" for c in calls):
        return None
    conv_args = calls[0].args[1].fields
    if len(group.params) < 2 or len(conv_args) != 2 or not conv_args[0].same_as(group.params[0]):
        return None
    x, weight, out = (_shape(group.params[0].ty), _shape(conv_args[1].ty), _shape(bindings[0].var.ty))
    if x is None or weight is None or out is None or len(x) != 4 or len(weight) != 4:
        return None
    if any(_shape(b.var.ty) != out for b in bindings):
        return None
    sch = s_tir.Schedule(tvm.IRModule({"main": mod[calls[0].args[0]]}))
    names = {str(sch.get(block).name_hint) for block in sch.get_child_blocks(sch.get_sblock("root"))}
    if not names & set(_CONV_BLOCKS):
        return None
    if weight[:3] == (3, 3, 1) and weight[3] == x[3] == out[3]:
        return "dw3x3" if out[1:3] == x[1:3] else "dw3x3-strided"
    if weight[:2] == (1, 1) and weight[2] == x[3] and out[:3] == x[:3]:
        return "conv1x1"
    return None


def _conv_name(mod: tvm.IRModule, group) -> str:
    """The name of a group's conv kernel (conv2d5): a fused block is named block_<depthwise>_<1x1>."""
    first = mod[group].body.blocks[0].bindings[0].value
    return first.args[0].name_hint


def _merged(dw: relax.Function, pw: relax.Function) -> relax.Function:
    """One primitive function: the depthwise group's bindings, then the 1x1 group's reading their result."""
    pw = pw.bind_params({pw.params[0]: dw.body.body})
    bindings = [b for f in (dw, pw) for block in f.body.blocks for b in block.bindings]
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], pw.body.body)
    return relax.Function(list(dw.params) + list(pw.params), body, pw.ret_ty).with_attr("Primitive", True)


@tvm.transform.module_pass(opt_level=0, name="FuseSeparableBlocks")
def fuse_separable_blocks(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After FuseOps, before FuseTIR: each stride-1 depthwise group whose only user is a 1x1 group, with an
    output of at least MIN_ROWS rows, merged with it into one primitive function (shared by equal pairs)."""
    main = mod["main"]
    if len(main.body.blocks) != 1:
        return mod
    kinds = {
        gv: _conv_kind(mod, f)
        for gv, f in mod.functions_items()
        if isinstance(f, relax.Function) and f.attrs is not None and f.attrs.get("Primitive")
    }
    bindings = list(main.body.blocks[0].bindings)
    uses: dict = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            uses[v] = uses.get(v, 0) + 1
    for v in relax.analysis.free_vars(main.body.body):
        uses[v] = uses.get(v, 0) + 1
    producer = {b.var: b.value for b in bindings}
    pairs: dict = {}  # 1x1 binding var -> (depthwise call, 1x1 call)
    for b in bindings:
        call = b.value
        if not (isinstance(call, relax.Call) and kinds.get(call.op) == "conv1x1"):
            continue
        src = producer.get(call.args[0])
        out_rows = _shape(b.var.ty)[1]
        if src is None or uses.get(call.args[0]) != 1 or kinds.get(getattr(src, "op", None)) != "dw3x3":
            continue
        if out_rows >= MIN_ROWS:
            pairs[b.var] = (src, call)
    if not pairs:
        return mod
    builder = relax.BlockBuilder(mod)
    merged: dict = {}
    for dw_call, pw_call in pairs.values():
        key = (dw_call.op, pw_call.op)
        if key not in merged:
            func = _merged(mod[dw_call.op], mod[pw_call.op])
            merged[key] = builder.add_func(func, f"block_{_conv_name(mod, dw_call.op)}_{_conv_name(mod, pw_call.op)}")
    new = [
        relax.VarBinding(b.var, relax.Call(merged[(p[0].op, p[1].op)], list(p[0].args) + list(p[1].args[1:])))
        if (p := pairs.get(b.var)) is not None
        else b
        for b in bindings
    ]
    body = relax.SeqExpr([relax.DataflowBlock(new)], main.body.body)
    builder.update_func(mod.get_global_var("main"), relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs))
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(builder.get()))
