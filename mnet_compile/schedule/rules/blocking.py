"""The default knobs of the conv rules, derived from the kernel's shape and the ISA (no sampling).

The same reasoning as a hand-written microkernel: fill the vector registers with accumulators while
leaving room for the operands of one step, prefer the block whose loads per FMA are fewest, and keep
enough parallel tiles for every core.
"""

from __future__ import annotations

from .conv import MAX_BLOCK_ROWS
from .isa import Isa


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def pointwise(height: int, width: int, vectors: int, isa: Isa, cores: int) -> dict:
    """1x1 conv: `mr` pixels x `nr` vectors of output channels of accumulators; each step loads `nr`
    weight vectors and broadcasts `mr` activations, so the score is FMAs per load, mr*nr / (mr + nr).
    The accumulators, the step's `nr` weights and its broadcast must all fit the registers: 7 x 4 zmm
    (33 of 32) spilled two accumulators inside the reduction loop. A block of pixels lies within an image
    row or spans at most MAX_BLOCK_ROWS whole rows (a rectangle: the accumulator tile is exactly its size)."""
    rows = height * width
    pixels = [d for d in _divisors(rows, 32) if width % d == 0 or (d % width == 0 and d // width <= MAX_BLOCK_ROWS)]
    best = None
    for nr in _divisors(vectors, 8):
        for mr in pixels:
            if mr * nr + nr + 1 > isa.registers:
                continue
            tiles = (rows // mr) * (vectors // nr)
            score = mr * nr / (mr + nr) * min(1.0, tiles / (4 * cores))
            key = (score, nr)
            if best is None or key > best[0]:
                best = (key, mr, nr)
    _, mr, nr = best
    return {"mr": mr, "nr": nr}


def depthwise(height: int, width: int, vectors: int, isa: Isa, cores: int, exact_int8: bool = False,
              padded: bool = False) -> dict:
    """3x3 depthwise: `h1` rows x `w1` columns x `c1` channel vectors of accumulators. Two output rows
    share two of their three input rows; a narrow column tile keeps the 9 unrolled taps' input loads
    few. Measured on AVX-512 (1.0-224, one thread, every h1/w1/c1 of the sketch, three runs, the input's
    padded copy per column tile): the best blocks were 2 x 2-4 x 1-2 on maps of 28 rows or more, 2 x 1 x 1
    at 14 and 1 x 1 x 1 at 7. Where the taps read the float32 input, its padding inlined (rules/conv.py),
    maps under 28 rows take one row of the widest column tile of at most 8 pixels, 2 channel vectors where
    the accumulators fit half the registers (AVX-512, 2 threads, each kernel alone: see README).
    `padded`: an integer input, which keeps its padded copy per column tile (and the blocks measured so).

    `exact_int8`: an int8 depthwise summed in float32 (frontends/integer.py), whose inputs are converted
    once per column tile: a row of up to 8 columns shares those conversions. Measured on AVX-512 (1.0-224,
    2 threads, 7 alternating runs): 1 x 8 x 1 (1 x 7 x 1 at 14 and 7 columns) took 0.67-0.91x the time of
    the blocks above on every map of 4 or more channel vectors, 1.2x on 112x112x32 (2 vectors)."""
    if exact_int8 and vectors >= 4:
        return {"h1": 1, "w1": max(_divisors(width, 8)), "c1": 1}
    budget = isa.registers // 2
    large = height >= 28
    if not large and not padded:
        w1 = max(_divisors(width, 8))
        c1 = 2 if vectors % 2 == 0 and 2 * w1 <= budget else 1
        return {"h1": 1, "w1": w1, "c1": c1}
    h1 = 2 if height % 2 == 0 else 1
    c1 = 2 if large and vectors % 2 == 0 else 1
    w1 = max(d for d in _divisors(width, 4 if large else 1) if h1 * d * c1 <= budget)
    return {"h1": h1, "w1": w1, "c1": c1}


def stem(height: int, width: int, vectors: int, isa: Isa, cores: int) -> dict:
    """A first conv (3x3, few input channels): `w1` columns x `c1` channel vectors of accumulators, at most
    16 of them (a tap broadcasts `w1` inputs and loads `c1` weight vectors; the step's operands fit beside
    them), the most accumulators, then the most channel vectors per tap."""
    best = None
    for c1 in _divisors(vectors, 4):
        for w1 in _divisors(width, 16):
            if w1 * c1 <= 16 and w1 * c1 + c1 + 1 <= isa.registers and (best is None or (w1 * c1, c1) > best[0]):
                best = ((w1 * c1, c1), w1, c1)
    _, w1, c1 = best
    return {"w1": w1, "c1": c1}


def separable(height: int, width: int, in_vectors: int, out_vectors: int, isa: Isa, cores: int) -> dict:
    """A depthwise + 1x1 block (graph/blocks.py): tiles of `rows` output rows, 4 on maps of 56 rows or more
    and 2 below (measured on AVX-512, 1.0-224: 1-row tiles lose the depthwise's two-row blocking, 7-row
    tiles leave cores idle; 2 or 8 on the large maps were no faster in the whole model), the 1x1 blocked
    over the tile's pixels as a 1x1 kernel is, pixel-block-major ("row": each register block's epilogue
    right after it, as in a 1x1 kernel; channel-panel-major took 1.4x the time at 112x112x32->64, alone),
    and the depthwise as on its own."""
    rows = next(r for r in ((4, 2, 1) if height >= 56 else (2, 1)) if height % r == 0)
    out = pointwise(rows, width, out_vectors, isa, cores)
    dw = depthwise(height, width, in_vectors, isa, cores)
    h1 = 2 if rows % 2 == 0 else 1
    return {"rows": rows, "mr": out["mr"], "nr": out["nr"], "order": "row", "h1": h1, "w1": dw["w1"], "c1": dw["c1"]}
