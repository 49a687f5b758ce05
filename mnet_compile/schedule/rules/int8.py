"""The int8 dense convs as dot-product microkernels, per instruction-set family (`DOT_ISAS`):

- x86-avx512-vnni: `vpdpbusd` on zmm (u8 activations x s8 weights, 16 int32 lanes per instruction);
- x86-avx-vnni: `{vex} vpdpbusd` on ymm (Alder Lake and later without AVX-512; 8 lanes);
- x86-avx2: s8 x s8 sign-extended to int16, `vpmaddwd` + `vphaddd` (exact, unlike `vpmaddubsw`, which
  saturates u8 x s8 pair sums);
- arm-sdot: `sdot` (ARMv8.2 dot product: Cortex-A76/A78, s8 x s8, 4 lanes);
- arm-neon: widening `smull` + `saddlp` + `addp` (Cortex-A72/A53, no dot product; TVM's NEON intrinsic).

The integer graph (frontends/integer.py, `conv_dot_te`) gives such a kernel three blocks: the data block
(`data_u8`: the int8 input + 128, or `data_i8`: as it is; zero-point padded, channels padded to 4),
`conv2d_nhwc_<form>` (int32 sums over weights packed as (Cout/16, taps*Cin/4, 16, 4)) and the
requantization epilogue. The rule: a register block of `mr` pixels of a row x `nr` 16-channel vectors,
accumulated over the taps and Cin, each 16-channel vector as 16/lanes instructions over 4 input channels
(the lanes x 4 step is tensorized), parallel over (row, pixel block, channel panel) tiles (channel panel
first where the weights outweigh the input: conv.tile_order); the epilogue per tile, vectorized; the data
pass parallel over rows (`_data_pass`). On AMX CPUs the 1x1 convs take s8 x s8 AMX tiles instead (`conv_amx`, rules/amx.py). The knobs are samples (tunable); `default_schedule`
fixes them from the shape and the family's registers.

TVM's own `dot_16x4_vnni` intrinsic calls llvm.x86.avx512.vpdpbusd.512 with i32 vectors, which the LLVM
of apache-tvm 0.27 rejects (it takes i8 vectors now); this file registers the x86 descriptions with
implementations that pass i8 vectors. TVM's ARM ones (`dot_4x4_i8i8s32_sdot`, `_neon`) work as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target, codegen

from ...graph.passes import with_functions
from .amx import has_amx, intrinsic, with_permission
from .annotate import RULE_KEY, SKIP
from .conv import tile_order
from .default import postprocess
from .isa import isa_for

LANES, DEPTH = 16, 4  # the packed weight block (frontends.integer.pack_weight)
MAX_VECTORS = 4  # 16-channel vectors of a register block
TILE_PIXELS = 128  # pixels of a row a parallel tile may span (its register blocks in turn, then their epilogue)
AMX_RULE = "mnet.conv_i8i8.x86-amx"  # 1x1 convs on AMX tiles (rules/amx.py), s8 x s8; the others keep VNNI
AMX_BLOCK = "conv2d_nhwc_i8i8"


@dataclass(frozen=True)
class DotIsa:
    name: str  # the family; the rule is mnet.conv_<form>.<name>
    form: str  # operands: "u8i8" (int8 input + 128 as uint8) or "i8i8"
    lanes: int  # int32 lanes of one instruction: the tensorized step is lanes x 4
    accumulators: int  # vector registers a register block may hold
    intrin: str
    tile_pixels: int = TILE_PIXELS  # default pixels of a row per parallel tile (1: one register block)

    @property
    def rule(self) -> str:
        return f"mnet.conv_{self.form}.{self.name}"

    @property
    def block(self) -> str:
        return f"conv2d_nhwc_{self.form}"


def _desc(lanes: int, a_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vpdpbusd(lanes: int):
    """C += vpdpbusd(A broadcast, B) on `lanes` int32 lanes (zmm: 16; ymm, AVX-VNNI or AVX-512 VL: 8)."""
    width = "512" if lanes == 16 else "256"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes), dtype=f"int8x{lanes * 4}")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{width}"),
                C.vload([0], dtype=f"int32x{lanes}"),
                a,
                B.vload([0, 0], dtype=f"int8x{lanes * 4}"),
                dtype=f"int32x{lanes}",
            )

    return impl


@T.prim_func(s_tir=True)
def _avx2_8x4(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    """C[i] += sum_k A[k] * B[i, k], exactly: B's rows (4 bytes each) reordered 0 1 4 5 2 3 6 7 (vpermd),
    each half sign-extended to 16 int16 (vpmovsxbw), multiplied by A's 4 values and pair-summed (vpmaddwd:
    rows 0 1 4 5 and 2 3 6 7 as 2 halves each), the halves summed (vphaddd, per 128-bit lane: 0 1 2 3 | 4 5 6 7)."""
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a = T.cast(T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"), "int16x16")
        rows = T.Shuffle([T.reinterpret(B.vload([0, 0], dtype="int8x32"), dtype="int32x8")], [0, 1, 4, 5, 2, 3, 6, 7])
        b = T.reinterpret(rows, dtype="int8x32")
        low = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), a,
                                      T.cast(T.vectorlow(b, dtype="int8x16"), "int16x16"), dtype="int32x8")  # fmt: skip
        high = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), a,
                                       T.cast(T.vectorhigh(b, dtype="int8x16"), "int16x16"), dtype="int32x8")  # fmt: skip
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.phadd.d"), low, high, dtype="int32x8"
        )


TensorIntrin.register("mnet_dot_16x4_u8i8i32_vnni", _desc(16, "uint8"), _vpdpbusd(16), override=True)
TensorIntrin.register("mnet_dot_8x4_u8i8i32_avxvnni", _desc(8, "uint8"), _vpdpbusd(8), override=True)
TensorIntrin.register("mnet_dot_8x4_i8i8i32_avx2", _desc(8, "int8"), _avx2_8x4, override=True)

DOT_ISAS = {
    isa.name: isa
    for isa in (
        DotIsa("x86-avx512-vnni", "u8i8", 16, 28, "mnet_dot_16x4_u8i8i32_vnni", tile_pixels=1),
        DotIsa("x86-avx-vnni", "u8i8", 8, 12, "mnet_dot_8x4_u8i8i32_avxvnni"),
        DotIsa("x86-avx2", "i8i8", 8, 10, "mnet_dot_8x4_i8i8i32_avx2"),
        DotIsa("arm-sdot", "i8i8", 4, 24, "dot_4x4_i8i8s32_sdot"),
        DotIsa("arm-neon", "i8i8", 4, 20, "dot_4x4_i8i8s32_neon"),
    )
}
_FEATURES = [("avx512vnni", "x86-avx512-vnni"), ("avxvnni", "x86-avx-vnni"), ("avx2", "x86-avx2")]


def dot_isa(target: Target) -> DotIsa | None:
    """The target's int8 dot-product family (AArch64: sdot with +dotprod, else widening NEON), or None."""
    if target.kind.name != "llvm":
        return None
    try:
        if isa_for(target).name == "arm-neon":
            return DOT_ISAS["arm-sdot" if codegen.llvm_cpu_has_features("dotprod", target) else "arm-neon"]
        return next((DOT_ISAS[name] for feature, name in _FEATURES if codegen.llvm_cpu_has_features(feature, target)), None)
    except Exception:  # a target LLVM cannot describe
        return None


