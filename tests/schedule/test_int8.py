"""The int8 dense convs on AVX-512 VNNI: u8 x s8 over packed weights, tensorized to vpdpbusd (no timing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm

from mnet_compile.frontends.integer import Conv, IntegerModel, pack_weight, to_relax
from mnet_compile.graph.passes import fuse
from mnet_compile.schedule.rules import default_schedule
from mnet_compile.schedule.rules.int8 import RULE, blocking, has_vnni
from mnet_compile.schedule.tunable import tunable_kernels

from ..emulation import count_instructions

VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def _model() -> IntegerModel:
    """A 1x1 conv (16 -> 32 channels) on an 8x8 int8 image: the kernel the VNNI rule schedules."""
    rng = np.random.default_rng(0)
    conv = Conv(rng.integers(-127, 128, (1, 1, 16, 32)).astype(np.int8), rng.integers(-999, 999, 32).astype(np.int32),
                (1, 1), (0, 0, 0, 0), 1, -128, np.full(32, 1 << 30, np.int32), np.full(32, -6), -128, (-128, 127))  # fmt: skip
    return IntegerModel("x", (1, 16, 8, 8), 0.05, 3, [conv], 0.1, -128, (1, 8, 8, 32))


def test_vnni_is_a_cpu_feature():
    assert has_vnni(VNNI) and not has_vnni(AVX512)
    assert not has_vnni(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}))


def test_packed_weight_blocks_are_vpdpbusd_operands():
    w = np.arange(8 * 32).reshape(1, 1, 8, 32) % 251 - 125
    packed = pack_weight(w)
    assert packed.shape == (2, 2, 16, 4)
    assert packed[1, 0, 3, 2] == w[0, 0, 0 * 4 + 2, 1 * 16 + 3]
    stem = pack_weight(np.ones((3, 3, 3, 16), np.int8))  # 3 input channels -> 4: the 4th of each tap is zero
    assert stem.shape == (1, 9, 16, 4) and not stem[0, :, :, 3].any() and stem.sum() == 27 * 16


def test_the_rule_tensorizes_the_1x1_conv():
    fused = fuse(to_relax(_model(), dot_product=True))
    _, found = tunable_kernels(fused, VNNI)
    kernels = [kmod for _, func, kmod in found if RULE in func.script()]
    assert len(kernels) == 1
    text = default_schedule(kernels[0], VNNI).mod.script()
    assert "llvm.x86.avx512.vpdpbusd.512" in text and "T.parallel" in text
    plain = fuse(to_relax(_model()))  # without the dot product: no u8 x s8 kernel for the rule
    assert all(RULE not in func.script() for _, func, _ in tunable_kernels(plain, AVX512)[1])


def test_blocking_fills_the_registers():
    assert blocking(14, 14, 32, 2) == {"mr": 7, "nr": 4}  # 28 zmm accumulators
    decided = blocking(1, 1, 62, 2)
    assert decided["mr"] == 1 and 62 % decided["nr"] == 0


def test_the_artifact_holds_vpdpbusd(compiled, tmp_path):
    """On a VNNI host the int8 artifact of the tests (x86 preset) is inspected, elsewhere one built for a
    Cascade Lake preset (not run here): the 1x1 convs are packed u8 x s8 kernels, and the .so has vpdpbusd."""
    if has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})):
        artifact = compiled(0.25, 128, quantize="int8")
    else:
        preset = tmp_path / "vnni.json"
        preset.write_text(json.dumps({"description": "VNNI", "target": {"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2}, "arch": "x86_64", "cc": None}))
        artifact = compiled(0.25, 128, target=str(preset), quantize="int8")
    per_kernel = json.loads((artifact / "manifest.json").read_text())["schedules"]["per_kernel"]
    assert sum("conv_u8i8" in name for name in per_kernel) >= 8  # distinct 1x1 layer shapes at 0.25-128
    assert count_instructions(artifact / "model.so", r"\svpdpbusd\s", "x86_64") >= 100
