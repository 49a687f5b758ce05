"""Device kit: another architecture's TVM runtime, the C++ runner (device/app) cross-compiled, qemu to run it.

The runtime comes from the same apache-tvm / apache-tvm-ffi wheels as the compiler, for the device's
architecture (`pip download`, at build or CI time only, never when a model runs). A kit folder holds
lib/ (libtvm_runtime.so, libtvm_runtime_cuda.so, libtvm_ffi.so) and include/ (the tvm_ffi headers,
dlpack included): all the C++ runner needs. Without a board, `run_app` runs AArch64 code here under
qemu-user with the preset's CPU model, which proves correctness and the instruction set, not speed.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MnetError
from ..resources import TVM_DISTRIBUTIONS, cache_root, data_dir, tvm_versions

# Compiler and runtime must be the same release: the kit takes the versions installed here.
TVM_DIST, FFI_DIST = TVM_DISTRIBUTIONS
PYTHON_VERSION = "3.11"  # which CPython ABI of the (ABI-specific) apache-tvm-ffi wheel to fetch

WHEEL_PLATFORM = {"aarch64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
GXX = {"aarch64": "aarch64-linux-gnu-g++", "armv7l": "arm-linux-gnueabihf-g++", "x86_64": "x86_64-linux-gnu-g++"}
GXX_INSTALL = {
    "aarch64": "apt-get install g++-aarch64-linux-gnu",
    "armv7l": "apt-get install g++-arm-linux-gnueabihf",
    "x86_64": "apt-get install g++",
}
QEMU = {"aarch64": "qemu-aarch64-static", "armv7l": "qemu-arm-static"}
QEMU_INSTALL = "apt-get install qemu-user-static"
QEMU_SYSROOT = {"aarch64": "/usr/aarch64-linux-gnu", "armv7l": "/usr/arm-linux-gnueabihf"}  # from the g++ package

# What a kit keeps from the wheels: (wheel distribution, member prefix in the wheel, folder in the kit).
_RUNTIME_LIBS = ("tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_cuda.so", "tvm_ffi/lib/libtvm_ffi.so")
_HEADERS = "tvm_ffi/include/"
APP_NAME = "mnet-run"


@dataclass(frozen=True)
class RuntimeKit:
    """The TVM runtime of one architecture: shared libraries and the tvm_ffi headers."""

    arch: str
    lib_dirs: tuple[Path, ...]
    include_dir: Path
    versions: dict = field(default_factory=dict, compare=False)

    @property
    def libraries(self) -> list[Path]:
        """libtvm_runtime.so, libtvm_runtime_cuda.so (if present) and libtvm_ffi.so."""
        found = []
        for name in ("libtvm_runtime.so", "libtvm_runtime_cuda.so", "libtvm_ffi.so"):
            for d in self.lib_dirs:
                if (d / name).is_file():
                    found.append(d / name)
                    break
        return found


def host_arch() -> str:
    return platform.machine()


def app_source_dir() -> Path:
    """device/app: main.cc and its build files."""
    return data_dir("device") / "app"


def host_runtime() -> RuntimeKit:
    """This machine's own runtime: the libraries and headers of the installed tvm and tvm_ffi packages."""
    import importlib.util

    def package_dir(name):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MnetError(f"the Python package {name} is not installed")
        return Path(list(spec.submodule_search_locations)[0])

    tvm_dir, ffi_dir = package_dir("tvm"), package_dir("tvm_ffi")
    return RuntimeKit(host_arch(), (tvm_dir / "lib", ffi_dir / "lib"), ffi_dir / "include", tvm_versions())


