"""The TIR lowering of every kernel we build (artifacts and tuning candidates alike): TVM's default
pipeline, plus a parallel loop's register-sized tile buffers kept on the stack, plus software prefetch of
the weight stream where a schedule asks for it.

TVM's lowering (LowerTVMBuiltin) gives every buffer of 1 KB or more a TVMBackendAllocWorkspace /
TVMBackendFreeWorkspace pair. A buffer allocated inside a parallel loop is allocated and freed once per
iteration: a 1x1 conv's accumulator tile (mr x nr vectors, 1 KB at 4 x 4 zmm) once per register block. On
layers with few input channels a block takes a few hundred nanoseconds, about what the pair costs (AVX-512,
1.0-224: the 112x112 32->64 1x1 took 0.72x the time, the 56x56 128->128 one 0.74x, with its tiles on the
stack). Marked `disable_lower_builtin`, such a buffer becomes a stack slot, and LLVM keeps an exactly
sized tile in registers. Only tiles the size of the register file (STACK_LIMIT): a stride-1 depthwise
conv's padded input tile (3 KB at 1.0-224) on the stack made those kernels 1.17-1.29x slower.

Prefetch (`PREFETCH`, a loop annotation the 1x1 rule sets where a layer's weights are at least its input):
in a whole-model run a layer's weights are not in the core's L2 (the model's weights are several MB), and
the reduction loop of a 1x1 register block waits on the last-level cache for them. The annotated loop's
body gets, beside each vector load of a buffer it does not write, a prefetch of the same vector
PREFETCH_BYTES ahead, into L2 (as XNNPACK's `prfm` AArch64 GEMM kernels prefetch their packed weights).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

from ..graph.passes import with_functions

STACK_LIMIT = 32 * 64  # bytes: 32 zmm registers; larger tile buffers keep TVM's workspace pool
_KEY = "disable_lower_builtin"  # LowerTVMBuiltin leaves an AllocBuffer so annotated to LLVM (a stack slot)
NAME = "mnet"  # tvm.compile(..., tir_pipeline=NAME)
PREFETCH = "mnet.prefetch"  # loop annotation: prefetch the body's read-only vectors this many bytes ahead
PREFETCH_BYTES = 4096
_L2 = 2  # llvm.prefetch locality: x86 prefetcht1, AArch64 PLDL2KEEP


def _bytes(buffer) -> int | None:
    count = 1
    for dim in buffer.shape:
        if not isinstance(dim, tirx.IntImm):
            return None
        count *= int(dim)
    dtype = tvm.runtime.DataType(buffer.dtype)
    return count * dtype.bits * dtype.lanes // 8


def _rebuilt(stmt, visit, parallel: bool = False):
    """`stmt` with `visit(s, parallel)` applied top-down: where it returns a statement, that replaces `s`;
    where None, the walk goes on into `s`'s children. Lowered TIR is flat: statements in SeqStmts under
    loops, branches and attributes. `parallel`: inside a parallel loop. The same object where nothing changed."""
    if (new := visit(stmt, parallel)) is not None:
        return new
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_rebuilt(s, visit, parallel) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq, stmt.span)
    if isinstance(stmt, tirx.For):
        body = _rebuilt(stmt.body, visit, parallel or stmt.kind == tirx.ForKind.PARALLEL)
        return stmt if body.same_as(stmt.body) else _loop(stmt, body, stmt.annotations)
    if isinstance(stmt, (tirx.While, tirx.AttrStmt)):
        body = _rebuilt(stmt.body, visit, parallel)
        if body.same_as(stmt.body):
            return stmt
        if isinstance(stmt, tirx.While):
            return tirx.While(stmt.condition, body, stmt.span)
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then = _rebuilt(stmt.then_case, visit, parallel)
        other = None if stmt.else_case is None else _rebuilt(stmt.else_case, visit, parallel)
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    return stmt


def _loop(loop, body, annotations):
    return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, body, loop.thread_binding, annotations,
                    loop.step, loop.span)


def _function_pass(visit, name: str):
    """A module pass that rebuilds every PrimFunc's body with `visit` (see _rebuilt)."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def rewrite(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc) and not (body := _rebuilt(func.body, visit)).same_as(func.body):
                updates[gv] = func.with_body(body)
        return with_functions(mod, updates)

    return rewrite


def _stack_tile(stmt, parallel: bool):
    """A small AllocBuffer inside a parallel loop, marked for the stack; None for any other statement."""
    if isinstance(stmt, tirx.AllocBuffer) and parallel and _KEY not in stmt.annotations:
        size = _bytes(stmt.buffer)
        if size and size <= STACK_LIMIT and stmt.buffer.scope() in ("global", "local"):
            return tirx.AllocBuffer(stmt.buffer, annotations={**stmt.annotations, _KEY: tirx.IntImm("bool", 1)}, span=stmt.span)
    return None


def _loads(expr, found: list) -> None:
    """The buffer loads in `expr` (lowered TIR: arithmetic, broadcasts, casts, calls)."""
    if isinstance(expr, tvm.ir.TensorLoad):
        found.append(expr)
        return
    for field in ("a", "b", "value", "condition", "true_value", "false_value"):
        if isinstance(sub := getattr(expr, field, None), tvm.ir.Expr):
            _loads(sub, found)
    if isinstance(expr, tvm.ir.Call):
        for arg in expr.args:
            _loads(arg, found)


def _prefetch_loop(stmt, _parallel: bool):
    """A PREFETCH-annotated loop whose (flat, unrolled) body prefetches, after each store, the vectors the
    store reads from buffers the body does not write, the annotation's bytes ahead; None for any other."""
    if not isinstance(stmt, tirx.For) or PREFETCH not in stmt.annotations:
        return None
    annotations = dict(stmt.annotations)
    distance = int(annotations.pop(PREFETCH))
    stmts = list(stmt.body.seq) if isinstance(stmt.body, tirx.SeqStmt) else [stmt.body]
    written = {s.buffer.data for s in stmts if isinstance(s, tirx.BufferStore)}
    seen, body = [], []
    for store in stmts:
        body.append(store)
        found = []
        if isinstance(store, tirx.BufferStore):
            _loads(store.value, found)
        for load in found:
            index = load.indices[0] if len(load.indices) == 1 else None
            if load.source.data in written or not isinstance(index, tirx.Ramp):
                continue
            if any(tvm_ffi.structural_equal(index, other) for other in seen):
                continue
            seen.append(index)
            ahead = tirx.BufferLoad(load.source, [index.base + distance * 8 // tvm.runtime.DataType(load.source.dtype).bits])
            flags = [tirx.const(v, "int32") for v in (0, _L2, 1)]  # read, locality, data cache
            address = tirx.call_intrin("handle", "tirx.address_of", ahead)
            body.append(tirx.Evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch.p0", address, *flags)))
    return _loop(stmt, tirx.SeqStmt(body), annotations)


# After TVM's lowering (loops unrolled, flat), before LowerTVMBuiltin.
stack_tiles = _function_pass(_stack_tile, "StackTiles")
prefetch_weights = _function_pass(_prefetch_loop, "PrefetchWeights")


def _pipeline():
    lower, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")
    return tvm.transform.Sequential([lower, stack_tiles, prefetch_weights]), finalize_host, finalize_device


tvm.tirx.register_tir_pipeline(NAME, _pipeline)
