"""Default schedules derived from shape and ISA, and the ISA record families (no timing)."""

from __future__ import annotations

import re

import pytest
import tvm
import tvm_ffi

from mnet_compile.frontends import from_torch
from mnet_compile.graph.padding import pad_channels
from mnet_compile.graph.passes import fuse, optimize
from mnet_compile.models import create_model
from mnet_compile.schedule.records import family_for
from mnet_compile.schedule.rules import default_schedule, isa_for
from mnet_compile.schedule.rules.blocking import depthwise, pointwise, separable, stem
from mnet_compile.schedule.rules.isa import ISAS
from mnet_compile.schedule.tunable import tunable_kernels

AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
NEON = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4})
PAPER = [(a, r) for a in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)]
# The default run: the benchmark's four configurations plus one at 192 and one at 160 (every alpha and
# resolution occurs); `-m slow` checks all 16 (importing them takes ~45 s).
HEADLINE = [(1.0, 224), (0.5, 224), (0.25, 224), (0.25, 128), (0.75, 192), (0.5, 160)]


def test_family_follows_the_cpu_features():
    assert [family_for(t) for t in (AVX512, AVX2, NEON)] == ["x86-avx512", "x86-avx2", "arm-neon"]
    assert family_for(tvm.target.Target({"kind": "llvm", "mcpu": "core2"})) == "generic"
    assert isa_for(AVX512).lanes == 16 and isa_for(AVX2).registers == 16


def _optimized(configs):
    return [optimize(from_torch(create_model(alpha=a), (1, 3, r, r))) for a, r in configs]


@pytest.fixture(scope="module")
def headline_modules():
    """HEADLINE imported and optimized once (padding is per target)."""
    return _optimized(HEADLINE)


@pytest.fixture(scope="module")
def paper_modules():
    """All 16 paper configurations imported and optimized once."""
    return _optimized(PAPER)


def _rule_kernels(mods, target, rule="mnet.", blocks=False, rules_per_module=None):
    """Distinct kernels that a conv rule (or the one named) handles, over the given optimized modules;
    `rules_per_module` (a list) receives each module's rule names, kernel by kernel."""
    seen = {}
    for mod in mods:
        _, found = tunable_kernels(fuse(pad_channels(mod, isa_for(target).lanes), blocks), target)
        scripts = [(func.script(), kmod) for _gv, func, kmod in found]
        if rules_per_module is not None:
            rules_per_module.append([r for text, _ in scripts for r in re.findall(r'"schedule_rule": "(mnet\.[^"]+)"', text)])
        for text, kmod in scripts:
            if rule in text:
                seen.setdefault(tvm_ffi.structural_hash(kmod), kmod)
    return list(seen.values())


@pytest.mark.parametrize("grid,target", [
    pytest.param("headline_modules", AVX512, id="headline-avx512"),
    *(pytest.param("paper_modules", t, id=f"paper-{name}", marks=pytest.mark.slow) for name, t in [("avx512", AVX512), ("avx2", AVX2), ("neon", NEON)]),
])
def test_default_schedule_for_every_paper_layer(request, grid, target):
    """Every 1x1, depthwise and first layer of the paper configurations gets a derived schedule that passes
    MetaSchedule's postprocs (no dynamic loop, parallel/vector rewrite, layout rewrite), deterministically."""
    per_module = []
    kmods = _rule_kernels(request.getfixturevalue(grid), target, rules_per_module=per_module)
    assert len(kmods) > 60
    assert all(sum(r.startswith("mnet.stem3x3.") for r in rules) == 1 for rules in per_module)  # the first conv
    for kmod in kmods:
        first = default_schedule(kmod, target)
        assert first is not None
        text = first.mod.script()
        assert "T.parallel" in text and "T.vectorized" in text
        assert tvm_ffi.structural_equal(first.mod, default_schedule(kmod, target).mod)
        assert str(first.trace) == str(default_schedule(kmod, target).trace)


