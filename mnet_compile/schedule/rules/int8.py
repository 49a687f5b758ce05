"""The int8 dense convs on x86 AVX-512 VNNI: `vpdpbusd` microkernel (u8 activations x s8 packed weights).

The integer graph (frontends/integer.py, `conv_u8i8_te`) gives such a kernel three blocks: `data_u8`
(the int8 input + 128, zero-point padded, channels padded to 4), `conv2d_nhwc_u8i8` (int32 sums over
weights packed as (Cout/16, taps*Cin/4, 16, 4)) and the requantization epilogue. The rule: a register block of `mr` pixels of a row x `nr` 16-channel vectors,
accumulated over the taps and Cin, four channels per `vpdpbusd` (the 16x4 step is tensorized), parallel over
(channel panel, row, pixel block) tiles; the epilogue per tile, vectorized; the +128 pass vectorized and
parallel (the 1x1 convs: ~95% of MobileNet's mult-adds; the stem too). The knobs are samples (tunable); `default_schedule` fixes them from the shape.

TVM's own `dot_16x4_vnni` intrinsic calls llvm.x86.avx512.vpdpbusd.512 with i32 vectors, which the LLVM
of apache-tvm 0.27 rejects (it takes i8 vectors now); this file registers the same description with an
implementation that passes i8 vectors.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target, codegen

from .annotate import RULE_KEY, SKIP
from .default import postprocess

BLOCK = "conv2d_nhwc_u8i8"
RULE = "mnet.conv_u8i8.x86-avx512-vnni"
INTRIN = "mnet_dot_16x4_u8i8i32_vnni"
LANES, DEPTH = 16, 4
MAX_PIXELS, MAX_VECTORS = 28, 4


@T.prim_func(s_tir=True)
def _dot_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_vnni(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype="int8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            a,
            B.vload([0, 0], dtype="int8x64"),
            dtype="int32x16",
        )


TensorIntrin.register(INTRIN, _dot_desc, _dot_vnni, override=True)


def has_vnni(target: Target) -> bool:
    """The target has AVX-512 VNNI (vpdpbusd on zmm)."""
    if target.kind.name != "llvm":
        return False
    try:
        return bool(codegen.llvm_cpu_has_features("avx512vnni", target))
    except Exception:  # a target LLVM cannot describe
        return False


def annotate_func(func, target: Target):
    """`func` with the VNNI rule on its u8 x s8 conv block (and SKIP on the others), else `func`."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    if sum(sch.get(b).name_hint == BLOCK for b in blocks) != 1:
        return func
    for b in blocks:
        sch.annotate(b, RULE_KEY, RULE if sch.get(b).name_hint == BLOCK else SKIP)
    sch.annotate(root, RULE_KEY, SKIP)
    return sch.mod["main"]


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def blocking(height: int, width: int, vectors: int, cores: int) -> dict:
    """`mr` pixels x `nr` vectors of int32 accumulators (28 of 32 zmm at most): the most dot products per
    load, mr*nr / (mr + nr), with at least 4 tiles per core where the layer has them."""
    best = None
    for nr in _divisors(vectors, MAX_VECTORS):
        for mr in _divisors(width, MAX_PIXELS // nr):
            tiles = height * (width // mr) * (vectors // nr)
            key = (mr * nr / (mr + nr) * min(1.0, tiles / (4 * cores)), nr)
            if best is None or key > best[0]:
                best = (key, mr, nr)
    return {"mr": best[1], "nr": best[2]}


def conv_u8i8(sch: s_tir.Schedule, conv, decide: dict | None = None) -> list[s_tir.Schedule]:
    shift = sch.get_producers(conv)[0]
    consumers = sch.get_consumers(conv)
    epi = None
    if consumers:  # the requantization chain, inlined into its last block
        cur = consumers[0]
        while sch.get_consumers(cur):
            nxt = sch.get_consumers(cur)[0]
            sch.compute_inline(cur)
            cur = nxt
        epi = cur
    n, h, w, c, *taps, k = sch.get_loops(conv)  # taps: the kernel's rows and columns
    width, vectors = int(sch.get(w).extent), int(sch.get(c).extent) // LANES
    w0, w1 = sch.split(w, sch.sample_perfect_tile(w, n=2, max_innermost_factor=MAX_PIXELS,
                                                  decision=decide and [width // decide["mr"], decide["mr"]]))  # fmt: skip
    c0, c1 = sch.split(c, [None, LANES])
    n0, n1 = sch.split(c0, sch.sample_perfect_tile(c0, n=2, max_innermost_factor=MAX_VECTORS,
                                                   decision=decide and [vectors // decide["nr"], decide["nr"]]))  # fmt: skip
    k0, k1 = sch.split(k, [None, DEPTH])
    sch.reorder(n, n0, h, w0, *taps, k0, w1, n1, c1, k1)
    par = sch.fuse(n, n0, h, w0)
    sch.parallel(par)
    if epi is not None:
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        _, vec = sch.split(sch.get_loops(epi)[-1], [None, LANES])
        sch.vectorize(vec)
    init = sch.decompose_reduction(conv, (taps or [k0])[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(c1, INTRIN)
    sch.unroll(w1)
    sch.unroll(n1)
    data = sch.fuse(*sch.get_loops(shift))
    width = 4 * LANES
    while int(sch.get(data).extent) % width:
        width //= 2
    outer, vec = sch.split(data, [None, width])
    sch.parallel(outer)
    sch.vectorize(vec)
    return [sch]


def default_schedule(kmod: tvm.IRModule, target: Target) -> s_tir.Schedule | None:
    """The rule's sketch with knobs from `blocking`, postprocessed; None when `kmod` is no such kernel."""
    sch = s_tir.Schedule(kmod)
    blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if str(sch.get(b).annotations.get(RULE_KEY, "")) == RULE]
    if len(blocks) != 1:
        return None
    out = [int(d) for d in sch.get(blocks[0]).writes[0].source.shape]
    cores = int(target.attrs.get("num-cores", 1) or 1)
    (sch,) = conv_u8i8(sch, blocks[0], decide=blocking(out[1], out[2], out[3] // LANES, cores))
    if (rejected := postprocess(sch, target)) is not None:
        raise RuntimeError(f"postproc {rejected} rejected the default int8 schedule")
    return sch


def _rule(sch, block):
    return conv_u8i8(sch, block)


tvm.register_global_func(f"s_tir.meta_schedule.cpu.{RULE}", _rule, override=True)


def annotate(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """`mod` with the VNNI rule on every unscheduled u8 x s8 conv kernel (idempotent)."""
    if not has_vnni(target):
        return mod
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            new = annotate_func(func, target)
            if not new.same_as(func):
                updates[gv] = new
    if not updates:
        return mod
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in updates.items():
        mod[gv] = func
    return mod
