"""Transfer tuning: a kernel with no record of its own takes the best record of the nearest tuned kernel
of the same kind, its tile sizes refitted to the new loop extents.

The idea of TVM's TopHub fallback and of transfer-tuning (Gibson and Cano, PACT 2022): a schedule tuned
for one layer shape is a good start for a similar one. Two kernels are of the same kind when their blocks
carry the same names and rule annotations and their parameters the same dtypes (a 1x1 conv of the
x86-avx512 rule, a 3x3 depthwise, the first conv under MetaSchedule's generic rules ...); the nearest is
the one with the same channel counts whose spatial extents differ least (`distance`). The record's trace is replayed on the new kernel with every
`sample_perfect_tile` decision refitted (each inner factor the largest divisor of what is left of the new
extent that is not larger than the tuned one), then postprocessed like any tuning candidate; a trace that
does not replay or that a postproc rejects is skipped for the next record. A kernel of a one-sketch conv
rule replays the record's tile decisions on its own sketch instead, so that the parallel order is the one
its own shape derives (rules/conv.py, `tile_order`), not the tuned kernel's.
"""

from __future__ import annotations

import math
import re

import tvm
import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from .rules.annotate import RULE_KEY
from .rules.default import own_sketch, postprocess

NEAREST = 3  # tuned kernels tried, nearest first
RECORDS = 2  # records tried per tuned kernel, best first


def kind_and_shape(kmod: tvm.IRModule):
    """(kind, parameter shapes) of a kernel module: kind = its blocks' names without digits, their rule
    annotations and the parameter dtypes, so a 1x1 conv with bias and ReLU matches any other such 1x1 conv,
    whatever its shape."""
    sch = s_tir.Schedule(kmod)
    blocks = tuple(
        (re.sub(r"\d+", "", stmt.name_hint), str(stmt.annotations.get(RULE_KEY, "")))
        for stmt in map(sch.get, sch.get_child_blocks(sch.get_sblock("root")))
    )
    infos = ms.arg_info.ArgInfo.from_prim_func(kmod["main"])
    dtypes = tuple(str(info.dtype) for info in infos)  # an int8 kernel never takes an fp32 kernel's record
    return (blocks, dtypes), tuple(tuple(int(d) for d in info.shape) for info in infos)


def distance(a: tuple, b: tuple) -> float:
    """Sum of |log ratio| over the spatial dimensions (1 and 2 of NHWC / HWIO tensors) of two kernels'
    parameter shapes; inf unless every other dimension (batch, channels) is equal. The tuned register
    block is a number of channel vectors: refitted to other channel counts it measured up to 2x slower
    than the derived default (0.35-224 from the 0.25/0.5 records), while other resolutions keep it."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return math.inf
    total = 0.0
    for sx, sy in zip(a, b):
        for i, (x, y) in enumerate(zip(sx, sy)):
            if len(sx) == 4 and i in (1, 2):
                total += abs(math.log(x / y))
            elif x != y:
                return math.inf
    return total


class TransferIndex:
    """The tuned kernels of a database grouped by kind, to find the nearest ones to a new kernel."""

    def __init__(self, database: ms.database.Database):
        self.database = database
        self.by_kind: dict[tuple, list] = {}
        seen = set()
        for rec in database.get_all_tuning_records():
            workload = rec.workload
            key = tvm_ffi.structural_hash(workload.mod)
            if key in seen:
                continue
            seen.add(key)
            kind, shapes = kind_and_shape(workload.mod)
            self.by_kind.setdefault(kind, []).append((shapes, workload))

    def nearest(self, kmod: tvm.IRModule, count: int = NEAREST) -> list:
        """Up to `count` tuned workloads of the kernel's kind, nearest first (the kernel itself excluded)."""
        kind, shapes = kind_and_shape(kmod)
        found = [(distance(shapes, s), w) for s, w in self.by_kind.get(kind, [])]
        found = [(d, w) for d, w in found if 0 < d < math.inf or (d == 0 and not tvm_ffi.structural_equal(w.mod, kmod))]
        return [w for _, w in sorted(found, key=lambda item: item[0])[:count]]


def refit_tile(decision: list[int], extent: int, max_innermost: int) -> list[int]:
    """Perfect tile factors of `extent` as close to `decision` as the divisors allow, never larger
    (a register block that fitted stays fitting): inner factors first, the outermost takes the rest."""
    rest, inner = extent, []
    for i, factor in enumerate(reversed(decision[1:])):
        limit = min(factor, max_innermost) if i == 0 and max_innermost > 0 else factor
        pick = max(d for d in range(1, min(limit, rest) + 1) if rest % d == 0)
        inner.append(pick)
        rest //= pick
    return [rest] + inner[::-1]


def replay(trace, kmod: tvm.IRModule, target: Target, sketch: s_tir.Schedule | None) -> s_tir.Schedule | None:
    """`trace` (tuned on another shape) applied to `kmod` with refitted tiles and postprocessed, or None;
    for a kernel of a one-sketch rule (`sketch`: `own_sketch(kmod)`, made once per kernel: ~6 ms), that
    sketch with the trace's tile decisions, refitted."""
    sch = s_tir.Schedule(kmod, enable_check=False, error_render_level="none")
    tuned = None
    if sketch is not None:
        tiles = [trace.decisions[inst] for inst in trace.insts if inst.kind.name == "SamplePerfectTile"]
        if len(tiles) != sum(inst.kind.name == "SamplePerfectTile" for inst in sketch.trace.insts):
            return None  # a record of an older form of the rule
        trace, tuned = sketch.trace, iter(tiles)

    def refit(inst, inputs, attrs, decision):
        if inst.kind.name != "SamplePerfectTile":
            return decision
        extent = int(sch.get(inputs[0]).extent)
        return refit_tile([int(d) for d in (next(tuned) if tuned is not None else decision)], extent, int(attrs[1]))

    try:
        trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=refit)
        if postprocess(sch, target) is not None:
            return None
    except Exception:  # the tuned kernel's structure does not fit this one: try the next record
        return None
    return sch


def transferred_schedule(index: TransferIndex, kmod: tvm.IRModule, target: Target) -> s_tir.Schedule | None:
    """The best record of the nearest tuned kernel of the same kind that replays on `kmod`, or None."""
    nearest = index.nearest(kmod)
    sketch = own_sketch(kmod) if nearest else None
    for workload in nearest:
        for rec in index.database.get_top_k(workload, RECORDS):
            sch = replay(rec.trace, kmod, target, sketch)
            if sch is not None:
                return sch
    return None