@pytest.mark.parametrize("grid", ["headline_modules", pytest.param("paper_modules", marks=pytest.mark.slow)])
def test_default_schedule_for_every_paper_block(request, grid, target=AVX512):
    """Every fused depthwise + 1x1 block of the paper configurations (3 at 224, 2 at 192/160/128) gets
    the block rule's derived schedule, parallel and vectorized, each 1x1 register block's epilogue right
    after it (the tile loop, pixel block, channel panel: its accumulators a register-sized tile)."""
    mods = request.getfixturevalue(grid)
    kmods = _rule_kernels(mods, target, "mnet.sepblock.", blocks=True)
    assert len(kmods) >= 2 * len(mods)
    for kmod in kmods:
        sch = default_schedule(kmod, target)
        text = sch.mod.script()
        assert "T.parallel" in text and "T.vectorized" in text
        output = sch.mod["main"].params[-1]
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
        (epilogue,) = [b.name_hint for b in blocks if any(w.source.same_as(output) for w in b.writes)]
        (update,) = [b.name_hint for b in blocks if b.name_hint.startswith("conv2d_nhwc_update")]
        pairs = zip(sch.get_loops(sch.get_sblock(epilogue)), sch.get_loops(sch.get_sblock(update)))
        shared = [a for a, b in pairs if sch.get(a).same_as(sch.get(b))]
        assert len(shared) == 3, (epilogue, len(shared))


@pytest.mark.slow
def test_default_schedule_for_v2_v3_layers():
    names = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
    mods = [optimize(from_torch(create_model(n), (1, 3, 224, 224))) for n in names]
    kmods = _rule_kernels(mods, AVX512)
    assert len(kmods) > 30
    assert all(default_schedule(k, AVX512) is not None for k in kmods)


def test_blocking_fits_the_registers():
    for isa in ISAS.values():
        for height, width, vectors in [(112, 112, 4), (14, 14, 32), (7, 7, 64), (1, 1, 8), (3, 3, 1)]:
            b = pointwise(height, width, vectors, isa, cores=2)
            assert b["mr"] * b["nr"] + b["nr"] + 1 <= isa.registers  # accumulators, weights, a broadcast
            assert (height * width) % b["mr"] == 0 and vectors % b["nr"] == 0
            assert width % b["mr"] == 0 or (b["mr"] % width == 0 and b["mr"] // width <= 4)  # a rectangle
            d = depthwise(height, width, vectors, isa, cores=2)
            assert d["h1"] * d["w1"] * d["c1"] <= isa.registers // 2 and width % d["w1"] == 0
            assert height % d["h1"] == 0 and vectors % d["c1"] == 0
            s = separable(height, width, vectors, vectors, isa, cores=2)
            assert height % s["rows"] == 0 and (s["rows"] * width) % s["mr"] == 0 and s["rows"] % s["h1"] == 0
            assert s["mr"] * s["nr"] + s["nr"] + 1 <= isa.registers and width % s["w1"] == 0
            t = stem(height, width, vectors, isa, cores=2)
            assert t["w1"] * t["c1"] <= 16 and t["w1"] * t["c1"] + t["c1"] + 1 <= isa.registers
            assert width % t["w1"] == 0 and vectors % t["c1"] == 0
    # AVX-512: 4 x 4 where the row allows it, 14 pixels x 2 vectors at 14x14 (28 + 2 + 1 of 32 zmm);
    # never 7 x 4, whose 28 accumulators leave 4 registers for 4 weights and a broadcast.
    assert pointwise(56, 56, 8, ISAS["x86-avx512"], 2) == {"mr": 4, "nr": 4}
    assert pointwise(14, 14, 32, ISAS["x86-avx512"], 2) == {"mr": 14, "nr": 2}
    # Depthwise below 28 rows (the taps read the input, padding inlined): one row of up to 8 columns, 2 channel
    # vectors where the accumulators fit half the registers; 2 rows x 4 columns x 2 vectors on larger maps;
    # an integer input (int16 products) keeps its padded tiles and their blocks.
    avx512, avx2 = ISAS["x86-avx512"], ISAS["x86-avx2"]
    assert depthwise(14, 14, 32, avx512, 2) == {"h1": 1, "w1": 7, "c1": 2}
    assert depthwise(8, 8, 8, avx512, 2) == {"h1": 1, "w1": 8, "c1": 2}
    assert depthwise(7, 7, 64, avx2, 2) == {"h1": 1, "w1": 7, "c1": 1}
    assert depthwise(56, 56, 8, avx512, 2) == {"h1": 2, "w1": 4, "c1": 2}
    assert depthwise(14, 14, 32, avx512, 2, padded=True) == {"h1": 2, "w1": 1, "c1": 1}
