"""The graph pipeline, in one place: BatchNorm folding, constant folding, layout, legalization, fusion."""

from __future__ import annotations

import tvm
from tvm import relax

# Convolutions run in NHWC with HWIO weights: a 1x1 conv is then a plain (H*W, Cin) x (Cin, Cout) matmul,
# and the depthwise conv reads contiguous channel vectors. Weights are transformed once, here, by FoldConstant.
CONV_LAYOUT = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


def optimize(mod: tvm.IRModule) -> tvm.IRModule:
    """Graph-level rewrites on the imported module: fold BN into the convs, fold constants, go NHWC."""
    return tvm.transform.Sequential(
        [
            relax.transform.FoldBatchnormToConv2D(),
            relax.transform.DecomposeOpsForInference(),  # any BatchNorm left (not after a conv) -> mul/add
            relax.transform.FoldConstant(),  # must precede ConvertLayout (it crashes on unfolded BN)
            relax.transform.ConvertLayout(CONV_LAYOUT),
            relax.transform.FoldConstant(),  # weight layout transforms happen here, at compile time
        ]
    )(mod)


def fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """Lower operators to TIR and fuse them into kernels: the module MetaSchedule tunes and looks up."""
    return tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )(mod)


def finalize(mod: tvm.IRModule) -> tvm.IRModule:
    """Dataflow lowering and memory planning after the kernels are scheduled."""
    return tvm.transform.Sequential(
        [
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
