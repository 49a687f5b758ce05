"""int8 artifacts for AArch64 boards: the dot-product instructions in the .so (objdump) and, under qemu-user,
the same outputs as the x86 int8 artifact, bit for bit (integer math; x86 runs u8 x s8 kernels, ARM s8 x s8).

Emulation proves correctness and the instruction set, never speed. Default run: rpi5 (sdot) and rpi4
(widening NEON) at 0.25-128. The other presets and 1.0-224: `python -m pytest -m slow tests/device/test_int8_arm.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

from mnet_compile import targets
from mnet_compile.device import devicekit, runtime

from ..emulation import count_instructions
from ..helpers import need, random_input

AARCH64 = need("aarch64-linux-gnu-g++", "aarch64-linux-gnu-objdump", "qemu-aarch64-static")
SDOT = r"\ssdot\s+v\d+\.4s"
WIDENING = r"\s(smull2?|saddlp)\s+v\d+\.(8h|4s)"  # i8 x i8 -> i16 products, pairwise i16 -> i32 sums
FAMILY = {"rpi5": "sdot", "jetson-orin-cpu": "sdot", "rpi4": "neon", "rpi3": "neon", "jetson-xavier": "neon",
          "jetson-nano": "neon", "arm_cpu": "neon"}  # fmt: skip


@pytest.fixture(scope="module")
def aarch64_app():
    kit = devicekit.fetch_runtime("aarch64")
    return kit, devicekit.build_app(kit)


def _check(name, alpha, resolution, compiled, aarch64_app):
    """The preset's int8 .so holds its family's instructions (and not the other's), and its logits under qemu
    equal the x86 int8 artifact's on three inputs."""
    preset = targets.load_preset(name)
    artifact = compiled(alpha, resolution, target=name, quantize="int8")
    lib = artifact / "model.so"
    sdot, widening = count_instructions(lib, SDOT, "aarch64"), count_instructions(lib, WIDENING, "aarch64")
    if FAMILY[name] == "sdot":
        assert sdot >= 100 and widening < sdot // 10, (sdot, widening)  # a few widening ops elsewhere at most
    else:
        assert sdot == 0 and widening >= 100, (sdot, widening)
    reference = runtime.load(str(compiled(alpha, resolution, quantize="int8")))  # this x86 machine
    kit, app = aarch64_app
    for seed in (1, 2, 3):
        x = random_input((1, 3, resolution, resolution), seed) * np.float32(1.5)
        run = devicekit.run_app(app, lib, x, kit=kit, qemu_cpu=preset.qemu_cpu)
        expected = reference(x)
        np.testing.assert_array_equal(run.logits.reshape(expected.shape), expected)


@AARCH64
@pytest.mark.parametrize("name", ["rpi5", "rpi4"])
def test_int8_aarch64_artifact_equals_x86(name, compiled, aarch64_app):
    _check(name, 0.25, 128, compiled, aarch64_app)


@pytest.mark.slow
@AARCH64
@pytest.mark.parametrize("name", ["jetson-orin-cpu", "rpi3", "jetson-xavier", "jetson-nano", "arm_cpu"])
def test_more_int8_aarch64_presets_equal_x86(name, compiled, aarch64_app):
    _check(name, 0.25, 128, compiled, aarch64_app)


@pytest.mark.slow
@AARCH64
@pytest.mark.parametrize("name", ["rpi5", "rpi4"])
def test_int8_mobilenet_1_0_224_equals_x86(name, compiled, aarch64_app):
    _check(name, 1.0, 224, compiled, aarch64_app)
