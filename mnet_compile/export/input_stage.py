"""The input stage compiled into every CPU artifact with a float32 input: one parallel pass that copies the
caller's array (any alignment) into the model's aligned input buffer and counts its NaN and infinite values.

The loader (device/runtime.py) calls it before `main` in place of numpy's copy and `isfinite` check: two
single-threaded passes over the input, 34 us at 1x3x224x224 on AVX-512 (hot), against 12 us for this one.
device/runtime.py restates STAGE_FUNCTION and STAGE_SLOTS (tests/export/test_input_stage.py keeps them in step).
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from ..graph.passes import with_functions

STAGE_FUNCTION = "mnet_stage_input"  # its symbol in model.so
STAGE_SLOTS = 64  # int32 counts it takes, one per parallel part (at most this many parts)
_EXPONENT = 0x7F800000  # float32 bits of the exponent: all ones for NaN and infinity


def input_stage(elements: int, parts: int) -> tvm.tirx.PrimFunc:
    """stage(x, staged, counts): staged[:] = x[:] (x only element-aligned), counts[p] = the non-finite
    values of part p of the flat input, for `parts` (at most STAGE_SLOTS) parallel parts."""
    chunk = -(-elements // parts)

    @T.prim_func(s_tir=True)
    def stage(x_handle: T.handle, staged_handle: T.handle, counts_handle: T.handle):
        T.func_attr({"global_symbol": STAGE_FUNCTION, "tirx.noalias": True})
        x = T.match_buffer(x_handle, (elements,), "float32", align=4, offset_factor=1)
        staged = T.match_buffer(staged_handle, (elements,), "float32")
        counts = T.match_buffer(counts_handle, (STAGE_SLOTS,), "int32")
        for p in T.parallel(parts):
            with T.sblock("init"):
                vp = T.axis.spatial(STAGE_SLOTS, p)
                counts[vp] = 0
            for i in range(chunk):
                with T.sblock("copy"):
                    vp = T.axis.spatial(STAGE_SLOTS, p)
                    vi = T.axis.reduce(chunk, i)
                    T.where(p * chunk + i < elements)
                    staged[vp * chunk + vi] = x[vp * chunk + vi]
                    counts[vp] = counts[vp] + T.Cast(
                        "int32", T.reinterpret("uint32", x[vp * chunk + vi]) & T.uint32(_EXPONENT) == T.uint32(_EXPONENT)
                    )

    return stage


def with_input_stage(mod: tvm.IRModule, shape, cores: int) -> tvm.IRModule:
    """`mod` plus the input stage of a float32 input of `shape`, in `cores` parts."""
    elements = 1
    for dim in shape:
        elements *= int(dim)
    return with_functions(mod, {tvm.ir.GlobalVar(STAGE_FUNCTION): input_stage(elements, min(max(1, cores), STAGE_SLOTS))})
