"""The custom conv rules: every sketch computes what the unscheduled kernel computes, and is really scheduled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from tvm import tirx
from tvm.s_tir import meta_schedule as ms

from mnet_compile.schedule.rules import default_schedule
from mnet_compile.schedule.tunable import tunable_kernels

from .blocks import TARGET, fused_of, parallel_loop, rule_of, run_kernel, separable_block

# channel counts that are no multiple of 8 lanes; the last 1x1 (2x2 pixels, 40 channels: weights 10x its
# input) takes channel-panel tiles, the others pixel-major ones
CASES = [(20, 12, 1, 14), (12, 20, 2, 16), (12, 40, 2, 4)]


def assert_parallel_and_vectorized(sch) -> None:
    """The conv and its fused epilogue run inside the parallel loop (a pad may sit anywhere: its place is a
    knob; the weight packing is split out of the kernel and folded at compile time), and the block that
    writes the kernel's output ends in a vectorized loop."""
    func = sch.mod["main"]
    output = func.params[-1].name
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    kinds = {b.name_hint: [sch.get(loop).kind for loop in sch.get_loops(sch.get_sblock(b.name_hint))] for b in blocks}
    packing = {b.name_hint for b in blocks if "meta_schedule.layout_rewrite_preproc" in b.annotations}
    for name, loops in kinds.items():
        if not name.startswith("pad") and name not in packing:
            assert tirx.ForKind.PARALLEL in loops, f"{name} runs outside the parallel loop: {kinds}"
    writers = [b.name_hint for b in blocks if any(w.source.name == output for w in b.writes)]
    assert len(writers) == 1 and kinds[writers[0]][-1] == tirx.ForKind.VECTORIZED, kinds


@pytest.mark.parametrize("cin,cout,stride,res,blocks", [(*c, False) for c in CASES] + [(20, 12, 1, 28, True)])
def test_custom_rules_match_unscheduled_kernels(cin, cout, stride, res, blocks):
    """With `blocks`, the depthwise + 1x1 pair is one kernel (28 rows: graph.blocks.MIN_ROWS) and the
    separable-block rule schedules it. A depthwise conv, of its own or in a block, reads its input in the taps
    (the zero padding inlined, no padded copy)."""
    _, found = tunable_kernels(fused_of(separable_block(cin, cout, stride), (1, cin, res, res), blocks), TARGET)
    seen = set()
    rng = np.random.default_rng(0)
    for _gv, func, kmod in found:
        rule = rule_of(func)
        if not rule:
            continue
        seen |= rule
        shapes = [[int(d) for d in info.shape] for info in ms.arg_info.ArgInfo.from_prim_func(func)]
        if blocks:  # the block's 1x1 weights are packed as a 1x1 kernel's are (both its weights are named param_0)
            (free,) = kmod["main"].attrs["layout_free_buffers"]
            assert shapes[int(free)] == [1, 1, cin, cout], shapes
        inputs = [rng.standard_normal(shape).astype("float32") for shape in shapes]
        expected = run_kernel(kmod, [a.copy() for a in inputs])
        for seed in (1, 2):  # every sketch (the block's two 1x1 orders inside a tile), two samples of its knobs
            ctx = ms.TuneContext(mod=kmod, target=TARGET, space_generator="post-order-apply", rand_state=seed)
            sketches = ctx.generate_design_space()
            assert len(sketches) == (2 if blocks else 1)
            for sch in sketches:
                assert all(p.apply(sch) for p in ctx.space_generator.postprocs)
                assert_parallel_and_vectorized(sch)
                if rule & {"mnet.dw3x3.x86-avx2", "mnet.sepblock.x86-avx2"}:  # the taps read the input: no padded copy
                    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
                    assert not any(name.startswith("pad") for name in names), names
                got = run_kernel(sch.mod, [a.copy() for a in inputs])
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert seen == ({"mnet.sepblock.x86-avx2"} if blocks else {"mnet.dw3x3.x86-avx2", "mnet.conv1x1.x86-avx2"})


