"""The optimized Relax module -> a VM executable: fuse, schedule every kernel for the preset's backend, lower."""

from __future__ import annotations

import tvm

from ..graph import passes
from ..schedule.backends import BACKENDS


def compile_executable(mod: tvm.IRModule, preset, database=None):
    """Returns the VM executable and {"tuned": kernels scheduled from a record, "kernels": all kernels}.

    Each kernel gets a tuned record from `database`, else a default schedule of its backend (schedule/).
    """
    backend, target = BACKENDS[preset.backend], preset.tvm
    stats = {"tuned": 0, "kernels": 0}

    @tvm.transform.module_pass(opt_level=0, name="MnetPipeline")
    def pipeline(mod, _ctx):
        mod, stats["tuned"], stats["kernels"] = backend.schedule(passes.fuse(mod), target, database)
        return passes.finalize(mod)

    with backend.scope(target):
        return tvm.compile(mod, target, relax_pipeline=pipeline), stats
