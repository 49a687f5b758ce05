"""Tunable microkernel schedules for NHWC 1x1 and 3x3 depthwise convs with a fused elementwise epilogue.

Each rule is the blocking a hand-written microkernel uses, with its knobs as MetaSchedule samples:
- 1x1 conv, a (H*W, Cin) x (Cin, Cout) matmul: a register block of `mr` rows x `nr` vectors of output
  channels accumulated over the whole Cin, weights packed panel by panel at compile time (RewriteLayout:
  the weight is marked layout-free by `annotate`), parallel over the (row, channel-panel) tiles in the
  order `tile_order` derives from the layer's shape;
- 3x3 depthwise: `w1` columns x `c1` channel vectors per output row in registers, the 9 taps unrolled,
  reading the input with the zero padding inlined (no padded copy), parallel over rows;
- a separable block (graph/blocks.py: depthwise + 1x1 in one kernel): parallel over tiles of `rows` output
  rows; each tile computes its depthwise rows (all channels, blocked as above) into a cache-resident buffer,
  then the 1x1's register blocks consume it.
`blocking.py` derives the knobs from the shape and the ISA (the default schedule: `decide=...`);
tuning samples them, so the default is one point of the tuned space and tuning can only improve on it.

Which core computes which part of a tensor is not a knob: a kernel timed alone, as tuning times it, never
finds its input in the other core's cache, so tuning cannot rank it. The 1x1 and depthwise sketches split
the image rows between the cores, as the first conv does, so that each core reads what it wrote; only a
1x1 whose weights far outweigh its input splits its output channels instead (`tile_order`).
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from ..lowering import PREFETCH, PREFETCH_BYTES
from .isa import ISAS, Isa

MAX_ROWS = 32  # register-block pixels of a row (1x1) a sample may take
MAX_BLOCK_ROWS = 4  # register-block rows of pixels (1x1) a sample may take
MAX_VECTORS = 8  # register-block vectors of output channels (1x1)
PANEL_RATIO = 8  # a 1x1 splits its output channels where its weights are this many times its input


def tile_order(height: int, width: int, channels: int) -> str:
    """The parallel order of a 1x1's tiles: pixel-major ("row": each core takes a range of image rows with
    all their output channels, and reads the rows it wrote as the depthwise conv before it), or channel-
    panel-major ("panel": each core reads every pixel and half the weights) where the weights are at
    least PANEL_RATIO times the input (Cin x Cout against H x W x Cin). Measured on AVX-512, 2 threads,
    whole model, one process alternating builds in blocks (30-40 rounds), the shipped records' register
    blocks kept, against their channel panels that tuning had chosen timing each kernel alone: rows
    everywhere 0.92-0.95x at 0.5-224, 0.93x at 1.0-224, 0.96x at 0.25-128; panels kept where the weights
    are 10-21x the input (the last maps, 7x7 or 4x4): 0.905x, 0.90x, 0.94x; panels at 14x14 too (1.3x):
    0.98x at 0.5-224; at 5.2x (0.25-224, 7x7) and 4x (0.5-128, 8x8) either order within 0.5%."""
    return "panel" if channels >= PANEL_RATIO * height * width else "row"


def prefetches_weights(height: int, width: int, channels: int, isa: Isa) -> bool:
    """Whether a 1x1's reduction loop prefetches its weights (lowering.PREFETCH): where its weights are at
    least its input (Cout >= H x W), so each core streams them from the last-level cache for few pixels;
    not for a single pixel (the classifier: each weight load feeds one FMA), and only where a vector is a
    whole cache line (AVX-512: one prefetch per line). Measured, whole model, 2 threads, default schedules,
    against none (alternated in one process, 20-40 rounds): 0.955x at 1.0-224, 0.99-1.01x at 0.5-224 and
    0.25-224 on AVX-512; 1.07x with AVX2 code (8-lane vectors: two prefetches per line, smaller blocks)."""
    return 1 < height * width <= channels and isa.lanes * 4 >= 64


def simd_width(channels: int, lanes: int) -> int:
    """The vector chunk of the channel loop: the widest power of two <= lanes that divides `channels`
    (the graph pads channel counts to the lanes, so this is the full register except for tiny layers)."""
    width = lanes
    while channels % width:
        width //= 2
    return width


def _fuse_epilogue(sch: s_tir.Schedule, conv) -> s_tir.SBlockRV | None:
    """Inline the elementwise chain after the conv into its last block; return that block."""
    consumers = sch.get_consumers(conv)
    if not consumers:
        return None
    cur = consumers[0]
    while True:
        nxt = sch.get_consumers(cur)
        if not nxt:
            return cur
        sch.compute_inline(cur)
        cur = nxt[0]


def _vectorize_innermost(sch: s_tir.Schedule, block, vec: int) -> None:
    inner = sch.get_loops(block)[-1]
    _, v = sch.split(inner, factors=[None, vec])
    sch.vectorize(v)


def _tile(sch, loop, n: int, max_inner: int, decision):
    """Split `loop` into `n` perfect factors, sampled, or fixed to `decision` (the default schedule)."""
    factors = sch.sample_perfect_tile(loop, n=n, max_innermost_factor=max_inner, decision=decision)
    return sch.split(loop, factors=factors)


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def conv_1x1(sch: s_tir.Schedule, conv, isa: Isa, decide: dict | None = None) -> list[s_tir.Schedule]:
    """The sketch: register blocks of pixels x output-channel vectors, parallel tiles in `tile_order`."""
    return [_conv1x1_sketch(sch.copy(), conv, isa, decide)]


def _conv1x1_sketch(sch, conv, isa, decide):
    for pad in sch.get_producers(conv):  # a 1x1 conv's pad is a plain copy
        sch.compute_inline(pad)
    epi = _fuse_epilogue(sch, conv)
    n, h, w, co, ry, rx, ci = sch.get_loops(conv)
    vec = simd_width(_extent(sch, co), isa.lanes)
    height, width, cols = _extent(sch, h), _extent(sch, w), _extent(sch, co) // vec
    order = tile_order(height, width, _extent(sch, co))
    # The register block is h1 rows x w1 columns of pixels: a rectangle, so the accumulator tile is
    # exactly its size (lowering.py keeps it on the stack, and LLVM in registers). `mr` pixels of the
    # derived blocking lie within a row or span whole rows.
    rows_in = decide and (decide["mr"] // width if decide["mr"] % width == 0 else 1)
    h0, h1 = _tile(sch, h, 2, MAX_BLOCK_ROWS, decide and [height // rows_in, rows_in])
    w0, w1 = _tile(sch, w, 2, MAX_ROWS, decide and [width // (decide["mr"] // rows_in), decide["mr"] // rows_in])
    cx, cv = sch.split(co, factors=[None, vec])
    n0, n1 = _tile(sch, cx, 2, MAX_VECTORS, decide and [cols // decide["nr"], decide["nr"]])
    outer = [n, n0, h0, w0] if order == "panel" else [n, h0, w0, n0]
    sch.reorder(*outer, ry, rx, ci, h1, w1, n1, cv)
    if prefetches_weights(height, width, cols * vec, isa):
        sch.annotate(ci, PREFETCH, PREFETCH_BYTES)
    par = sch.fuse(*outer)
    sch.parallel(par)
    for loop in (h1, w1, n1):
        sch.unroll(loop)
    sch.vectorize(cv)
    if epi is not None:
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        _vectorize_innermost(sch, epi, vec)
    return sch


def depthwise_3x3(sch: s_tir.Schedule, conv, isa: Isa, decide: dict | None = None) -> list[s_tir.Schedule]:
    """The sketch: parallel over (rows, channel blocks); column tiles stay serial inside. The taps read the
    float32 input itself, the zero padding inlined: a padded copy of each column tile cost more than it
    saved (alone, 2 threads, hot, against it: 0.54-0.99x on AVX-512 at 1.0-224, 0.5-224 and 0.25-128, no
    kernel slower; 0.58-0.87x with AVX2 code at 0.5-224). An integer input keeps its padded tile, made once
    per column tile for all the taps (`padded_copy`)."""
    return [_depthwise_sketch(sch.copy(), conv, isa, decide)]


def padded_copy(sch: s_tir.Schedule, conv) -> bool:
    """Whether a depthwise conv keeps a padded copy of its input per column tile: an integer input or padded
    tile, converted, widened or quantized once per tile for all its taps (frontends/integer.py); a float32
    input is read in the taps."""
    pads = [sch.get(pad) for pad in sch.get_producers(conv)]
    return any(str(region.source.dtype) != "float32" for pad in pads for region in [*pad.reads, *pad.writes])


def _kept_pads(sch: s_tir.Schedule, conv) -> list:
    """A depthwise conv's pads that stay as padded copies (`padded_copy`); otherwise they are inlined and
    none is left: the taps read the input, a bound test where the tile meets the border."""
    pads = sch.get_producers(conv)
    if padded_copy(sch, conv):
        return pads
    for pad in pads:
        sch.compute_inline(pad)
    return []


def _depthwise_sketch(sch, conv, isa, decide):
    pads = _kept_pads(sch, conv)
    epi = _fuse_epilogue(sch, conv)
    n, h, w, c, ry, rx, rc = sch.get_loops(conv)
    vec = simd_width(_extent(sch, c), isa.lanes)
    height, width, cvecs = _extent(sch, h), _extent(sch, w), _extent(sch, c) // vec
    h0, h1 = _tile(sch, h, 2, 4, decide and [height // decide["h1"], decide["h1"]])
    w0, w1 = _tile(sch, w, 2, 16, decide and [width // decide["w1"], decide["w1"]])
    cx, cv = sch.split(c, factors=[None, vec])
    c0, c1 = _tile(sch, cx, 2, 4, decide and [cvecs // decide["c1"], decide["c1"]])
    sch.reorder(n, h0, c0, w0, h1, ry, rx, rc, w1, c1, cv)
    par = sch.fuse(n, h0, c0)
    sch.parallel(par)
    for loop in (ry, rx, w1, c1):
        sch.unroll(loop)
    sch.vectorize(cv)
    if epi is not None:
        sch.reverse_compute_at(epi, h1, preserve_unit_loops=True)
        _vectorize_innermost(sch, epi, vec)
    for pad in pads:  # the padded input of one column tile, cache-resident
        sch.compute_at(pad, w0, preserve_unit_loops=True)
        _vectorize_innermost(sch, pad, vec)
    return sch


def stem_3x3(sch: s_tir.Schedule, conv, isa: Isa, decide: dict | None = None) -> list[s_tir.Schedule]:
    """A network's first conv (3x3, few input channels): parallel over (output row, channel block); per row,
    column tiles of `w1` pixels x `c1` channel vectors of accumulators, each of the 9 x Cin taps unrolled
    (a broadcast input, `c1` weight vectors). Each tap reads the image itself, the NCHW image where the
    input's transpose is in the kernel (graph/input_layout.py): the zero padding is inlined, a bound test
    on the taps of the first row and column only (the others simplify away once unrolled). A padded copy
    of each column tile (3 x 33 x 3 scalars for 16 pixels, stride 2) cost more than the tile's FMAs: alone,
    AVX-512, 2 threads, the kernel took 0.51x the time at 0.5-224, 0.67x at 1.0-224, 0.42x at 0.25-224,
    0.52x at 0.25-128, 0.60x at 0.5-160 without it."""
    return [_stem_sketch(sch.copy(), conv, isa, decide)]


def _stem_sketch(sch, conv, isa, decide):
    for pad in sch.get_producers(conv):
        for layout in sch.get_producers(pad):  # the input's transpose
            sch.compute_inline(layout)
        sch.compute_inline(pad)
    epi = _fuse_epilogue(sch, conv)
    n, h, w, c, ry, rx, rc = sch.get_loops(conv)
    vec = simd_width(_extent(sch, c), isa.lanes)
    width, cvecs = _extent(sch, w), _extent(sch, c) // vec
    w0, w1 = _tile(sch, w, 2, 16, decide and [width // decide["w1"], decide["w1"]])
    cx, cv = sch.split(c, factors=[None, vec])
    c0, c1 = _tile(sch, cx, 2, 4, decide and [cvecs // decide["c1"], decide["c1"]])
    sch.reorder(n, h, c0, w0, ry, rx, rc, w1, c1, cv)
    par = sch.fuse(n, h, c0)
    sch.parallel(par)
    for loop in (ry, rx, rc, w1, c1):
        sch.unroll(loop)
    sch.vectorize(cv)
    if epi is not None:
        sch.reverse_compute_at(epi, w0, preserve_unit_loops=True)
        _vectorize_innermost(sch, epi, vec)
    return sch


def separable_block(sch: s_tir.Schedule, conv, isa: Isa, decide: dict | None = None) -> list[s_tir.Schedule]:
    """Sketches of a depthwise + 1x1 kernel (`conv` is the 1x1): inside a row tile, channel-panel-major 1x1
    blocks (the epilogue after the tile) or pixel-block-major ones (the epilogue after each register block,
    whose accumulators then stay a register-sized tile, as in a 1x1 kernel)."""
    orders = ("panel", "row") if decide is None else (decide["order"],)
    return [_separable_sketch(sch.copy(), conv, isa, order, decide) for order in orders]


def _depthwise_chain(sch, conv):
    """(the depthwise conv, the last block of its elementwise chain) feeding the 1x1 `conv`; the 1x1's
    padding copy and all but the chain's last block are inlined."""
    for pad in sch.get_producers(conv):
        if sch.get(pad).name_hint.startswith("pad"):
            sch.compute_inline(pad)
    (last,) = sch.get_producers(conv)
    while True:
        (prev,) = sch.get_producers(last)
        if any(int(iv.iter_type) != 0 for iv in sch.get(prev).iter_vars):
            return prev, last
        sch.compute_inline(prev)


