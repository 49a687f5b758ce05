"""How each backend's kernels are scheduled and in which scope they are compiled: one table, no GPU branches.

The keys are the backends targets.Preset.backend names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import cuda
from .kernels import schedule_kernels


@dataclass(frozen=True)
class Backend:
    schedule: Callable  # (fused module, tvm target, database or None, report dict or None)
    # -> (module, kernels from records, kernels)
    scope: Callable  # tvm target -> the context manager tvm.compile runs in


BACKENDS = {
    "cpu": Backend(schedule=schedule_kernels, scope=lambda target: target),
    "cuda": Backend(schedule=cuda.schedule_gpu, scope=cuda.compile_scope),
}