def pointwise_form(target: Target) -> str | None:
    """The 1x1 convs' operand form where it differs from `dot_form`: s8 x s8 on AMX tiles (`tdpbssd` reads the
    int8 input as it is, so those kernels have no data pass), else None."""
    isa = dot_isa(target)
    return "i8i8" if isa is not None and isa.name == "x86-avx512-vnni" and has_amx(target) else None


def dot_form(target: Target) -> str | None:
    """The operand form the integer graph gives the dense convs for `target` (frontends.integer.to_relax)."""
    isa = dot_isa(target)
    return isa.form if isa else None


def annotate_func(func, isa: DotIsa, tiles: bool = False):
    """`func` with the family's rule on its dot-product conv block (and SKIP on the others), else `func`;
    with `tiles`, an s8 x s8 1x1 conv (`pointwise_form`) gets the AMX rule and the permission block (rules/amx.py)."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    names = [sch.get(b).name_hint for b in blocks]
    if tiles and names.count(AMX_BLOCK) == 1 and _amx_fits(sch.get(blocks[names.index(AMX_BLOCK)])):
        rule, conv = AMX_RULE, AMX_BLOCK
    elif names.count(isa.block) == 1:
        rule, conv = isa.rule, isa.block
    else:
        return func
    for b, name in zip(blocks, names):
        sch.annotate(b, RULE_KEY, rule if name == conv else SKIP)
    sch.annotate(root, RULE_KEY, SKIP)
    func = sch.mod["main"]
    return with_permission(func, {RULE_KEY: SKIP}) if rule == AMX_RULE else func


def _amx_fits(conv) -> bool:
    """A 1x1 conv of stride 1 with 16-channel panels (the tiles' columns)."""
    *_, taps_y, taps_x, _ = [int(iv.dom.extent) for iv in conv.iter_vars]
    out, data = conv.writes[0].source.shape, conv.reads[0].source.shape
    return (taps_y, taps_x) == (1, 1) and int(out[3]) % LANES == 0 and [int(d) for d in out[1:3]] == [int(d) for d in data[1:3]]


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def blocking(height: int, width: int, vectors: int, cores: int, isa: DotIsa) -> dict:
    """`mr` pixels x `nr` 16-channel vectors of int32 accumulators (16/lanes registers per vector, the
    family's accumulator registers at most): the most instructions per load, r*mr*nr / (mr + r*nr), with
    at least 4 tiles per core where the layer has them. A parallel tile takes `tile` such blocks of a row
    (the family's `tile_pixels` at most), so the loop and epilogue overheads of small blocks are shared:
    on AVX2 (0.25-128 and 1.0-224, one thread) whole rows beat one block per tile by 1.2-1.8x; zmm VNNI's
    large blocks showed no difference beyond this machine's noise and keep one block per tile."""
    per_vector = LANES // isa.lanes
    best = None
    for nr in _divisors(vectors, min(MAX_VECTORS, isa.accumulators // per_vector)):
        for mr in _divisors(width, isa.accumulators // (nr * per_vector)):
            tiles = height * (width // mr) * (vectors // nr)
            score = per_vector * mr * nr / (mr + per_vector * nr) * min(1.0, tiles / (4 * cores))
            if best is None or (score, nr) > best[0]:
                best = ((score, nr), mr, nr)
    mr, nr = best[1:]
    return {"mr": mr, "nr": nr, "tile": max(_divisors(width // mr, max(1, isa.tile_pixels // mr)))}


def _epilogue(sch: s_tir.Schedule, conv):
    """The requantization chain after `conv`, inlined into its last block (None if there is none)."""
    consumers = sch.get_consumers(conv)
    if not consumers:
        return None
    cur = consumers[0]
    while sch.get_consumers(cur):
        nxt = sch.get_consumers(cur)[0]
        sch.compute_inline(cur)
        cur = nxt
    return cur


def _tile_epilogue(sch: s_tir.Schedule, epi, par) -> None:
    """The epilogue computed per parallel tile, vectorized over 16 channels."""
    if epi is not None:
        sch.reverse_compute_at(epi, par, preserve_unit_loops=True)
        _, vec = sch.split(sch.get_loops(epi)[-1], [None, LANES])
        sch.vectorize(vec)


def _data_pass(sch: s_tir.Schedule, data) -> None:
    """Parallel over rows. An int8 input: each row's pixels x channels one vectorized loop. The float model
    input (the stem quantizes it as it reads it, from 3 planes into 4-channel pixels): channels unrolled, the
    pixel loop left to LLVM's vectorizer; TVM's vectorized flat loop became scalar per-pixel code there
    (stem kernel 1.5-1.8x as long at 224, alternated runs)."""
    b, y, *row = sch.get_loops(data)
    sch.parallel(sch.fuse(b, y))
    if any(str(region.source.dtype).startswith("float") for region in sch.get(data).reads):
        sch.unroll(row[-1])
        return
    fused = sch.fuse(*row)
    chunk = 4 * LANES
    while int(sch.get(fused).extent) % chunk:
        chunk //= 2
    sch.vectorize(sch.split(fused, [None, chunk])[1])


def conv_dot(sch: s_tir.Schedule, conv, isa: DotIsa, decide: dict | None = None) -> list[s_tir.Schedule]:
    data = sch.get_producers(conv)[0]
    epi = _epilogue(sch, conv)
    n, h, w, c, *taps, k = sch.get_loops(conv)  # taps: the kernel's rows and columns
    width, vectors = int(sch.get(w).extent), int(sch.get(c).extent) // LANES
    w0, w1 = sch.split(w, sch.sample_perfect_tile(w, n=2, max_innermost_factor=isa.accumulators * isa.lanes // LANES,
                                                  decision=decide and [width // decide["mr"], decide["mr"]]))  # fmt: skip
    c0, c1 = sch.split(c, [None, LANES])
    n0, n1 = sch.split(c0, sch.sample_perfect_tile(c0, n=2, max_innermost_factor=MAX_VECTORS,
                                                   decision=decide and [vectors // decide["nr"], decide["nr"]]))  # fmt: skip
    steps = sch.split(c1, [LANES // isa.lanes, isa.lanes]) if isa.lanes < LANES else [c1]  # instructions per vector
    k0, k1 = sch.split(k, [None, DEPTH])
    blocks = width // (decide["mr"] if decide else 1)
    wa, wb = sch.split(w0, sch.sample_perfect_tile(w0, n=2, max_innermost_factor=TILE_PIXELS,
                                                   decision=decide and [blocks // decide["tile"], decide["tile"]]))  # fmt: skip
    # parallel tiles split rows between the cores, as the fp32 rules (conv.tile_order), or channel panels
    outer = [n, h, wa, n0] if tile_order(int(sch.get(h).extent), width, vectors * LANES) == "row" else [n, n0, h, wa]
    sch.reorder(*outer, wb, *taps, k0, w1, n1, *steps, k1)
    par = sch.fuse(*outer)
    sch.parallel(par)
    _tile_epilogue(sch, epi, par)
    init = sch.decompose_reduction(conv, (taps or [k0])[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(steps[-1], isa.intrin)
    for loop in (w1, n1, *steps[:-1]):
        sch.unroll(loop)
    _data_pass(sch, data)
    return [sch]


def amx_blocking(height: int, width: int, panels: int, cores: int) -> dict:
    """`rows` of the image x `nt` 16-channel panels per parallel tile (one intrinsic call): 2 panels (32
    channels) where the layer has them, and the most rows with at most 256 pixels that still give every core
    its own rows. Rows outermost. Swept
    on 1.0-224's 1x1 convs (2 threads; rows x 1, 2 or 4 panels, one run): the best or within 7% of it but
    at 7x7 (15% and 70% slower there, the best blocking differing between the two 7x7 layers); with 4 panels per
    tile the epilogue's per-channel vectors spilled."""
    nt = max(_divisors(panels, 2))
    fits = _divisors(height, max(1, 256 // width))
    return {"rows": max([q for q in fits if height // q >= cores] or [1]), "nt": nt}


def conv_amx(sch: s_tir.Schedule, conv, decide: dict | None = None) -> list[s_tir.Schedule]:
    """The 1x1 conv as AMX tile GEMMs (rules/amx.py) on its int8 input as it is (no data pass): parallel over
    (row block, channel block) tiles, each one intrinsic call (rows x width pixels x nt panels x K) followed by
    its epilogue. No knobs yet (the
    intrinsic is made for its block sizes): tuning measures `amx_blocking`'s choice for the current target."""
    sch.compute_inline(sch.get_producers(conv)[0])  # the data block of a 1x1 s8 conv: its input as it is
    epi = _epilogue(sch, conv)
    n, h, w, c, ry, rx, k = sch.get_loops(conv)
    height, width, channels, depth = (int(sch.get(loop).extent) for loop in (h, w, c, k))
    if decide is None:
        target = Target.current(allow_none=True)
        cores = int(target.attrs.get("num-cores", 1) or 1) if target is not None else 1
        decide = amx_blocking(height, width, channels // LANES, cores)
    h0, h1 = sch.split(h, [None, decide["rows"]])
    c0, c1 = sch.split(c, [None, LANES * decide["nt"]])
    sch.reorder(n, h0, c0, ry, rx, h1, w, c1, k)
    par = sch.fuse(n, h0, c0)
    sch.parallel(par)
    _tile_epilogue(sch, epi, par)
    sch.tensorize(h1 if decide["rows"] > 1 else w, intrinsic(decide["rows"], width, decide["nt"], depth))
    return [sch]


def default_schedule(kmod: tvm.IRModule, target: Target) -> s_tir.Schedule | None:
    """The rule's sketch with knobs from `blocking` (`amx_blocking`), postprocessed; None when `kmod` is no
    such kernel."""
    sch = s_tir.Schedule(kmod)
    rules = {isa.rule: isa for isa in DOT_ISAS.values()} | {AMX_RULE: None}
    blocks = [(b, str(sch.get(b).annotations.get(RULE_KEY, ""))) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    blocks = [(b, rule) for b, rule in blocks if rule in rules]
    if len(blocks) != 1:
        return None
    (block, rule), = blocks
    out = [int(d) for d in sch.get(block).writes[0].source.shape]
    cores = int(target.attrs.get("num-cores", 1) or 1)
    if rule == AMX_RULE:
        (sch,) = conv_amx(sch, block, decide=amx_blocking(out[1], out[2], out[3] // LANES, cores))
    else:
        (sch,) = conv_dot(sch, block, rules[rule], decide=blocking(out[1], out[2], out[3] // LANES, cores, rules[rule]))
    if (rejected := postprocess(sch, target)) is not None:
        raise RuntimeError(f"postproc {rejected} rejected the default int8 schedule")
    return sch


def _register() -> None:
    for isa in DOT_ISAS.values():
        def rule(sch, block, _isa=isa):
            return conv_dot(sch, block, _isa)

        for key in ("cpu", "arm_cpu"):
            tvm.register_global_func(f"s_tir.meta_schedule.{key}.{isa.rule}", rule, override=True)
    tvm.register_global_func(f"s_tir.meta_schedule.cpu.{AMX_RULE}", conv_amx, override=True)


_register()


def annotate(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """`mod` with the target's dot-product rule on every unscheduled dot-product conv kernel (idempotent)."""
    isa = dot_isa(target)
    if isa is None:
        return mod
    tiles = pointwise_form(target) is not None  # the 1x1 convs were given the AMX form
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            new = annotate_func(func, isa, tiles)
            if not new.same_as(func):
                updates[gv] = new
    return with_functions(mod, updates)
