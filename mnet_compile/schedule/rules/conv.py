"""Tunable schedules for NHWC 3x3 depthwise and 1x1 convs with a fused elementwise epilogue.

Each rule returns several sketches (structural choices: loop order, epilogue location); inside a sketch
the knobs are sampled, so evolutionary search and the cost model tune them: tile sizes, the SIMD chunk
of the channel loop (vector width), the pad's compute location, the auto-unroll depth, and the
parallel extent (the product of the outer tile counts, all fused into one parallel loop).
"""

from __future__ import annotations

import tvm
from tvm import s_tir

UNROLL_STEPS = [0, 16, 64, 512]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def vector_choices(channels: int, lanes: int) -> list[int]:
    """Channel chunks for the vectorized loop: multiples of the lane count that divide `channels`,
    else divisors near one register (20 channels, 8 lanes -> 4, 5, 10)."""
    divs = _divisors(channels)
    best = [d for d in divs if d % lanes == 0 and d <= 2 * lanes]
    if best:
        return best
    near = [d for d in divs if lanes // 2 <= d <= 2 * lanes]
    return near or [max(d for d in divs if d <= 2 * lanes)]


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


def _vectorize_epilogue(sch: s_tir.Schedule, epi, vec) -> None:
    inner = sch.get_loops(epi)[-1]
    _, v = sch.split(inner, factors=[None, vec])
    sch.vectorize(v)


def _channel_split(sch, loop, channels: int, lanes: int):
    choices = vector_choices(channels, lanes)
    weights = [2.0 if c % lanes == 0 and c == lanes else 1.0 for c in choices]
    total = sum(weights)
    vec = sch.sample_categorical(candidates=choices, probs=[w / total for w in weights])
    outer, inner = sch.split(loop, factors=[None, vec])
    return vec, outer, inner


def _unroll(sch, loop) -> None:
    step = sch.sample_categorical(candidates=UNROLL_STEPS, probs=[0.25] * 4)
    sch.annotate(loop, "pragma_auto_unroll_max_step", step)
    sch.annotate(loop, "pragma_unroll_explicit", 1)


def _parallel_outer(sch, outer, cv, epi, epi_loop, vec):
    """Fuse and parallelize the outer loops, vectorize the channel vector, unroll, and place the epilogue
    at `epi_loop` (None: at the parallel loop)."""
    par = sch.fuse(*outer)
    sch.parallel(par)
    sch.vectorize(cv)
    _unroll(sch, par)
    if epi is not None:
        sch.reverse_compute_at(epi, epi_loop if epi_loop is not None else par, preserve_unit_loops=True)
        _vectorize_epilogue(sch, epi, vec)


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def depthwise_3x3(sch: s_tir.Schedule, conv, lanes: int) -> list[s_tir.Schedule]:
    """Output tile: rows h1 x columns w1 x channels (cI chunks of `vec`), accumulated over the 9 taps
    with the w1*cI vectors held in registers; stride 1 and 2 share the schedule."""
    results = []
    for order in (0, 1):  # 0: rows, cols, channels outermost; 1: channels between rows and cols
        for epi_at in (0, 1):  # 0: epilogue per output row tile; 1: after the whole outer tile
            results.append(_depthwise_sketch(sch.copy(), conv, lanes, order, epi_at))
    return results


def _depthwise_sketch(sch, conv, lanes, order, epi_at):
    pads = sch.get_producers(conv)
    epi = _fuse_epilogue(sch, conv)
    n, h, w, c, ry, rx, rc = sch.get_loops(conv)
    channels = _extent(sch, c)
    h0, h1 = sch.split(h, factors=sch.sample_perfect_tile(h, n=2, max_innermost_factor=4))
    w0, w1 = sch.split(w, factors=sch.sample_perfect_tile(w, n=2, max_innermost_factor=8))
    vec, cx, cv = _channel_split(sch, c, channels, lanes)
    c0, c1 = sch.split(cx, factors=sch.sample_perfect_tile(cx, n=2, max_innermost_factor=4))
    outer = [n, h0, w0, c0] if order == 0 else [n, h0, c0, w0]
    sch.reorder(*outer, h1, ry, rx, rc, w1, c1, cv)
    _parallel_outer(sch, outer, cv, epi, h1 if epi_at == 0 else None, vec)
    for pad in pads:
        loc = sch.sample_compute_location(pad)
        sch.compute_at(pad, loc)
    return sch


def conv_1x1(sch: s_tir.Schedule, conv, lanes: int) -> list[s_tir.Schedule]:
    """The 1x1 conv as a (H*W, Cin) x (Cin, Cout) matmul: SSRSRS tiling with a w2 x (n2*vec) register
    block, channel-innermost vectors, the epilogue at the inner or outer spatial tile."""
    results = []
    for order in (0, 1):  # 0: spatial tiles outermost; 1: output-channel tiles outermost
        for epi_at in (0, 1):  # 0: after the inner spatial tile; 1: after the outer (parallel) tile
            results.append(_conv1x1_sketch(sch.copy(), conv, lanes, order, epi_at))
    return results


def _conv1x1_sketch(sch, conv, lanes, order, epi_at):
    for pad in sch.get_producers(conv):  # a 1x1 conv's pad is a plain copy
        sch.compute_inline(pad)
    epi = _fuse_epilogue(sch, conv)
    n, h, w, co, ry, rx, ci = sch.get_loops(conv)
    channels = _extent(sch, co)
    h0, h1 = sch.split(h, factors=sch.sample_perfect_tile(h, n=2, max_innermost_factor=16))
    w0, w1, w2 = sch.split(w, factors=sch.sample_perfect_tile(w, n=3, max_innermost_factor=8))
    vec, cx, cv = _channel_split(sch, co, channels, lanes)
    n0, n1, n2 = sch.split(cx, factors=sch.sample_perfect_tile(cx, n=3, max_innermost_factor=4))
    k0, k1 = sch.split(ci, factors=sch.sample_perfect_tile(ci, n=2, max_innermost_factor=64))
    outer = [n, h0, w0, n0] if order == 0 else [n, n0, h0, w0]
    sch.reorder(*outer, h1, w1, n1, ry, rx, k0, k1, w2, n2, cv)
    _parallel_outer(sch, outer, cv, epi, n1 if epi_at == 0 else None, vec)
    return sch


def _register(kind: str, fn) -> None:
    for lanes in (4, 8, 16):
        def rule(sch, block, _lanes=lanes):
            return fn(sch, block, _lanes)

        for key in ("cpu", "arm_cpu"):
            tvm.register_global_func(f"s_tir.meta_schedule.{key}.mnet.{kind}.v{lanes}", rule, override=True)


_register("dw3x3", depthwise_3x3)
_register("conv1x1", conv_1x1)
