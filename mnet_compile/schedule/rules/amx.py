"""Intel AMX for the int8 1x1 convs (Sapphire Rapids and later: `amx-int8`): the tile tensor intrinsic and
the permission block every AMX kernel starts with.

A 1x1 conv is a GEMM over pixels: `Q` rows of `W` pixels x `NT` 16-channel panels x `K` input channels.
The intrinsic computes it tile by tile: `M` pixels (a divisor of W, at most 16) x 16 channels of int32 sums
per tile register, `tdpbssd` (s8 activations as they are x s8 weights, 16 x 16 x 64 per instruction; no
+128 pass as for VNNI's u8 x s8) over K in chunks
of at most 64 channels. Registers: tmm0-3 the NT (at most 4) sum tiles (zeroed: the intrinsic is the
reduction with its init), tmm4/5 the activation tile of alternate chunks, tmm6/7 the weight tile of
alternate panels (tiles are not renamed, so a load into the register the previous instruction reads would
wait for it). The
weights are already in AMX's layout: the VNNI packing (Cout/16, K/4, 16, 4) gives each panel's chunk as
K/4 rows of 64 bytes. XNNPACK's 16x64c4 AMX kernel (what LiteRT runs on such CPUs) tiles the same way
(16 pixels x 4 panels; `int8.amx_blocking` takes 2 panels, whose epilogue did not spill).

Linux lends the tile registers to a process only after `arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`;
without it the first tile instruction is SIGILL. So every AMX kernel begins with that request (once per
call, process-wide, about a syscall's cost) and raises a clear error where it is refused (a CPU without
AMX, Linux before 5.16): any loader of the artifact works unchanged (Python, C++ runner, the tuner's).
"""

from __future__ import annotations

import re

from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target, codegen

SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18
TILE_ROWS, TILE_BYTES = 16, 64
REFUSED = "this artifact uses Intel AMX tiles (int8 1x1 convs), which this CPU or kernel does not allow (Linux >= 5.16 on Sapphire Rapids or later)"


def has_amx(target: Target) -> bool:
    """Whether LLVM will emit AMX int8 instructions for `target` (x86 with amx-int8)."""
    try:
        return target.kind.name == "llvm" and bool(codegen.llvm_cpu_has_features("amx-int8", target))
    except Exception:  # a target LLVM cannot describe
        return False


def chunk(k: int) -> int:
    """Input channels per tdpbssd: the largest multiple of 4 that divides K, at most 64 (one tile row)."""
    return max(d for d in range(4, min(k, TILE_BYTES) + 1, 4) if k % d == 0)


def tile_pixels(width: int) -> int:
    """Pixels per tile: the largest divisor of the row width, at most 16 (tiles never span two rows)."""
    return max(d for d in range(1, TILE_ROWS + 1) if width % d == 0)


def intrinsic(rows: int, width: int, panels: int, k: int) -> str:
    """Register (once) and name the intrinsic C[q, p, n] (+)= sum_k A[q, p, k] * B[n // 16, k // 4, n % 16, k % 4]
    over `rows` x `width` pixels, `panels` x 16 channels and K; C's init is part of it."""
    name = f"mnet_amx_{rows}x{width}x{16 * panels}x{k}"
    if name not in _REGISTERED:
        TensorIntrin.register(name, _desc(rows, width, panels, k), _impl(rows, width, panels, k))
        _REGISTERED.add(name)
    return name


_REGISTERED: set[str] = set()
_NAME = re.compile(r"mnet_amx_(\d+)x(\d+)x(\d+)x(\d+)")