def test_first_conv_rule_matches_the_unscheduled_kernel():
    """A network's first conv (3x3, stride 2, RGB in) takes the stem rule; its sketch (two knob samples) and its
    derived default compute what the unscheduled kernel computes, inside the parallel loop, vectorized. The
    kernel reads the NCHW image (the input's transpose is part of it: graph/input_layout.py), and every
    schedule of it reads the image in its taps: no transposed copy, no padded copy."""
    torch.manual_seed(0)
    first = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()).eval()
    _, found = tunable_kernels(fused_of(first, (1, 3, 32, 32)), TARGET)
    (kmod,) = [k for _gv, func, k in found if rule_of(func) == {"mnet.stem3x3.x86-avx2"}]
    assert [int(d) for d in kmod["main"].params[0].shape] == [1, 3, 32, 32]
    rng = np.random.default_rng(0)
    shapes = [[int(d) for d in info.shape] for info in ms.arg_info.ArgInfo.from_prim_func(kmod["main"])]
    inputs = [rng.standard_normal(shape).astype("float32") for shape in shapes]
    expected = run_kernel(kmod, [a.copy() for a in inputs])
    schedules = [default_schedule(kmod, TARGET)]
    for seed in (1, 2):
        ctx = ms.TuneContext(mod=kmod, target=TARGET, space_generator="post-order-apply", rand_state=seed)
        (sch,) = ctx.generate_design_space()
        assert all(p.apply(sch) for p in ctx.space_generator.postprocs)
        schedules.append(sch)
    for sch in schedules:
        assert_parallel_and_vectorized(sch)
        blocks = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
        assert not any(name.startswith(("T_transpose", "pad")) for name in blocks), blocks
        np.testing.assert_allclose(run_kernel(sch.mod, [a.copy() for a in inputs]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin,cout,stride,res,expected", [(20, 12, 1, 14, "row"), (12, 40, 2, 4, "panel")])
def test_tiles_split_the_rows_unless_the_weights_outweigh_the_input(cin, cout, stride, res, expected):
    """The depthwise conv splits its output rows between the cores, and so does the 1x1 after it, unless
    its weights are PANEL_RATIO times its input: then its output channels; sampled or derived alike."""
    from mnet_compile.schedule.rules.conv import tile_order

    assert [tile_order(7, 7, c) for c in (256, 512, 1024)] == ["row", "panel", "panel"]  # 0.25/0.5/1.0-224
    assert [tile_order(14, 14, 512), tile_order(4, 4, 256), tile_order(8, 8, 256)] == ["row", "panel", "row"]
    _, found = tunable_kernels(fused_of(separable_block(cin, cout, stride), (1, cin, res, res)), TARGET)
    for _gv, func, kmod in found:
        rule = rule_of(func)
        if not rule & {"mnet.conv1x1.x86-avx2", "mnet.dw3x3.x86-avx2"}:
            continue
        ctx = ms.TuneContext(mod=kmod, target=TARGET, space_generator="post-order-apply", rand_state=1)
        for func in (default_schedule(kmod, TARGET).mod["main"], ctx.generate_design_space()[0].mod["main"]):
            loops = parallel_loop(func).split("_")  # the fused loops' names, outermost first: yy rows, ff channels
            rows_first = loops.index("yy") < loops.index("ff")
            assert rows_first == ("mnet.dw3x3.x86-avx2" in rule or expected == "row"), (rule, parallel_loop(func))


@pytest.mark.parametrize("cin,cout,stride,res,expected", [(20, 12, 1, 14, False), (12, 40, 2, 4, True)])
def test_weights_prefetched_where_they_outweigh_the_input_on_avx512(cin, cout, stride, res, expected):
    """The 1x1's reduction loop is annotated for weight prefetch (lowering.PREFETCH) where its weights are
    at least its input, on AVX-512 only (a vector is a cache line), never for the classifier's single
    pixel; sampled or derived alike (the kernels are only scheduled here: AVX-512 code is not run)."""
    import tvm

    from mnet_compile.schedule.lowering import PREFETCH
    from mnet_compile.schedule.rules.conv import prefetches_weights
    from mnet_compile.schedule.rules.isa import ISAS

    avx512, avx2 = ISAS["x86-avx512"], ISAS["x86-avx2"]
    mobilenet = [(28, 256), (14, 512), (7, 1024), (14, 128), (7, 256), (1, 1000)]  # 1.0-224 .. 0.25-224, classifier
    assert [prefetches_weights(h, h, c, avx512) for h, c in mobilenet] == [False, True, True, False, True, False]
    assert not prefetches_weights(14, 14, 512, avx2)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    _, found = tunable_kernels(fused_of(separable_block(cin, cout, stride), (1, cin, res, res)), target)
    (kmod,) = [k for _gv, func, k in found if rule_of(func) == {"mnet.conv1x1.x86-avx512"}]
    ctx = ms.TuneContext(mod=kmod, target=target, space_generator="post-order-apply", rand_state=1)
    for func in (default_schedule(kmod, target).mod["main"], ctx.generate_design_space()[0].mod["main"]):
        assert (PREFETCH in func.script()) == expected
