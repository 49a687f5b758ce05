"""The SIMD facts a schedule is derived from, per instruction-set family, and the family of a target.

The family names the custom rules (`mnet.conv1x1.x86-avx512`) and the shipped records
(`schedules/x86-avx512/`): a kernel's annotation is part of its workload, so records of one family
never match the kernels of another (MetaSchedule's database ignores the target when it looks up).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.target import Target, codegen


@dataclass(frozen=True)
class Isa:
    name: str
    lanes: int  # fp32 lanes per vector register
    registers: int  # architectural vector registers

    def rule(self, kind: str) -> str:
        return f"mnet.{kind}.{self.name}"


ISAS = {
    isa.name: isa
    for isa in (
        Isa("x86-avx512", 16, 32),
        Isa("x86-avx2", 8, 16),
        Isa("arm-neon", 4, 32),
        Isa("generic", 4, 16),
    )
}


def _is_aarch64(target: Target) -> bool:
    return "aarch64" in str(target.attrs.get("mtriple", "")) or "arm_cpu" in target.keys and "armv7" not in str(
        target.attrs.get("mtriple", "")
    )


def isa_for(target: Target) -> Isa:
    """x86-avx512 / x86-avx2 from the target's CPU features (what LLVM will emit), arm-neon for AArch64."""
    if _is_aarch64(target):
        return ISAS["arm-neon"]
    try:
        if codegen.llvm_cpu_has_features("avx512f", target):
            return ISAS["x86-avx512"]
        if codegen.llvm_cpu_has_features("avx2", target):
            return ISAS["x86-avx2"]
    except Exception:  # a target LLVM cannot describe
        pass
    return ISAS["generic"]