def register_named(text: str) -> None:
    """Register the intrinsics that tuning records name (MetaSchedule parses their traces as it loads
    them, and fails on an intrinsic not registered)."""
    for rows, width, channels, k in set(_NAME.findall(text)):
        intrinsic(int(rows), int(width), int(channels) // 16, int(k))


def _desc(Q: int, W: int, NT: int, K: int):
    N = 16 * NT

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (Q, W, K), "int8", offset_factor=1)
        B = T.match_buffer(b, (NT, K // 4, 16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (Q, W, N), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:Q, 0:W, 0:K], B[0:NT, 0:K // 4, 0:16, 0:4])
            T.writes(C[0:Q, 0:W, 0:N])
            if Q > 1:  # a unit row loop is no loop in the scheduled kernel, so none here either
                for q, i, j, k in T.grid(Q, W, N, K):
                    with T.sblock("update"):
                        vq, vi, vj, vk = T.axis.remap("SSSR", [q, i, j, k])
                        T.reads(C[vq, vi, vj], A[vq, vi, vk], B[vj // 16, vk // 4, vj % 16, vk % 4])
                        T.writes(C[vq, vi, vj])
                        with T.init():
                            C[vq, vi, vj] = 0
                        C[vq, vi, vj] = C[vq, vi, vj] + T.Cast("int32", A[vq, vi, vk]) * T.Cast("int32", B[vj // 16, vk // 4, vj % 16, vk % 4])
            else:
                for i, j, k in T.grid(W, N, K):
                    with T.sblock("update"):
                        vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                        T.reads(C[0, vi, vj], A[0, vi, vk], B[vj // 16, vk // 4, vj % 16, vk % 4])
                        T.writes(C[0, vi, vj])
                        with T.init():
                            C[0, vi, vj] = 0
                        C[0, vi, vj] = C[0, vi, vj] + T.Cast("int32", A[0, vi, vk]) * T.Cast("int32", B[vj // 16, vk // 4, vj % 16, vk % 4])

    return desc


def _impl(Q: int, W: int, NT: int, K: int):
    N, M, KC = 16 * NT, tile_pixels(W), chunk(K)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa0, sa, sc0, sc = T.int64(), T.int64(), T.int64(), T.int64()
        A = T.match_buffer(a, (Q, W, K), "int8", offset_factor=1, strides=[sa0, sa, 1])
        B = T.match_buffer(b, (NT, K // 4, 16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (Q, W, N), "int32", offset_factor=1, strides=[sc0, sc, 1])
        with T.sblock("root"):
            T.reads(A[0:Q, 0:W, 0:K], B[0:NT, 0:K // 4, 0:16, 0:4])
            T.writes(C[0:Q, 0:W, 0:N])
            cfg = T.alloc_buffer((64,), "uint8", scope="local")  # palette 1; per tile: bytes per row, rows
            for i in range(64):
                cfg[i] = T.uint8(0)
            cfg[0] = T.uint8(1)
            for t in range(NT):
                cfg[16 + 2 * t] = T.uint8(64)
                cfg[48 + t] = T.uint8(M)
            for t in range(2):
                cfg[24 + 2 * t] = T.uint8(KC)
                cfg[52 + t] = T.uint8(M)
                cfg[28 + 2 * t] = T.uint8(64)
                cfg[54 + t] = T.uint8(KC // 4)
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0])))
            for q, m in T.grid(Q, W // M):
                for j in T.unroll(NT):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.Cast("uint8", j)))
                for kc in T.unroll(K // KC):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("uint8", 4 + kc % 2),
                                                  T.address_of(A[q, m * M, kc * KC]), T.Cast("int64", sa)))  # fmt: skip
                    for j in T.unroll(NT):
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("uint8", 6 + j % 2),
                                                      T.address_of(B[j, kc * (KC // 4), 0, 0]), T.int64(64)))  # fmt: skip
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tdpbssd", T.Cast("uint8", j),
                                                      T.Cast("uint8", 4 + kc % 2), T.Cast("uint8", 6 + j % 2)))  # fmt: skip
                for j in T.unroll(NT):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.Cast("uint8", j),
                                                  T.address_of(C[q, m * M, j * 16]), T.Cast("int64", sc * 4)))  # fmt: skip
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilerelease"))

    return impl


@T.prim_func(s_tir=True)
def _permission() -> None:
    with T.sblock("amx_permission"):
        assert T.call_extern("int64", "syscall", T.int64(SYS_ARCH_PRCTL), T.int64(ARCH_REQ_XCOMP_PERM), T.int64(XFEATURE_XTILEDATA)) == T.int64(0), REFUSED


def with_permission(func: tirx.PrimFunc, annotations: dict) -> tirx.PrimFunc:
    """`func` whose root block first requests the tile registers (a block with `annotations`), raising
    REFUSED where the kernel refuses."""
    request = _permission.body
    while not isinstance(request, s_tir.SBlockRealize) or request.block.name_hint != "amx_permission":
        request = request.block.body if isinstance(request, s_tir.SBlockRealize) else request.body
    block = request.block
    request = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], block.name_hint, block.body, annotations=annotations))
    root = func.body.block
    return func.with_body(s_tir.SBlockRealize([], True, s_tir.SBlock(
        root.iter_vars, root.reads, root.writes, root.name_hint, tirx.SeqStmt([request, root.body]), root.init,
        root.alloc_buffers, root.match_buffers, root.annotations)))  # fmt: skip
