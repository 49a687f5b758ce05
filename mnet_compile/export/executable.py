"""The optimized Relax module -> a VM executable: fuse, schedule every kernel for the preset's backend, lower."""

from __future__ import annotations

import tvm

from ..graph import groups, passes
from ..schedule import lowering
from ..schedule.backends import BACKENDS
from .input_stage import with_input_stage


def compile_executable(mod: tvm.IRModule, preset, database=None, blocks: bool = False):
    """Returns the VM executable and {"tuned": kernels scheduled from their own record, "transferred":
    kernels scheduled from a nearby kernel's record, "kernels": all kernels, "per_kernel": {name: {"flops",
    "schedule"}}}.

    Each kernel gets its tuned record from `database`, else a transferred one, else a default schedule of
    its backend (schedule/). `blocks`: fuse depthwise + 1x1 blocks into one kernel (graph/blocks.py).
    A CPU build with a float32 input also holds the input stage (input_stage.py) the loader calls first.
    """
    backend, target = BACKENDS[preset.backend], preset.tvm
    stats = {"tuned": 0, "kernels": 0, "per_kernel": {}}

    @tvm.transform.module_pass(opt_level=0, name="MnetPipeline")
    def pipeline(mod, _ctx):
        fused = passes.fuse(mod, blocks, preset.backend == "cpu")
        mod, stats["tuned"], stats["kernels"] = backend.schedule(fused, target, database, stats["per_kernel"])
        if preset.backend == "cpu" and (shape := groups.shape(mod["main"].params[0].ty)) is not None:
            mod = with_input_stage(mod, shape, int(target.attrs.get("num-cores", 1) or 1))
        return passes.finalize(mod)

    with backend.scope(target):
        executable = tvm.compile(mod, target, relax_pipeline=pipeline, tir_pipeline=lowering.NAME)
    stats["transferred"] = sum(k["schedule"] == "transferred" for k in stats["per_kernel"].values())
    return executable, stats
