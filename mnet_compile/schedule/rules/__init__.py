"""Custom MetaSchedule rules for MobileNet's convolutions, and the pass that routes blocks to them.

Importing this package registers the rules (`s_tir.meta_schedule.<key>.mnet.*`). `annotate(mod, target)`
must run on the fused module both before tuning and before looking records up: the annotations are part of
each kernel's structural hash, so a module annotated differently matches no record.
"""

from .fastimport import cpu_tensor_intrinsics_only

cpu_tensor_intrinsics_only()

from .annotate import annotate  # noqa: E402
from .default import default_schedule  # noqa: E402  (importing conv registers the rules)
from .isa import isa_for  # noqa: E402

__all__ = ["annotate", "default_schedule", "isa_for"]
