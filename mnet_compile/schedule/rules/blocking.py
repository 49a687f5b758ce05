"""The default knobs of the conv rules, derived from the kernel's shape and the ISA (no sampling).

The same reasoning as a hand-written microkernel: fill the vector registers with accumulators while
leaving room for the operands of one step, prefer the block whose loads per FMA are fewest, and keep
enough parallel tiles for every core.
"""

from __future__ import annotations

from .isa import Isa


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def pointwise(height: int, width: int, vectors: int, isa: Isa, cores: int) -> dict:
    """1x1 conv: `mr` pixels x `nr` vectors of output channels of accumulators; each step loads `nr`
    weight vectors and broadcasts `mr` activations, so the score is FMAs per load, mr*nr / (mr + nr).
    A block of pixels stays within an image row or spans whole rows (the epilogue then has a static
    rectangular tile)."""
    rows = height * width
    pixels = [d for d in _divisors(rows, 32) if width % d == 0 or d % width == 0]
    best = None
    for nr in _divisors(vectors, 8):
        for mr in pixels:
            if mr * nr > isa.registers - 4:  # accumulators; the rest for weights and a broadcast
                continue
            tiles = (rows // mr) * (vectors // nr)
            score = mr * nr / (mr + nr) * min(1.0, tiles / (4 * cores))
            key = (score, nr)
            if best is None or key > best[0]:
                best = (key, mr, nr)
    _, mr, nr = best
    # Panel-major parallel tiles: a weight panel stays in cache while every pixel block passes by it.
    return {"mr": mr, "nr": nr, "order": "panel"}


def depthwise(height: int, width: int, vectors: int, isa: Isa, cores: int) -> dict:
    """3x3 depthwise: `w1` columns x `c1` channel vectors of accumulators per output row; each tap loads
    w1*c1 input vectors and c1 weight vectors, so half the registers hold accumulators."""
    budget = isa.registers // 2 - 2
    best = None
    for c1 in _divisors(vectors, 4):
        for w1 in _divisors(width, 16):
            if w1 * c1 > budget:
                continue
            tiles = height * (vectors // c1)
            key = (w1 * c1 * min(1.0, tiles / (4 * cores)), c1)
            if best is None or key > best[0]:
                best = (key, w1, c1)
    _, w1, c1 = best
    return {"h1": 1, "w1": w1, "c1": c1, "order": "rows"}
