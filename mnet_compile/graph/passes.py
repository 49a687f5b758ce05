"""The graph pipeline, in one place: BatchNorm folding, constant folding, layout, legalization, fusion."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst, Var
from tvm.ir.prim.expr import FloatImm

from .blocks import fuse_separable_blocks
from .input_layout import fuse_input_transpose
from .padding import pad_channels

# Convolutions run in NHWC with HWIO weights: a 1x1 conv is then a plain (H*W, Cin) x (Cin, Cout) matmul,
# and the depthwise conv reads contiguous channel vectors. Weights are transformed once, here, by FoldConstant.
CONV_LAYOUT = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


_NUMPY_OPS = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.sqrt": np.sqrt,
    "relax.rsqrt": lambda a: 1 / np.sqrt(a),
}


def _constant(expr):
    if isinstance(expr, GenericConst):
        return expr.value.numpy()
    if isinstance(expr, FloatImm):
        return np.float32(expr.value)
    return None


@relax.expr_functor.mutator
class _NumpyFolder(relax.PyExprMutator):
    """Evaluates weight arithmetic (BN scales, reshapes, transposes) with numpy.

    FoldConstant compiles every constant operator with LLVM: ~15 s per model. This does the same in ~0.1 s
    for the operators BN folding and layout conversion produce; FoldConstant still catches the rest.
    """

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        args = [_constant(self.lookup_binding(a) if isinstance(a, Var) else a) for a in call.args]
        name = call.op.name
        if name in _NUMPY_OPS and all(a is not None for a in args):
            value = _NUMPY_OPS[name](*args)
        elif name == "relax.reshape" and args[0] is not None:
            value = args[0].reshape([int(d) for d in call.args[1].values])
        elif name == "relax.permute_dims" and args[0] is not None:
            axes = call.attrs.axes
            value = args[0].transpose(None if axes is None else [int(a) for a in axes])
        else:
            return call
        dtype = str(args[0].dtype)
        return relax.const(np.ascontiguousarray(value, dtype=dtype), dtype)


def _mutate_relax_functions(mod: tvm.IRModule, mutator) -> tvm.IRModule:
    """A copy of `mod` with every Relax function rewritten by a fresh `mutator()`."""
    mod = mod.clone()
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod.update_func(gvar, mutator().visit_expr(func))
    return mod


@tvm.transform.module_pass(opt_level=0, name="FoldWeightsWithNumpy")
def fold_weights_with_numpy(mod, _ctx):
    return relax.transform.DeadCodeElimination()(_mutate_relax_functions(mod, _NumpyFolder))


@relax.expr_functor.mutator
class _DenseAsConv(relax.PyExprMutator):
    """A classifier `matmul(x[1, C], W[C, N])` with constant weights, as a 1x1 conv on x[1, 1, 1, C]: the
    conv rule then schedules it (a register-blocked GEMV over packed weights)."""

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.matmul":
            return call
        x, weight = call.args
        value = _constant(weight)
        shape = [int(d) for d in x.ty.shape] if hasattr(x.ty, "shape") else []
        if value is None or value.ndim != 2 or len(shape) != 2 or shape[0] != 1:
            return call
        channels, outputs = value.shape
        image = relax.op.reshape(x, [1, 1, 1, channels])
        kernel = relax.const(np.ascontiguousarray(value.reshape(1, 1, channels, outputs)))
        conv = relax.op.nn.conv2d(image, kernel, data_layout="NHWC", kernel_layout="HWIO", out_dtype=str(value.dtype))
        return relax.op.reshape(conv, [1, outputs])


@tvm.transform.module_pass(opt_level=0, name="DenseAsConv")
def dense_as_conv(mod, _ctx):
    return _mutate_relax_functions(mod, _DenseAsConv)


def with_functions(mod: tvm.IRModule, updates: dict) -> tvm.IRModule:
    """A copy of `mod` with the functions in `updates` (global var -> function) replaced; `mod` if none."""
    if not updates:
        return mod
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in updates.items():
        out[gv] = func
    return out


def optimize(mod: tvm.IRModule, lanes: int | None = None) -> tvm.IRModule:
    """Graph-level rewrites on the imported module: fold BN into the convs, fold constants, go NHWC,
    and (for a CPU with `lanes`-wide vectors) pad channel counts to the vector width."""
    mod = tvm.transform.Sequential(
        [
            relax.transform.FoldBatchnormToConv2D(),
            relax.transform.DecomposeOpsForInference(),  # any BatchNorm left (not after a conv) -> mul/add
            fold_weights_with_numpy,
            relax.transform.FoldConstant(),  # must precede ConvertLayout (it crashes on unfolded BN)
            relax.transform.ConvertLayout(CONV_LAYOUT),
            fold_weights_with_numpy,  # weight layout transforms happen here, once, at compile time
            relax.transform.FoldConstant(),
        ]
    )(mod)
    return dense_as_conv(pad_channels(mod, lanes)) if lanes else mod


def fuse(mod: tvm.IRModule, blocks: bool = False, input_transpose: bool = True) -> tvm.IRModule:
    """Lower operators to TIR and fuse them into kernels: the module MetaSchedule tunes and looks up. With
    `blocks`, a depthwise conv and the 1x1 conv after it become one kernel where that pays (blocks.py); with
    `input_transpose` (CPU), the input's NCHW -> NHWC transpose joins the first conv's kernel (input_layout.py)."""
    return tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            *([fuse_separable_blocks] if blocks else []),
            *([fuse_input_transpose] if input_transpose else []),
            relax.transform.FuseTIR(),
        ]
    )(mod)


def finalize(mod: tvm.IRModule) -> tvm.IRModule:
    """After the kernels are scheduled: weight packing done once (the layout rewrites the schedules asked
    for are split out of the kernels and folded into the constants), then dataflow lowering and memory
    planning."""
    return tvm.transform.Sequential(
        [
            relax.transform.SplitLayoutRewritePreproc(),
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
            relax.transform.RewriteDataflowReshape(),
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),
            relax.transform.StaticPlanBlockMemory(),
            relax.transform.LowerAllocTensor(),
            relax.transform.KillAfterLastUse(),
            relax.transform.LowerRuntimeBuiltin(),
            relax.transform.ComputePrimValue(),
            relax.transform.VMShapeLower(),
            relax.transform.AttachGlobalSymbol(),
        ]
    )(mod)
