"""The TIR lowering of every kernel we build (artifacts and tuning candidates alike): TVM's default
pipeline, plus a parallel loop's register-sized tile buffers kept on the stack.

TVM's lowering (LowerTVMBuiltin) gives every buffer of 1 KB or more a TVMBackendAllocWorkspace /
TVMBackendFreeWorkspace pair. A buffer allocated inside a parallel loop is allocated and freed once per
iteration: a 1x1 conv's accumulator tile (mr x nr vectors, 1 KB at 4 x 4 zmm) once per register block. On
layers with few input channels a block takes a few hundred nanoseconds, about what the pair costs (AVX-512,
1.0-224: the 112x112 32->64 1x1 took 0.72x the time, the 56x56 128->128 one 0.74x, with its tiles on the
stack). Marked `disable_lower_builtin`, such a buffer becomes a stack slot, and LLVM keeps an exactly
sized tile in registers. Only tiles the size of the register file (STACK_LIMIT): a stride-1 depthwise
conv's padded input tile (3 KB at 1.0-224) on the stack made those kernels 1.17-1.29x slower.
"""

from __future__ import annotations

import tvm
from tvm import tirx

from ..graph.passes import with_functions

STACK_LIMIT = 32 * 64  # bytes: 32 zmm registers; larger tile buffers keep TVM's workspace pool
_KEY = "disable_lower_builtin"  # LowerTVMBuiltin leaves an AllocBuffer so annotated to LLVM (a stack slot)
NAME = "mnet"  # tvm.compile(..., tir_pipeline=NAME)


def _bytes(buffer) -> int | None:
    count = 1
    for dim in buffer.shape:
        if not isinstance(dim, tirx.IntImm):
            return None
        count *= int(dim)
    dtype = tvm.runtime.DataType(buffer.dtype)
    return count * dtype.bits * dtype.lanes // 8


def _on_stack(stmt, parallel: bool):
    """`stmt` with the small AllocBuffers inside parallel loops marked for the stack (the same object if
    nothing changed). Lowered TIR is flat: buffers are statements in SeqStmts under loops and branches."""
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_on_stack(s, parallel) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq, stmt.span)
    if isinstance(stmt, tirx.For):
        body = _on_stack(stmt.body, parallel or stmt.kind == tirx.ForKind.PARALLEL)
        if body.same_as(stmt.body):
            return stmt
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
                        stmt.annotations, stmt.step, stmt.span)
    if isinstance(stmt, (tirx.While, tirx.AttrStmt)):
        body = _on_stack(stmt.body, parallel)
        if body.same_as(stmt.body):
            return stmt
        if isinstance(stmt, tirx.While):
            return tirx.While(stmt.condition, body, stmt.span)
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then = _on_stack(stmt.then_case, parallel)
        other = None if stmt.else_case is None else _on_stack(stmt.else_case, parallel)
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    if isinstance(stmt, tirx.AllocBuffer) and parallel and _KEY not in stmt.annotations:
        size = _bytes(stmt.buffer)
        if size and size <= STACK_LIMIT and stmt.buffer.scope() in ("global", "local"):
            return tirx.AllocBuffer(stmt.buffer, annotations={**stmt.annotations, _KEY: tirx.IntImm("bool", 1)}, span=stmt.span)
    return stmt


@tvm.transform.module_pass(opt_level=0, name="StackTiles")
def stack_tiles(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Mark the small buffers of parallel loop bodies for the stack (after lowering, before LowerTVMBuiltin)."""
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not (body := _on_stack(func.body, False)).same_as(func.body):
            updates[gv] = func.with_body(body)
    return with_functions(mod, updates)


def _pipeline():
    lower, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")
    return tvm.transform.Sequential([lower, stack_tiles]), finalize_host, finalize_device


tvm.tirx.register_tir_pipeline(NAME, _pipeline)