def fetch_runtime(arch: str = "aarch64", cache_dir: str | os.PathLike | None = None, versions: dict | None = None) -> RuntimeKit:
    """The TVM runtime for `arch` from PyPI's manylinux wheels, kept in <cache>/<arch>/tvm-<version>.

    Downloads (pip download, ~100 MB once) only when the cache lacks that version. For the host's own
    architecture without a cache_dir, the installed packages are used and nothing is downloaded.
    """
    if arch not in WHEEL_PLATFORM:
        raise MnetError(
            f"no TVM runtime wheel exists for {arch}; wheels exist for {', '.join(sorted(WHEEL_PLATFORM))} "
            f"(build libtvm_runtime from source for {arch})"
        )
    versions = dict(versions or tvm_versions())
    if arch == host_arch() and cache_dir is None and versions == tvm_versions():
        return host_runtime()
    root = Path(cache_dir) if cache_dir else cache_root() / arch
    kit_dir = root / f"tvm-{versions[TVM_DIST]}-ffi-{versions[FFI_DIST]}"
    kit = RuntimeKit(arch, (kit_dir / "lib",), kit_dir / "include", versions)
    if (kit_dir / "COMPLETE").is_file():
        return kit
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        wheels = Path(tmp) / "wheels"
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--platform", WHEEL_PLATFORM[arch], "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--dest", str(wheels),
            f"{TVM_DIST}=={versions[TVM_DIST]}", f"{FFI_DIST}=={versions[FFI_DIST]}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise MnetError(f"cannot download the {arch} TVM runtime wheels ({' '.join(cmd[2:])}): {last}")
        staging = Path(tmp) / "kit"
        (staging / "lib").mkdir(parents=True)
        (staging / "include").mkdir()
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if name in _RUNTIME_LIBS:
                        dest = staging / "lib" / Path(name).name
                    elif name.startswith(_HEADERS) and not name.endswith("/"):
                        dest = staging / "include" / name[len(_HEADERS):]
                    else:
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    dest.chmod(0o755 if dest.suffix == ".so" else 0o644)
        missing = [p for p in ("lib/libtvm_runtime.so", "lib/libtvm_ffi.so", "include/tvm/ffi/function.h") if not (staging / p).is_file()]
        if missing:
            raise MnetError(f"the {arch} TVM wheels lack {', '.join(missing)}")
        (staging / "COMPLETE").write_text(" ".join(f"{k}=={v}" for k, v in versions.items()) + "\n")
        shutil.rmtree(kit_dir, ignore_errors=True)
        staging.rename(kit_dir)
    return kit


