"""Whole separable blocks as one kernel: a 3x3 depthwise conv (+ bias, ReLU) and the 1x1 conv that is its only
consumer, merged into one primitive function after FuseOps, so that FuseTIR makes a single kernel of both.

The depthwise output then lives inside the kernel; the block schedule (`schedule/rules/conv.py`,
`separable_block`) computes it a few rows at a time, into a cache-resident tile the 1x1 consumes at once,
instead of a round trip through memory. It pays where the feature map is large and the 1x1 weights small;
where the weights are large (14x14x512, 7x7x1024) every row tile streams them again. Measured in the whole
model (AVX-512, 2 threads, one process alternating builds, 20 rounds; default block schedules against the
shipped records of the separate kernels): fusing the stride-1 blocks of at least MIN_ROWS rows took 0.985x
the time at 1.0-224, 0.97x at 0.5-224, 1.00x at 0.25-224 and 0.96-0.97x at 0.25-128; with AVX2 code
0.99-1.00x. Fusing the 14- and 16-row blocks too gained 0.5-224 and 0.25-128 a little more but cost AVX2
code 1.06x at 1.0-224; the 7- and 4-row ones cost 0.25-128 1.09x; the two stride-2 blocks, fused too with
default schedules, gained 0.3-1.6% (not worth a kernel kind without records). Hence stride-1 blocks of at
least `MIN_ROWS` output rows only, and by default only for float32 models on x86 (pipeline.fuses_blocks;
`--fuse-blocks` / `--no-fuse-blocks`).
"""

from __future__ import annotations

import tvm
from tvm import relax

from .groups import conv_kind, merge_groups, rebuilt_main, shape, use_counts

MIN_ROWS = 28


def _conv_name(mod: tvm.IRModule, group) -> str:
    """The name of a group's conv kernel (conv2d5): a fused block is named block_<depthwise>_<1x1>."""
    first = mod[group].body.blocks[0].bindings[0].value
    return first.args[0].name_hint


@tvm.transform.module_pass(opt_level=0, name="FuseSeparableBlocks")
def fuse_separable_blocks(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After FuseOps, before FuseTIR: each stride-1 depthwise group whose only user is a 1x1 group, with an
    output of at least MIN_ROWS rows, merged with it into one primitive function (shared by equal pairs)."""
    main = mod["main"]
    if len(main.body.blocks) != 1:
        return mod
    kinds = {
        gv: conv_kind(mod, f)
        for gv, f in mod.functions_items()
        if isinstance(f, relax.Function) and f.attrs is not None and f.attrs.get("Primitive")
    }
    bindings = list(main.body.blocks[0].bindings)
    uses = use_counts(main)
    producer = {b.var: b.value for b in bindings}
    pairs: dict = {}  # 1x1 binding var -> (depthwise call, 1x1 call)
    for b in bindings:
        call = b.value
        if not (isinstance(call, relax.Call) and kinds.get(call.op) == "conv1x1"):
            continue
        src = producer.get(call.args[0])
        out_rows = shape(b.var.ty)[1]
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
            func = merge_groups(mod[dw_call.op], mod[pw_call.op])
            merged[key] = builder.add_func(func, f"block_{_conv_name(mod, dw_call.op)}_{_conv_name(mod, pw_call.op)}")
    new = [
        relax.VarBinding(b.var, relax.Call(merged[(p[0].op, p[1].op)], list(p[0].args) + list(p[1].args[1:])))
        if (p := pairs.get(b.var)) is not None
        else b
        for b in bindings
    ]
    return rebuilt_main(mod, builder, new)
