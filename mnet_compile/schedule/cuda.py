"""CUDA targets: GPU schedules for every kernel, and GPU code compiled by nvcc at build time.

TVM 0.27 codegen only writes CUDA C. Where its CUDA runtime (libtvm_runtime_cuda.so) is loaded, the module
factory it registers ("ffi.Module.create.cuda") hands that source to `tvm_callback_cuda_compile` and keeps
the binary; where it is not (no NVIDIA driver, as on a build machine), a fallback module keeps the raw
source, and the device would need Python, nvcc or NVRTC to compile it when the model loads. `compile_scope`
makes the build machine take the first path: it loads libtvm_runtime_cuda.so (against a stub libcuda
built here when no driver exists; the stub is never called while compiling) and registers a callback that
runs nvcc once per module into a fatbin holding sm_XX SASS (cubin) plus compute_XX PTX, so the exported
.so carries compiled GPU code, and newer GPUs can JIT the PTX.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import tvm

from ..errors import MnetError
from ..resources import cache_root

NVCC_INSTALL = "install the CUDA toolkit's nvcc (e.g. pip install nvidia-cuda-nvcc, or NVIDIA's cuda-nvcc package)"
_EM_CUDA = 190  # ELF e_machine of a cubin

# The driver symbols libtvm_runtime_cuda.so links against; the stub answers CUDA_ERROR_STUB_LIBRARY (34).
_DRIVER_SYMBOLS = [
    "cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx", "cuModuleGetFunction", "cuModuleLoadData",
    "cuModuleUnload", "cuTensorMapEncodeTiled",
]  # fmt: skip
_STUB_SOURCE = (
    "/* libcuda.so.1 stand-in for building on machines without an NVIDIA driver; never runs a kernel. */\n"
    + "".join(f"int {name}() {{ return 34; }}\n" for name in _DRIVER_SYMBOLS)
    + 'int cuGetErrorName(int e, const char** s) { *s = "CUDA_ERROR_STUB_LIBRARY"; return 0; }\n'
    + 'int cuGetErrorString(int e, const char** s) { *s = "no NVIDIA driver (mnet-compile build stub)"; return 0; }\n'
)

_loaded = False


def sm_arch(target) -> str:
    """The "sm_XX" of a CUDA target (required in presets: a build machine has no GPU to ask)."""
    arch = str(tvm.target.Target(target).attrs.get("arch", ""))
    if not re.fullmatch(r"sm_\d+[af]?", arch):
        raise MnetError(f"CUDA target needs an explicit arch such as sm_87, got {arch or 'none'}")
    return arch


def schedule_gpu(fused_mod: tvm.IRModule, target, database=None, report=None):
    """GPU schedules for every fused kernel; returns (module, kernels from a tuned record, all kernels).

    Each kernel gets a tuned record or a sample of MetaSchedule's CUDA design space (multi-level tiling
    with shared-memory reuse, thread binding; checked by VerifyGPUCode); dlight's generic rules take any
    kernel with no valid sample. Samples are untuned: tune on a GPU for speed.
    """
    from tvm.s_tir import dlight as dl

    from .kernels import schedule_kernels

    target = tvm.target.Target(target)
    mod, tuned, total = schedule_kernels(fused_mod, target, database, report)
    with target:
        mod = dl.ApplyDefaultSchedule(
            dl.gpu.Matmul(),
            dl.gpu.GEMV(),
            dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(),
            dl.gpu.Fallback(),
        )(mod)
    return mod, tuned, total


def nvcc_path() -> str:
    """nvcc from PATH, $CUDA_HOME/bin or /usr/local/cuda/bin."""
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.join(home, "bin", "nvcc")
    raise MnetError(f"nvcc not found; {NVCC_INSTALL}")


def _cuda_lib_dirs() -> list[Path]:
    """Where the CUDA runtime (libcudart.so.13) may be: beside nvcc's toolkit, or the usual places."""
    dirs = []
    with contextlib.suppress(MnetError):
        home = Path(os.path.realpath(nvcc_path()))
        with contextlib.suppress(OSError):  # /usr/local/bin/nvcc may be a wrapper script
            text = home.read_text(errors="ignore") if home.stat().st_size < 4096 else ""
            m = re.search(r"(/\S+)/bin/nvcc", text)
            if m:
                home = Path(m.group(1)) / "bin" / "nvcc"
        dirs += [home.parent.parent / "lib", home.parent.parent / "lib64", home.parent.parent / "targets"]
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            dirs += [Path(home) / "lib64", Path(home) / "lib"]
    return [d for d in dirs if d.is_dir()]