def _separable_sketch(sch, conv, isa, order, decide):
    dw, dw_out = _depthwise_chain(sch, conv)
    dw_pads = _kept_pads(sch, dw)  # as in a depthwise kernel of its own
    epi = _fuse_epilogue(sch, conv)
    n, h, w, co, ry, rx, ci = sch.get_loops(conv)
    vec = simd_width(_extent(sch, co), isa.lanes)
    height, width, cols = _extent(sch, h), _extent(sch, w), _extent(sch, co) // vec
    hb, ht = _tile(sch, h, 2, 8, decide and [height // decide["rows"], decide["rows"]])
    m = sch.fuse(ht, w)
    m0, m1 = _tile(sch, m, 2, MAX_ROWS, decide and [_extent(sch, m) // decide["mr"], decide["mr"]])
    cx, cv = sch.split(co, factors=[None, vec])
    n0, n1 = _tile(sch, cx, 2, MAX_VECTORS, decide and [cols // decide["nr"], decide["nr"]])
    inner = [n0, m0] if order == "panel" else [m0, n0]
    sch.reorder(n, hb, *inner, ry, rx, ci, m1, n1, cv)
    par = sch.fuse(n, hb)
    sch.parallel(par)
    sch.unroll(m1)
    sch.unroll(n1)
    sch.vectorize(cv)
    if epi is not None:
        sch.reverse_compute_at(epi, inner[-1] if order == "row" else par, preserve_unit_loops=True)
        _vectorize_innermost(sch, epi, vec)
    # The tile's depthwise rows, all channels, before its 1x1 blocks.
    sch.compute_at(dw_out, par, preserve_unit_loops=True)
    sch.compute_at(dw, par, preserve_unit_loops=True)
    _, dh, dwl, dc, dry, drx, drc = sch.get_loops(dw)[-7:]
    dvec = simd_width(_extent(sch, dc), isa.lanes)
    rows, dcols = _extent(sch, dh), _extent(sch, dc) // dvec
    dh0, dh1 = _tile(sch, dh, 2, 4, decide and [rows // decide["h1"], decide["h1"]])
    dw0, dw1 = _tile(sch, dwl, 2, 16, decide and [width // decide["w1"], decide["w1"]])
    dcx, dcv = sch.split(dc, factors=[None, dvec])
    dc0, dc1 = _tile(sch, dcx, 2, 4, decide and [dcols // decide["c1"], decide["c1"]])
    sch.reorder(dh0, dc0, dw0, dh1, dry, drx, drc, dw1, dc1, dcv)
    for loop in (dry, drx, dw1, dc1):
        sch.unroll(loop)
    sch.vectorize(dcv)
    sch.reverse_compute_at(dw_out, dh1, preserve_unit_loops=True)
    _vectorize_innermost(sch, dw_out, dvec)
    for pad in dw_pads:
        sch.compute_at(pad, dw0, preserve_unit_loops=True)
        _vectorize_innermost(sch, pad, dvec)
    return sch


RULES = {"conv1x1": conv_1x1, "dw3x3": depthwise_3x3, "sepblock": separable_block, "stem3x3": stem_3x3}


def _register() -> None:
    for kind, fn in RULES.items():
        for isa in ISAS.values():
            def rule(sch, block, _fn=fn, _isa=isa):
                return _fn(sch, block, _isa)

            for key in ("cpu", "arm_cpu"):
                tvm.register_global_func(f"s_tir.meta_schedule.{key}.{isa.rule(kind)}", rule, override=True)


_register()
