"""The int8 dense convs as dot-product microkernels per ISA family: the target's family, its tensorized
instruction in the code, and exact results where this machine can run the code (no timing)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from mnet_compile.export.executable import compile_executable
from mnet_compile.frontends.integer import Conv, IntegerModel, exact_float_depthwise, pack_weight, to_relax
from mnet_compile.graph.passes import fuse
from mnet_compile.graph.quantize import FloatConv, _Pool, quantize_layers
from mnet_compile.schedule.rules import default_schedule
from mnet_compile.schedule.rules.int8 import DOT_ISAS, blocking, dot_form, dot_isa, pointwise_form
from mnet_compile.schedule.tunable import tunable_kernels
from mnet_compile.targets import load_preset

from ..emulation import count_instructions
from ..graph.test_quantize import integer_reference

VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
X86 = {"x86-avx512-vnni": "cascadelake", "x86-avx-vnni": "alderlake", "x86-avx2": "znver3"}
# family -> (a CPU of it, a regex of the tensorized instruction in its assembly, one that must be absent)
INSTRUCTIONS = {
    "x86-avx512-vnni": ("cascadelake", r"\svpdpbusd\s.*zmm", r"\{vex\}"),
    "x86-avx-vnni": ("alderlake", r"\{vex\}\s+vpdpbusd\s.*ymm", r"zmm"),
    "x86-avx2": ("znver3", r"\svpmaddwd\s.*ymm", r"vpdpbusd"),
    "arm-sdot": ("cortex-a76", r"\ssdot\s+v\d+\.4s", r"\ssaddlp\s"),
    "arm-neon": ("cortex-a72", r"\ssmull2?\s+v\d+\.8h", r"\ssdot\s"),
}


def _target(cpu: str) -> tvm.target.Target:
    arm = cpu.startswith("cortex")
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2, **({"mtriple": "aarch64-linux-gnu"} if arm else {})})


def test_packed_weight_blocks_are_vpdpbusd_operands():
    w = np.arange(8 * 32).reshape(1, 1, 8, 32) % 251 - 125
    packed = pack_weight(w)
    assert packed.shape == (2, 2, 16, 4)
    assert packed[1, 0, 3, 2] == w[0, 0, 0 * 4 + 2, 1 * 16 + 3]
    stem = pack_weight(np.ones((3, 3, 3, 16), np.int8))  # 3 input channels -> 4: the 4th of each tap is zero
    assert stem.shape == (1, 9, 16, 4) and not stem[0, :, :, 3].any() and stem.sum() == 27 * 16


def _model(size: int = 8, cout: int = 32) -> IntegerModel:
    """A 1x1 conv (16 -> 32 channels) on an 8x8 int8 image: the kernel the dot-product rules schedule."""
    rng = np.random.default_rng(0)
    conv = Conv(rng.integers(-127, 128, (1, 1, 16, cout)).astype(np.int8), rng.integers(-999, 999, cout).astype(np.int32),
                (1, 1), (0, 0, 0, 0), 1, -128, np.full(cout, 1 << 30, np.int32), np.full(cout, -6), -128, (-128, 127))  # fmt: skip
    return IntegerModel("x", (1, 16, size, size), 0.05, 3, [conv], 0.1, -128, (1, size, size, cout))


def _chain() -> IntegerModel:
    """A small MobileNet-like chain quantized from random float weights: a padded stride-2 stem that
    quantizes the input, depthwise convs, 1x1 convs (24 channels: padded to 32), the mean, a 10-class head."""
    rng = np.random.default_rng(1)

    def conv(kh, cin, cout, stride=1, groups=1, relu=True):
        pad = (0, 0, 1, 1) if stride == 2 else ((1, 1, 1, 1) if kh == 3 else (0, 0, 0, 0))
        weight = (rng.standard_normal((kh, kh, cin // groups, cout)) * 0.4).astype(np.float32)
        bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        return FloatConv(weight, bias, (stride, stride), pad, groups, (0.0, 6.0) if relu else None)

    layers = [conv(3, 3, 8, 2), conv(3, 8, 8, groups=8), conv(1, 8, 24), conv(3, 24, 24, 2, groups=24), conv(1, 24, 32),
              _Pool(), conv(1, 32, 10, relu=False)]  # fmt: skip
    inputs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    return quantize_layers(layers, inputs, "x", (1, 10))


def _asm(kmod: tvm.IRModule, target: tvm.target.Target) -> str:
    sch = default_schedule(kmod, target)
    with target:
        return tvm.compile(sch.mod, target=target).mod.inspect_source("asm")


def test_each_target_gets_its_dot_product_family():
    families = {name: dot_isa(load_preset(name).tvm).name for name in
                ("rpi5", "jetson-orin-cpu", "rpi4", "rpi3", "jetson-xavier", "jetson-nano", "arm_cpu")}  # fmt: skip
    assert families == {"rpi5": "arm-sdot", "jetson-orin-cpu": "arm-sdot", "rpi4": "arm-neon", "rpi3": "arm-neon",
                        "jetson-xavier": "arm-neon", "jetson-nano": "arm-neon", "arm_cpu": "arm-neon"}  # fmt: skip
    assert [dot_isa(_target(cpu)).name for cpu in X86.values()] == list(X86)
    assert dot_isa(AVX512).name == "x86-avx2"  # AVX-512 without VNNI: the AVX2 kernel
    assert dot_form(tvm.target.Target({"kind": "llvm", "mcpu": "core2"})) is None
    assert dot_form(load_preset("rpi-armv7").tvm) is None and dot_form(load_preset("cuda").tvm) is None
    assert [dot_form(_target(cpu)) for cpu in ("cascadelake", "alderlake", "znver3", "cortex-a76")] == ["u8i8", "u8i8", "i8i8", "i8i8"]


@pytest.mark.parametrize("family", list(INSTRUCTIONS))
def test_each_family_tensorizes_to_its_instruction(family):
    cpu, present, absent = INSTRUCTIONS[family]
    target = _target(cpu)
    isa = dot_isa(target)
    assert isa.name == family
    _, found = tunable_kernels(fuse(to_relax(_model(), dot_product=isa.form)), target)
    kernels = [kmod for _, func, kmod in found if isa.rule in func.script()]
    assert len(kernels) == 1
    assert "T.parallel" in default_schedule(kernels[0], target).mod.script()
    lines = _asm(kernels[0], target).splitlines()
    assert sum(bool(re.search(present, line)) for line in lines) >= 8
    assert not any(re.search(absent, line) for line in lines)
    plain = fuse(to_relax(_model()))  # without the dot product: no kernel for the rule
    assert all(isa.rule not in func.script() for _, func, _ in tunable_kernels(plain, target)[1])


def _host_has(feature: str) -> bool:
    """Whether this machine runs `feature` (the x86 preset's detected target: its CPU model less what the VM
    or kernel withholds)."""
    return bool(tvm.target.codegen.llvm_cpu_has_features(feature, load_preset("x86").tvm))


@pytest.mark.parametrize("family, feature", [("x86-avx512-vnni", "avx512vnni"), ("x86-avx-vnni", "avxvnni"), ("x86-avx2", "avx2"),
                                             ("x86-amx", "amx-int8")])  # fmt: skip
def test_x86_families_are_exact(family, feature, tmp_path):
    """Each x86 family's code for the small chain, run here: every int8 logit as the integer reference
    (x86-amx: the 1x1 convs as s8 x s8 on AMX tiles of 8 and 4 pixels, the stem on VNNI)."""
    if not _host_has(feature):
        pytest.skip(f"this machine has no {feature}: the {family} code cannot run here")
    preset = tmp_path / f"{family}.json"
    cpu = X86.get(family, "sapphirerapids")
    preset.write_text(json.dumps({"description": family, "target": {"kind": "llvm", "mcpu": cpu, "num-cores": 2},
                                  "arch": "x86_64", "cc": None}))  # fmt: skip
    model = _chain()
    target = load_preset(str(preset)).tvm
    mod = to_relax(model, dot_form(target), pointwise_form(target))
    executable, stats = compile_executable(mod, load_preset(str(preset)))
    assert sum(name.startswith("fused_conv_") for name in stats["per_kernel"]) == 3  # the stem and two 1x1 convs
    vm = relax.VirtualMachine(executable, tvm.cpu())
    for seed in range(3):
        x = np.random.default_rng(10 + seed).standard_normal((1, 3, 16, 16)).astype(np.float32) * 2
        got = vm["main"](tvm.runtime.tensor(x))[0].numpy()
        levels = np.round(got / np.float32(model.output_scale)).astype(np.int64) + model.output_zero_point
        np.testing.assert_array_equal(levels, integer_reference(model, x))


def test_blocking_fills_the_registers():
    vnni, sdot, avx2 = DOT_ISAS["x86-avx512-vnni"], DOT_ISAS["arm-sdot"], DOT_ISAS["x86-avx2"]
    assert blocking(14, 14, 32, 2, vnni) == {"mr": 7, "nr": 4, "tile": 1}  # 28 zmm accumulators
    decided = blocking(1, 1, 62, 2, vnni)
    assert decided["mr"] == 1 and 62 % decided["nr"] == 0
    assert blocking(14, 14, 32, 2, sdot) == {"mr": 2, "nr": 2, "tile": 7}  # 16 of 24 q accumulators, whole rows
    for isa in (sdot, avx2):
        for h, w, v in ((56, 56, 4), (14, 14, 32), (7, 7, 64), (1, 1, 63), (512, 512, 2)):
            mr, nr, tile = blocking(h, w, v, 4, isa).values()
            assert mr * nr * 16 // isa.lanes <= isa.accumulators and w % (mr * tile) == 0 and v % nr == 0
            assert mr * tile == w or w > isa.tile_pixels


def test_the_artifact_holds_vpdpbusd(compiled, tmp_path):
    """On a VNNI host without AMX the int8 artifact of the tests (x86 preset) is inspected, elsewhere one built
    for a Cascade Lake preset (not run here): the 1x1 convs are packed u8 x s8 kernels, and the .so has vpdpbusd."""
    if _host_has("avx512vnni") and not _host_has("amx-int8"):
        artifact = compiled(0.25, 128, quantize="int8")
    else:
        preset = tmp_path / "vnni.json"
        preset.write_text(json.dumps({"description": "VNNI", "target": {"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2}, "arch": "x86_64", "cc": None}))
        artifact = compiled(0.25, 128, target=str(preset), quantize="int8")
    per_kernel = json.loads((artifact / "manifest.json").read_text())["schedules"]["per_kernel"]
    assert sum("conv_u8i8" in name for name in per_kernel) >= 8  # distinct 1x1 layer shapes at 0.25-128
    assert count_instructions(artifact / "model.so", r"\svpdpbusd\s", "x86_64") >= 100


def _depthwise_only() -> IntegerModel:
    """One 3x3 depthwise conv (64 channels) with the largest products int8 allows: weights +-127, the input
    quantized to -128 and 127 (and padded with -128), so a sum reaches 9 * 128 * 127."""
    signs = np.where(np.arange(9 * 64).reshape(3, 3, 1, 64) % 5 == 0, 127, -127).astype(np.int8)
    signs[:, :, :, :16] = -127  # a quarter of the channels: every product of a -128 input is +16256
    conv = Conv(signs, np.zeros(64, np.int32), (1, 1), (1, 1, 1, 1), 64, -128,
                np.full(64, 1 << 30, np.int32), np.full(64, -11), 0, (-128, 127))  # fmt: skip
    return IntegerModel("x", (1, 64, 6, 6), 1.0, 0, [conv], 1.0, 0, (1, 6, 6, 64))


def test_x86_depthwise_sums_in_float_exactly():
    """With the u8i8 form (x86 VNNI) a 3x3 depthwise conv multiplies in float32 (FMAs), blocked 1 x w x 1,
    and still gives every int8 output as the integer reference, at the extremes of the products."""
    model = _depthwise_only()
    assert exact_float_depthwise(model.layers[0], "u8i8") and not exact_float_depthwise(model.layers[0], "i8i8")
    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2})
    for form, fma in (("u8i8", True), ("i8i8", False)):
        _, found = tunable_kernels(fuse(to_relax(model, dot_product=form)), host)
        (kmod,) = [kmod for _, func, kmod in found if "group_conv2d_nhwc" in func.script()]
        weight = re.search(r'\(T\.int64\(3\), T\.int64\(3\), T\.int64\(1\), T\.int64\(64\)\), "(\w+)"', kmod.script())
        assert weight.group(1) == ("float32" if fma else "int8")
        if fma:
            assert "vfmadd" in _asm(kmod, host)
        six_columns = "in T.unroll(T.int64(6))" in default_schedule(kmod, host).mod.script()
        assert six_columns == fma  # the float form's blocking; int16 products keep the fp32 rule's
    vm = relax.VirtualMachine(tvm.compile(to_relax(model, dot_product="u8i8"), target=host), tvm.cpu())
    for seed in range(3):
        x = np.random.default_rng(seed).choice([-200.0, 200.0], (1, 64, 6, 6)).astype(np.float32)
        got = vm["main"](tvm.runtime.tensor(x))[0].numpy()
        levels = np.round(got / np.float32(model.output_scale)).astype(np.int64) + model.output_zero_point
        np.testing.assert_array_equal(levels, integer_reference(model, x))


def test_data_pass_is_parallel_over_rows():
    """The dot-product kernels' data pass runs parallel over its rows. The stem's (the float NCHW input
    quantized, padded, channels to 4): channels unrolled and the pixel loop vectorized by LLVM (packed
    float rounding and conversion); TVM's own vectorized flat loop came out scalar. A 1x1 conv's (int8
    input): each row one vectorized loop (one flat loop took 6x as long at 0.25-128)."""
    _, found = tunable_kernels(fuse(to_relax(_chain(), dot_product="u8i8")), VNNI)
    (stem,) = [kmod for _, func, kmod in found if "data_u8" in func.script() and "float32" in func.script()]
    script = default_schedule(stem, VNNI).mod.script()
    data = script[script.index("T.parallel"):script.index('T.sblock("data_u8")')]
    assert "T.parallel(T.int64(17))" in data and "T.unroll(T.int64(4))" in data  # 17 rows of 17 pixels x 4 channels
    assert "T.vectorized" not in data
    assert re.search(r"\svcvt\w*ps2dq\s.*[yz]mm", _asm(stem, VNNI))  # LLVM's vectors, at least 8 pixels at once
    (pointwise,) = [kmod for _, func, kmod in found if "data_u8" in func.script() and "float32" not in func.script()][:1]
    script = default_schedule(pointwise, VNNI).mod.script()
    data = script[script.index("T.parallel"):script.index('T.sblock("data_u8")')]
    assert "T.vectorized" in data


@pytest.mark.parametrize("size,cout,rows", [(8, 32, True), (2, 64, False)])
def test_tiles_split_rows_between_cores_as_the_float_rules(size, cout, rows):
    """The dot-product conv's parallel tiles split image rows between the cores, as the float32 rules do
    (rules/conv.py, tile_order), unless the weights are 8x the input (64 channels on 2x2 pixels): then
    channel panels. Measured (AVX-512 VNNI without AMX, 2 threads, whole model, 20-30 alternated rounds):
    0.92x the time of channel panels everywhere at 0.5-224, 0.93x at 1.0-224."""
    _, found = tunable_kernels(fuse(to_relax(_model(size, cout), dot_product="u8i8")), VNNI)
    (kmod,) = [kmod for _, func, kmod in found if "conv_u8i8" in func.script()]
    *_, conv = [line.split()[1] for line in default_schedule(kmod, VNNI).mod.script().splitlines() if "T.parallel" in line]
    assert conv.startswith("b_y_") == rows, conv


def test_1x1_requantizes_with_32_bit_multiplies():
    """A 1x1 dot-product conv requantizes in one op with the bias folded into the rounding constant, so its
    int32 sums times the int32 multipliers are vpmuldq (32 x 32 -> 64), not vpmullq (64 x 64)."""
    _, found = tunable_kernels(fuse(to_relax(_model(), dot_product="u8i8")), VNNI)
    (kmod,) = [kmod for _, func, kmod in found if DOT_ISAS["x86-avx512-vnni"].rule in func.script()]
    asm = _asm(kmod, VNNI)
    assert re.search(r"\svpmuldq\s", asm) and not re.search(r"\svpmullq\s", asm)