def compile_kernels(code: str, arch: str, options: list[str] | None = None) -> bytes:
    """CUDA C -> an uncompressed fatbin with sm_XX SASS and compute_XX PTX, by nvcc."""
    num = arch[3:]
    with tempfile.TemporaryDirectory(prefix="mnet-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(code)
        cmd = [nvcc_path(), "--fatbin", "-O3", "--no-compress", "-gencode", f"arch=compute_{num},code=[sm_{num},compute_{num}]"]
        cmd += list(options or []) + ["-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MnetError(f"nvcc failed for {arch}: {(proc.stderr.strip() or proc.stdout.strip())[-1500:]}")
        return out.read_bytes()


def _driver_stub() -> Path:
    """A libcuda.so.1 stand-in, built once into the cache with the host C compiler."""
    stub = cache_root() / "cuda-stub" / "libcuda.so.1"
    if stub.is_file():
        return stub
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise MnetError("no C compiler to build the CUDA driver stub; install it with: apt-get install gcc")
    stub.parent.mkdir(parents=True, exist_ok=True)
    src = stub.parent / "cuda_stub.c"
    src.write_text(_STUB_SOURCE)
    tmp = stub.with_suffix(".tmp")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", str(src), "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MnetError(f"building the CUDA driver stub failed: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, stub)
    return stub


def load_cuda_runtime() -> None:
    """Load libtvm_runtime_cuda.so into this process (once), so that CUDA modules get compiled code."""
    global _loaded
    if _loaded or tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is not None:
        _loaded = True
        return
    runtime_cuda = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    if not runtime_cuda.is_file():
        raise MnetError("the installed apache-tvm has no libtvm_runtime_cuda.so")
    mode = ctypes.RTLD_GLOBAL
    try:
        ctypes.CDLL("libcuda.so.1", mode=mode)  # a real driver, when there is one
    except OSError:
        ctypes.CDLL(str(_driver_stub()), mode=mode)
    try:
        ctypes.CDLL("libcudart.so.13", mode=mode)
    except OSError:
        for d in _cuda_lib_dirs():
            hits = sorted(d.rglob("libcudart.so.13*"))
            if hits:
                ctypes.CDLL(str(hits[0]), mode=mode)
                break
        else:
            raise MnetError(
                "libcudart.so.13 (the CUDA 13 runtime) not found; "
                "install it with: pip install nvidia-cuda-runtime (or NVIDIA's cuda-cudart-13-0 package)"
            ) from None
    try:
        ctypes.CDLL(str(runtime_cuda), mode=ctypes.RTLD_LOCAL)
    except OSError as exc:
        raise MnetError(f"cannot load {runtime_cuda}: {exc}") from None
    if tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        raise MnetError(f"{runtime_cuda} loaded but registered no CUDA module factory")
    _loaded = True


@contextlib.contextmanager
def compile_scope(target):
    """Within this scope, tvm.compile for `target` embeds nvcc-compiled GPU code (fatbin: cubin + PTX)."""
    arch = sm_arch(target)
    nvcc_path()  # fail early, with the install hint
    load_cuda_runtime()
    previous = tvm.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    def callback(code, *_):
        # The target in scope when TVM calls back (a later build may be for another GPU), else ours.
        current = tvm.target.Target.current(allow_none=True)
        use = arch
        if current is not None and current.kind.name == "cuda" and re.fullmatch(r"sm_\d+[af]?", str(current.attrs.get("arch", ""))):
            use = str(current.attrs["arch"])
        return bytearray(compile_kernels(code, use))

    tvm.register_global_func("tvm_callback_cuda_compile", callback, override=True)
    try:
        with tvm.target.Target(target):
            yield
    finally:
        if previous is not None:
            tvm.register_global_func("tvm_callback_cuda_compile", previous, override=True)


def embedded_gpu_code(path: str | os.PathLike) -> dict:
    """What GPU code a file holds: {"cubin": ["sm_87", ...], "ptx": ["sm_87", ...], "cuda_source": bool}.

    Cubins are found as embedded ELF images with e_machine EM_CUDA; PTX by its ".target sm_XX" line
    (the fatbin is written uncompressed); raw CUDA C by TVM's kernel signature.
    """
    data = Path(path).read_bytes()
    cubins, i = [], 0
    while (i := data.find(b"\x7fELF", i)) >= 0:
        if i + 52 <= len(data) and struct.unpack_from("<H", data, i + 18)[0] == _EM_CUDA:
            flags = struct.unpack_from("<I", data, i + 48)[0]
            cubins.append(f"sm_{(flags >> 8) & 0xFF}")
        i += 4
    ptx = sorted({m.decode() for m in re.findall(rb"\.target\s+(sm_\d+[af]?)", data)})
    source = b'extern "C" __global__' in data
    return {"cubin": sorted(set(cubins)), "ptx": ptx, "cuda_source": source}


def has_gpu() -> bool:
    """Whether this machine can run CUDA code: a driver and at least one device."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    try:
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except AttributeError:  # the build stub
        return False
