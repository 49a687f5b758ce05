"""The input's layout change inside the first conv's kernel. ConvertLayout turns the NCHW image into NHWC with
a transpose kernel of its own: a pass over the image, written to memory, before the first conv starts. Merged into
the first conv's group after FuseOps, it becomes part of that kernel, where the stem schedule inlines it into
the padded input tiles (`schedule/rules/conv.py`, `stem_3x3`): the conv reads the NCHW image directly."""

from __future__ import annotations

import tvm
from tvm import relax, s_tir

from .groups import conv_kind, merge_groups, rebuilt_main, use_counts


def _transpose_group(mod: tvm.IRModule, call, inputs) -> relax.Function | None:
    """The transpose kernel call of a model input (FuseOps leaves a lone kernel unfused), as a primitive
    group of its own; else None."""
    if getattr(call, "op", None) is None or getattr(call.op, "name", None) != "relax.call_tir":
        return None
    kernel, args = call.args[0], call.args[1].fields
    if len(args) != 1 or args[0] not in inputs:
        return None
    arg = args[0]
    sch = s_tir.Schedule(tvm.IRModule({"main": mod[kernel]}))
    if [str(sch.get(b).name_hint) for b in sch.get_child_blocks(sch.get_sblock("root"))] != ["T_transpose"]:
        return None
    x = relax.Var("x", arg.ty)
    out = relax.Var("lv", call.ty)
    body = relax.SeqExpr([relax.DataflowBlock([relax.VarBinding(out, relax.Call(call.op, [kernel, relax.Tuple([x])], call.attrs, call.ty_args))])], out)
    return relax.Function([x], body, call.ty).with_attr("Primitive", True)


@tvm.transform.module_pass(opt_level=0, name="FuseInputTranspose")
def fuse_input_transpose(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After FuseOps, before FuseTIR: a transpose of the model's input whose only user is a first-conv
    group ('stem3x3'), merged with it into one primitive function."""
    main = mod["main"]
    if len(main.body.blocks) != 1:
        return mod
    bindings = list(main.body.blocks[0].bindings)
    uses = use_counts(main)
    inputs = set(main.params)
    transposes = {b.var: (b.value, g) for b in bindings if uses.get(b.var) == 1 and (g := _transpose_group(mod, b.value, inputs))}
    builder = relax.BlockBuilder(mod)
    new, changed = [], False
    for b in bindings:
        call = b.value
        src, group = transposes.get(call.args[0], (None, None)) if isinstance(call, relax.Call) and call.args else (None, None)
        if src is not None and isinstance(call.op, tvm.ir.GlobalVar) and conv_kind(mod, mod[call.op]) == "stem3x3":
            gv = builder.add_func(merge_groups(group, mod[call.op]), f"transpose_{call.op.name_hint}")
            b, changed = relax.VarBinding(b.var, relax.Call(gv, list(src.args[1].fields) + list(call.args[1:]))), True
        new.append(b)
    return rebuilt_main(mod, builder, new) if changed else mod
