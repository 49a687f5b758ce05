"""Custom MetaSchedule rules for MobileNet's convolutions, and the pass that routes blocks to them.

Importing this package registers the rules (`s_tir.meta_schedule.<key>.mnet.*`). `annotate(mod, target)`
must run on the fused module both before tuning and before looking records up: the annotations are part of
each kernel's structural hash, so a module annotated differently matches no record.
"""

from .fastimport import cpu_tensor_intrinsics_only

cpu_tensor_intrinsics_only()

from . import int8  # noqa: E402  (registers the int8 dot-product rules and their tensor intrinsics)
from .annotate import annotate as _annotate_fp32  # noqa: E402
from .default import default_schedule as _default_fp32  # noqa: E402  (importing conv registers the rules)
from .isa import isa_for  # noqa: E402


def annotate(mod, target):
    """Every kernel a custom rule handles, annotated with it (fp32 conv rules, the int8 dot-product rules)."""
    return int8.annotate(_annotate_fp32(mod, target), target)


def default_schedule(kmod, target):
    """The derived schedule of a kernel a custom rule handles, or None."""
    sch = _default_fp32(kmod, target)
    return sch if sch is not None else int8.default_schedule(kmod, target)


__all__ = ["annotate", "default_schedule", "isa_for"]
