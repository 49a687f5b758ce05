"""Default schedules derived from shape and ISA, ISA record families, and channel padding (no timing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi

from mnet_compile.architectures import build_architecture
from mnet_compile.frontends import from_torch
from mnet_compile.model import build_model
from mnet_compile.padding import pad_channels, padded_size
from mnet_compile.passes import fuse, optimize
from mnet_compile.records import family_for
from mnet_compile.rules import annotate, default_schedule, isa_for
from mnet_compile.rules.blocking import depthwise, pointwise
from mnet_compile.rules.isa import ISAS
from mnet_compile.runtime import load
from mnet_compile.schedule import kernel_mod, kernels

AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
NEON = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4})
PAPER = [(a, r) for a in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)]


def test_family_follows_the_cpu_features():
    assert [family_for(t) for t in (AVX512, AVX2, NEON)] == ["x86-avx512", "x86-avx2", "arm-neon"]
    assert family_for(tvm.target.Target({"kind": "llvm", "mcpu": "core2"})) == "generic"
    assert isa_for(AVX512).lanes == 16 and isa_for(AVX2).registers == 16


@pytest.fixture(scope="module")
def paper_modules():
    """The 16 paper configurations, imported and optimized once (padding is per target)."""
    return [optimize(from_torch(build_model(a), (1, 3, r, r))) for a, r in PAPER]


def _rule_kernels(mods, target):
    """Distinct kernels that a conv rule handles, over the given optimized modules."""
    seen = {}
    for mod in mods:
        fused = annotate(fuse(pad_channels(mod, isa_for(target).lanes)), target)
        for _gv, func in kernels(fused):
            if "mnet." in func.script():
                kmod = kernel_mod(func)
                seen.setdefault(tvm_ffi.structural_hash(kmod), kmod)
    return list(seen.values())


@pytest.mark.parametrize("target", [AVX512, AVX2, NEON], ids=["avx512", "avx2", "neon"])
def test_default_schedule_for_every_paper_layer(paper_modules, target):
    """Every 1x1 and depthwise layer of the 16 paper configurations gets a derived schedule that passes
    MetaSchedule's postprocs (no dynamic loop, parallel/vector rewrite, layout rewrite), deterministically."""
    kmods = _rule_kernels(paper_modules, target)
    assert len(kmods) > 60
    for kmod in kmods:
        first = default_schedule(kmod, target)
        assert first is not None
        text = first.mod.script()
        assert "T.parallel" in text and "T.vectorized" in text
        assert tvm_ffi.structural_equal(first.mod, default_schedule(kmod, target).mod)
        assert str(first.trace) == str(default_schedule(kmod, target).trace)


def test_default_schedule_for_v2_v3_layers():
    names = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
    mods = [optimize(from_torch(build_architecture(n, 1.0, 1000, 0, None), (1, 3, 224, 224))) for n in names]
    kmods = _rule_kernels(mods, AVX512)
    assert len(kmods) > 30
    assert all(default_schedule(k, AVX512) is not None for k in kmods)


def test_blocking_fits_the_registers():
    for isa in ISAS.values():
        for height, width, vectors in [(112, 112, 4), (14, 14, 32), (7, 7, 64), (1, 1, 8), (3, 3, 1)]:
            b = pointwise(height, width, vectors, isa, cores=2)
            assert b["mr"] * b["nr"] <= isa.registers - 4
            assert (height * width) % b["mr"] == 0 and vectors % b["nr"] == 0
            assert width % b["mr"] == 0 or b["mr"] % width == 0  # a pixel block never straddles rows
            d = depthwise(height, width, vectors, isa, cores=2)
            assert d["w1"] * d["c1"] <= isa.registers // 2 - 2 and width % d["w1"] == 0
    # AVX-512 at 224: 7 pixels x 4 vectors (28 of 32 zmm accumulate); AVX2 keeps to its 16 ymm.
    assert pointwise(14, 14, 32, ISAS["x86-avx512"], 2) == {"mr": 7, "nr": 4, "order": "panel"}
    assert pointwise(14, 14, 64, ISAS["x86-avx2"], 2)["mr"] * 4 <= 12


