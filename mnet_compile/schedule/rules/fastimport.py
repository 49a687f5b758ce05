"""Avoid the ~60-120 s import of every tensor intrinsic (CUDA, ROCm, Hexagon) that MetaSchedule's
TuneContext triggers: preload the package with only the CPU intrinsics (x86, ARM) registered."""

from __future__ import annotations

import importlib
import os
import sys
import types

NAME = "tvm.s_tir.tensor_intrin"


def cpu_tensor_intrinsics_only() -> None:
    """Idempotent; a no-op when the full package was imported already."""
    if NAME in sys.modules:
        return
    import tvm.s_tir

    pkg = types.ModuleType(NAME)
    pkg.__path__ = [os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")]
    pkg.__package__ = NAME
    sys.modules[NAME] = pkg
    tvm.s_tir.tensor_intrin = pkg
    for sub in ("x86", "arm_cpu"):
        try:
            setattr(pkg, sub, importlib.import_module(f"{NAME}.{sub}"))
        except Exception:  # an intrinsic set this TVM lacks: the rules then simply do not use it
            pass
