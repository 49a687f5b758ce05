"""The kernels MetaSchedule tunes and looks records up for: one function, used by tuning and by compiling.

Records are found by the structural hash of each kernel module, so tuning and compiling must see identically
fused (graph.passes.fuse) and annotated (rules.annotate) kernels, normalized the same way. Both go through
`tunable_kernels`.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.target import Target

from . import rules


def kernel_mod(func: tirx.PrimFunc) -> tvm.IRModule:
    """The one-function module MetaSchedule hashes for a kernel (TuneContext's own normalization)."""
    if not (func.attrs and "global_symbol" in func.attrs):
        func = func.with_attr("global_symbol", "main")
    return tvm.IRModule({"main": func.with_attr("tirx.noalias", True)})


def tunable_kernels(fused_mod: tvm.IRModule, target: Target):
    """(the fused module with the custom-rule annotations, [(global var, kernel, kernel module), ...] of its
    unscheduled kernels). `fused_mod` is graph.passes.fuse output."""
    mod = rules.annotate(fused_mod, target)
    found = [
        (gv, func, kernel_mod(func))
        for gv, func in mod.functions.items()
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False)
    ]
    return mod, found
