"""The kernels' lowering (schedule/lowering.py): a 1x1 conv's accumulator tile is exactly its register block
and lives on the stack, not in TVM's workspace pool (TVM pools every buffer of 1 KB or more: a 4 x 4 zmm
tile on AVX-512; here AVX2 code, which runs on any x86-64 CI machine, with a 7 x 8 ymm block)."""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from tvm import s_tir

from mnet_compile.schedule import lowering
from mnet_compile.schedule.rules.conv import RULES
from mnet_compile.schedule.rules.default import _rule_block, postprocess
from mnet_compile.schedule.tunable import tunable_kernels

from .blocks import TARGET, fused_of, rule_of, run_kernel, separable_block


BLOCK = {"mr": 7, "nr": 8, "order": "panel"}  # half a row x 64 channels: 56 ymm accumulators, 1792 bytes
# (a block of the row made of the fused pixel loop had an 840-vector bounding box for its tile)


def _pointwise_kernel():
    """The 1x1 kernel of a 64 -> 128 channel block on a 14x14 map, scheduled by the 1x1 rule with BLOCK."""
    _, found = tunable_kernels(fused_of(separable_block(64, 128, 1), (1, 64, 14, 14)), TARGET)
    (kmod,) = [k for _gv, func, k in found if rule_of(func) == {"mnet.conv1x1.x86-avx2"}]
    sch = s_tir.Schedule(kmod)
    block, kind, isa = _rule_block(sch)
    (sch,) = RULES[kind](sch, block, isa, decide=BLOCK)
    assert postprocess(sch, TARGET) is None
    return kmod, sch.mod  # the weight packing stays in the kernel: it takes the plain weight


def _pools_in_parallel_loops(ex) -> bool:
    """Whether a parallel loop's body (an LLVM function of its own) calls TVM's workspace pool."""
    functions = ex.mod.inspect_source("ll").split("\ndefine ")[1:]
    return any("@__TVMBackendAllocWorkspace" in f for f in functions if "@__tvm_parallel_lambda" in f.split("{")[0])


def _compiled(mod, pipeline):
    with TARGET:
        return tvm.compile(mod, TARGET, tir_pipeline=pipeline)


def test_accumulator_tile_is_the_register_block_on_the_stack():
    kmod, mod = _pointwise_kernel()
    lower = tvm.tirx.get_tir_pipeline(lowering.NAME)[0]
    with TARGET:
        text = lower(tvm.tirx.transform.BindTarget(TARGET.with_host(TARGET))(mod)).script()
    tiles = re.findall(r'T\.alloc_buffer\(\((\d+),\), "float32x8"', text)
    assert tiles == [str(BLOCK["mr"] * BLOCK["nr"])], tiles  # one tile, mr x nr vectors: no bounding box
    assert "disable_lower_builtin" in text

    stacked, pooled = _compiled(mod, lowering.NAME), _compiled(mod, "default")
    assert not _pools_in_parallel_loops(stacked)
    assert _pools_in_parallel_loops(pooled)  # what TVM's own lowering does

    rng = np.random.default_rng(0)
    shapes = [[int(d) for d in info.shape] for info in ms.arg_info.ArgInfo.from_prim_func(kmod["main"])]
    inputs = [rng.standard_normal(shape).astype("float32") for shape in shapes]
    expected = run_kernel(kmod, [a.copy() for a in inputs])
    for ex in (stacked, pooled):
        args = [tvm.runtime.tensor(a) for a in inputs]
        ex["main"](*args)
        np.testing.assert_allclose(args[-1].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_large_buffers_keep_the_workspace_pool():
    """A buffer over STACK_LIMIT inside a parallel loop still takes TVM's workspace pool (a bounded stack)."""
    n = lowering.STACK_LIMIT // 4 + 16

    @tvm.script.ir_module
    class Big:
        @tvm.script.tirx.prim_func
        def main(a: tvm.script.tirx.Buffer((2, n), "float32"), b: tvm.script.tirx.Buffer((2, n), "float32")):
            for i in tvm.script.tirx.parallel(2):
                tmp = tvm.script.tirx.alloc_buffer((n,), "float32")
                for j in range(n):
                    tmp[j] = a[i, j] * 2.0
                for j in range(n):
                    b[i, j] = tmp[j] + 1.0

    ex = _compiled(Big, lowering.NAME)
    assert _pools_in_parallel_loops(ex)
    a = np.arange(2 * n, dtype="float32").reshape(2, n)
    args = [tvm.runtime.tensor(a), tvm.runtime.tensor(np.zeros_like(a))]
    ex["main"](*args)
    np.testing.assert_array_equal(args[1].numpy(), a * 2 + 1)


def test_annotated_reduction_prefetches_its_weight_vectors():
    """A reduction loop annotated PREFETCH (the 1x1 rule's, on AVX-512) prefetches each weight vector it reads
    PREFETCH_BYTES ahead, once per vector: BLOCK's nr weight vectors, not the broadcast activations or the
    accumulators; the kernel computes the same. Unannotated, no prefetch."""
    kmod, mod = _pointwise_kernel()
    sch = s_tir.Schedule(mod)
    (reduction,) = [loop for loop in sch.get_loops(sch.get_sblock("conv2d_nhwc_update")) if sch.get(loop).loop_var.name == "rc"]
    sch.annotate(reduction, lowering.PREFETCH, lowering.PREFETCH_BYTES)
    prefetching, plain = _compiled(sch.mod, lowering.NAME), _compiled(mod, lowering.NAME)
    assert plain.mod.inspect_source("ll").count("call void @llvm.prefetch") == 0
    ir = prefetching.mod.inspect_source("ll")
    assert ir.count("call void @llvm.prefetch") == BLOCK["nr"], ir.count("call void @llvm.prefetch")
    assert "i32 0, i32 2, i32 1)" in ir  # read, into L2, data
    assert "prefetcht1" in prefetching.mod.inspect_source("asm")

    rng = np.random.default_rng(0)
    shapes = [[int(d) for d in info.shape] for info in ms.arg_info.ArgInfo.from_prim_func(kmod["main"])]
    inputs = [rng.standard_normal(shape).astype("float32") for shape in shapes]
    expected = run_kernel(kmod, [a.copy() for a in inputs])
    args = [tvm.runtime.tensor(a) for a in inputs]
    prefetching["main"](*args)
    np.testing.assert_allclose(args[-1].numpy(), expected, rtol=1e-5, atol=1e-5)