def test_padded_sizes():
    assert [padded_size(c, 16) for c in (3, 8, 12, 16, 25, 409, 1024)] == [4, 8, 16, 16, 32, 416, 1024]
    assert [padded_size(c, 8) for c in (11, 22, 89)] == [16, 24, 96]


def test_channel_padding_is_exact_and_vectorizable():
    model = build_model(0.4, seed=3)
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype("float32")
    mod = optimize(from_torch(model, x.shape))
    padded = pad_channels(mod, 16)
    text = padded["main"].script()
    assert "409" not in text.split("R.matmul")[0] and "416" in text  # 409 channels became 416
    assert "(1, 1000)" in text  # the output keeps its shape
    for name, m in (("plain", mod), ("padded", padded)):
        ex = tvm.compile(m, tvm.target.Target({"kind": "llvm"}))
        out = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
        got = (out[0] if not hasattr(out, "numpy") else out).numpy()
        ref = model(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)


def test_channel_padding_leaves_unknown_graphs_alone():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 12, 1)

        def forward(self, x):
            return torch.nn.functional.softmax(self.conv(x), dim=1)  # a softmax over the channels

    mod = optimize(from_torch(Odd().eval(), (1, 3, 8, 8)))
    assert pad_channels(mod, 16).same_as(mod)


@pytest.mark.parametrize("alpha,resolution", [(0.35, 224), (0.6, 160)])
def test_odd_alphas_match_pytorch(compiled, alpha, resolution):
    """Channel counts no vector width divides (0.35: 11, 22, 44, 89, 179, 358) still match PyTorch."""
    out = compiled(alpha, resolution, seed=5)
    x = np.random.default_rng(4).standard_normal((1, 3, resolution, resolution)).astype("float32")
    ref = build_model(alpha, seed=5)(torch.from_numpy(x)).detach().numpy()
    got = load(str(out))(x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert got.argmax() == ref.argmax()


def test_cli_names_the_family_and_profile_shows_every_kernel(capsys, tmp_path):
    from mnet_compile.cli import main

    out = tmp_path / "a"
    assert main(["--alpha", "0.25", "--resolution", "128", "--no-tuned", "--output", str(out)]) == 0
    log = capsys.readouterr().err
    assert "--no-tuned: default schedules" in log and "tuned records applied to 0 of" in log
    manifest = json.loads((out / "manifest.json").read_text())
    schedules = manifest["schedules"]
    host = tvm.target.Target(manifest["target"]["tvm"])
    assert schedules["family"] == family_for(host) and schedules["tuned"] == 0
    assert set(schedules["per_kernel"]) and all(k["schedule"] == "default" for k in schedules["per_kernel"].values())
    assert main(["profile", str(out), "--runs", "3"]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines()[3:]]
    names = {r[0] for r in rows}
    # every kernel the VM calls (pure reshapes become views, not calls) with its schedule's source
    assert names <= set(schedules["per_kernel"]) and len(names) >= len(schedules["per_kernel"]) - 2
    assert all(r[-1] == "default" for r in rows)
    from mnet_compile.profile import profile

    conv = [r for r in profile(str(out), runs=2, threads=1) if r["kernel"].startswith("fused_conv2d")]
    assert conv and all(r["gflops"] > 0 and r["calls"] >= 1 for r in conv)  # FLOPs from the manifest
    assert main(["profile", str(tmp_path / "missing")]) == 1


def test_fma_peak_uses_the_widest_vectors():
    from mnet_compile.bench import FMA_PEAK_C, cpu_description

    assert "__AVX512F__" in FMA_PEAK_C and "_mm512_fmadd_ps" in FMA_PEAK_C
    assert "logical CPUs" in cpu_description()