def require_tool(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MnetError(f"{tool} not found; install it with: {install}")
    return path


def build_app(
    kit: RuntimeKit,
    out: str | os.PathLike | None = None,
    cc: str | None = None,
    sysroot: str | None = None,
    static_cxx: bool = False,
) -> Path:
    """Compile device/app/main.cc into the mnet-run binary for kit.arch (cross-compiling when needed).

    Links libtvm_ffi and libtvm_runtime (rpath $ORIGIN and $ORIGIN/../lib, so a bundle folder works).
    Debian 12's cross g++ links against glibc 2.36, so the binary needs glibc >= 2.34 and libstdc++ of
    GCC 12 (Pi OS bookworm, Ubuntu 22.04 / JetPack 6); for an older device OS pass its `sysroot`, or
    build on the device with device/app/Makefile. static_cxx raises the glibc floor to 2.36 (arc4random).
    Rebuilt only when main.cc or the kit is newer than the binary.
    """
    cc = cc or (GXX[kit.arch] if kit.arch != host_arch() else os.environ.get("CXX", "g++"))
    compiler = require_tool(cc, GXX_INSTALL.get(kit.arch, "a C++ compiler for " + kit.arch))
    source = app_source_dir() / "main.cc"
    target = Path(out) if out else cache_root() / kit.arch / "bin" / APP_NAME
    inputs = [source, source.with_name("trust.h"), *kit.libraries]
    if target.is_file() and all(target.stat().st_mtime >= p.stat().st_mtime for p in inputs):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-std=c++17", "-O2", "-I", str(kit.include_dir), str(source), "-o", str(target) + ".tmp"]
    for d in kit.lib_dirs:
        cmd += ["-L", str(d)]
    cmd += ["-Wl,--no-as-needed", "-ltvm_ffi", "-ltvm_runtime", "-Wl,--as-needed", "-ldl", "-lpthread"]
    cmd += ["-Wl,-rpath,$ORIGIN:$ORIGIN/../lib"]
    if sysroot:
        cmd += [f"--sysroot={sysroot}"]
    if static_cxx:
        cmd += ["-static-libstdc++", "-static-libgcc"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MnetError(f"building {APP_NAME} for {kit.arch} failed: {proc.stderr.strip()[-2000:]}")
    os.replace(str(target) + ".tmp", target)
    return target


def emulator(arch: str, cpu: str | None = None) -> list[str]:
    """The command prefix that runs an `arch` Linux binary here: [] natively, else qemu-user."""
    if arch == host_arch():
        return []
    if arch not in QEMU:
        raise MnetError(f"cannot run {arch} binaries on this {host_arch()} machine")
    qemu = require_tool(QEMU[arch], QEMU_INSTALL)
    sysroot = QEMU_SYSROOT[arch]
    if not os.path.isdir(sysroot):
        raise MnetError(f"{arch} C library not found in {sysroot}; install it with: {GXX_INSTALL[arch]}")
    return [qemu] + (["-cpu", cpu] if cpu else []) + ["-L", sysroot]


@dataclass
class AppRun:
    """One mnet-run invocation: its output and what it reported."""

    command: list
    stdout: str
    logits: object | None  # numpy array, when an output file was asked for
    top: list  # [(class, logit), ...] best first
    load_ms: float
    run_ms: float  # median
    returncode: int = 0


def _parse_app_output(text: str):
    top, load_ms, run_ms = [], float("nan"), float("nan")
    for line in text.splitlines():
        if re.match(r"top\d+:", line):
            top = [(int(i), float(v)) for i, v in (p.split(":") for p in line.split()[1:])]
        elif line.startswith("load_ms:"):
            load_ms = float(line.split()[1])
        elif line.startswith("run_ms:"):
            run_ms = float(line.split()[2])
    return top, load_ms, run_ms


def run_app(
    app: str | os.PathLike,
    lib: str | os.PathLike,
    input=None,
    *,
    kit: RuntimeKit,
    qemu_cpu: str | None = None,
    shape: tuple | None = None,
    device: str = "cpu",
    repeat: int = 1,
    warmup: int = 0,
    topk: int = 5,
    timeout: float = 900,
) -> AppRun:
    """Run mnet-run on a model .so (under qemu when kit.arch is not this machine's) and read its logits.

    `input` is a numpy array (written to a temporary .npy), a .npy / raw float32 .bin path, or None (zeros
    of `shape`). Raises MnetError with the runner's message when it fails.
    """
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="mnet-run-") as tmp:
        cmd = emulator(kit.arch, qemu_cpu) + [str(Path(app).resolve()), str(Path(lib).resolve())]
        if input is not None:
            if not isinstance(input, (str, os.PathLike)):
                path = Path(tmp) / "input.npy"
                np.save(path, np.ascontiguousarray(input, dtype="float32"))
                input = path
            cmd += ["--input", str(input)]
        if shape is not None:
            cmd += ["--shape", ",".join(str(int(d)) for d in shape)]
        out = Path(tmp) / "logits.npy"
        cmd += ["--output", str(out), "--device", device, "--repeat", str(repeat), "--warmup", str(warmup), "--topk", str(topk)]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(d) for d in kit.lib_dirs] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise MnetError(f"{APP_NAME} did not finish in {timeout:.0f} s: {' '.join(cmd)}") from None
        if proc.returncode != 0 or "mnet-run: ok" not in proc.stdout:
            message = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-1]
            raise MnetError(f"{APP_NAME} failed on {lib}: {message}")
        logits = np.load(out)
    top, load_ms, run_ms = _parse_app_output(proc.stdout)
    return AppRun(cmd, proc.stdout, logits, top, load_ms, run_ms, proc.returncode)


def run_on_preset(preset, lib: str | os.PathLike, input=None, **kwargs) -> AppRun:
    """fetch_runtime + build_app + run_app for a preset: its arch, its qemu CPU model, GPU for CUDA targets."""
    kit = fetch_runtime(preset.arch)
    app = build_app(kit)
    kwargs.setdefault("device", preset.backend)
    return run_app(app, lib, input, kit=kit, qemu_cpu=preset.qemu_cpu, **kwargs)
