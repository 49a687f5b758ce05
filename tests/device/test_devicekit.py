"""Edge targets: cross-compiled artifacts run under qemu-user through the C++ runner and match PyTorch here.

Emulation proves correctness and the instruction set, never speed. Tools these tests need, and what
installs them (CI installs all of them; a test skips only when its tool is absent):
  aarch64-linux-gnu-g++ / -objdump: apt-get install g++-aarch64-linux-gnu
  arm-linux-gnueabihf-g++:          apt-get install g++-arm-linux-gnueabihf
  qemu-aarch64-static:              apt-get install qemu-user-static
  debootstrap (slow test only):     apt-get install debootstrap
  nvcc:                             the CUDA 13 toolkit (on this machine kind: /usr/local/bin/nvcc)
The AArch64 TVM runtime comes from PyPI's wheels via devicekit.fetch_runtime (cached in ~/.cache/mnet-compile).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm

from mnet_compile import devicekit, frontends, passes, targets
from mnet_compile.build import CompileRequest, compile_executable, compile_model
from mnet_compile.errors import MnetError
from mnet_compile.model import build_model

SMALL = (0.25, 128)  # MobileNet v1 0.25-128: ~30 s to build here, ~10 s under qemu
SEED = 0


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed")


AARCH64 = need("aarch64-linux-gnu-g++", "qemu-aarch64-static")


def build_artifact(name: str, alpha: float, resolution: int, folder, **options) -> str:
    """The artifact `mnet-compile --target NAME` makes (default schedules; no records ship for ARM yet)."""
    request = CompileRequest(alpha=alpha, resolution=resolution, target=name, seed=SEED, output=str(folder), **options)
    return str(compile_model(request, log=lambda message: None) / "model.so")


def reference(alpha: float, resolution: int, seed: int = 1):
    """A random input and PyTorch's logits for it, on this x86 machine."""
    x = np.random.default_rng(seed).standard_normal((1, 3, resolution, resolution)).astype("float32")
    with torch.no_grad():
        ref = build_model(alpha, 1000, SEED)(torch.from_numpy(x)).numpy()
    return x, ref


def assert_matches(logits, ref):
    assert logits.shape == ref.shape
    err = float(np.abs(logits - ref).max())
    assert err <= 1e-4 * float(np.abs(ref).max()), f"max abs diff {err} vs max |ref| {np.abs(ref).max()}"
    assert int(logits.argmax()) == int(ref.argmax())


def elf_header(path):
    """(ELF class 32/64, e_machine, e_flags) of a shared library."""
    data = open(path, "rb").read(64)
    assert data[:4] == b"\x7fELF"
    bits = 32 if data[4] == 1 else 64
    machine = struct.unpack_from("<H", data, 18)[0]
    flags = struct.unpack_from("<I", data, 36 if bits == 32 else 48)[0]
    return bits, machine, flags


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Builds each (preset, alpha, resolution) once per module."""
    made = {}
    root = tmp_path_factory.mktemp("cross")

    def get(name, alpha=SMALL[0], resolution=SMALL[1]):
        key = (name, alpha, resolution)
        if key not in made:
            made[key] = build_artifact(name, alpha, resolution, root / f"{name}-{alpha}-{resolution}")
        return made[key]

    return get


@pytest.fixture(scope="module")
def aarch64_kit():
    return devicekit.fetch_runtime("aarch64")


@pytest.fixture(scope="module")
def aarch64_app(aarch64_kit):
    return devicekit.build_app(aarch64_kit)


# --- AArch64 CPU presets under qemu -------------------------------------------------------------------


@AARCH64
@pytest.mark.parametrize("name", ["arm_cpu", "jetson-nano"])
def test_aarch64_artifact_matches_torch_under_qemu(name, artifacts, aarch64_kit, aarch64_app):
    preset = targets.load_preset(name)
    assert preset.arch == "aarch64" and preset.qemu_cpu in ("cortex-a72", "cortex-a57")
    lib = artifacts(name)
    x, ref = reference(*SMALL)
    run = devicekit.run_app(aarch64_app, lib, x, kit=aarch64_kit, qemu_cpu=preset.qemu_cpu, topk=5)
    assert_matches(run.logits, ref)
    assert run.top[0][0] == int(ref.argmax())
    assert [c for c, _ in run.top] == list(np.argsort(-ref[0], kind="stable")[:5])


@need("aarch64-linux-gnu-objdump", "aarch64-linux-gnu-g++")
def test_aarch64_artifact_has_neon_fmla(artifacts):
    lib = artifacts("arm_cpu")
    bits, machine, _ = elf_header(lib)
    assert (bits, machine) == (64, 183)  # EM_AARCH64
    fmla = devicekit.count_instructions(lib, r"\bfmla\s+v\d+\.4s", "aarch64")
    assert fmla > 0, "no NEON 4 x fp32 fused multiply-add in the artifact"


@AARCH64
def test_runner_reads_raw_bin_and_reports(artifacts, aarch64_kit, aarch64_app, tmp_path):
    x, ref = reference(*SMALL, seed=2)
    raw = tmp_path / "image.bin"
    x.tofile(raw)  # raw float32 NCHW: the runner infers (1, 3, 128, 128) from the size
    # run_on_preset = fetch_runtime + build_app + run_app with the preset's arch and qemu CPU (rpi4: A72 too)
    run = devicekit.run_on_preset(targets.load_preset("rpi4"), artifacts("arm_cpu"), raw, repeat=2)
    assert_matches(run.logits, ref)
    assert "input: (1, 3, 128, 128) float32" in run.stdout and "output: (1, 1000) float32" in run.stdout
    assert run.run_ms > 0 and run.load_ms > 0


@AARCH64
def test_device_bundle_builds_and_runs(aarch64_kit, tmp_path):
    """--bundle: the tar.gz alone is enough: its Makefile builds mnet-run, which runs its model.so."""
    art = Path(build_artifact("rpi4", *SMALL, tmp_path / "m_rpi4", bundle=True))
    bundle = tmp_path / "m_rpi4.tar.gz"
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "device", filter="data")
    root = tmp_path / "device" / "m_rpi4"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "app", "manifest.json", "model.so", "runtime.py"]
    assert (root / "model.so").read_bytes() == Path(art).read_bytes()
    assert "{" not in (root / "README.md").read_text().split("```")[0].replace("${", "")
    make = ["make", "-C", str(root / "app"), f"KIT={aarch64_kit.lib_dirs[0].parent}", "CXX=aarch64-linux-gnu-g++"]
    subprocess.run(make, check=True, capture_output=True)
    x, ref = reference(*SMALL)
    run = devicekit.run_app(root / "app" / "mnet-run", root / "model.so", x, kit=aarch64_kit, qemu_cpu="cortex-a72")
    assert_matches(run.logits, ref)


@AARCH64
def test_runner_errors_are_one_line(aarch64_kit, aarch64_app, tmp_path):
    bad = tmp_path / "not-a-model.so"
    bad.write_bytes(b"nothing")
    with pytest.raises(MnetError, match="mnet-run failed"):
        devicekit.run_app(aarch64_app, bad, None, kit=aarch64_kit, qemu_cpu="cortex-a72", shape=(1, 3, 32, 32))


def test_presets_are_consistent():
    for name in targets.preset_names():
        p = targets.load_preset(name)
        t = p.tvm_target()
        host = t.host if t.kind.name == "cuda" else t
        assert p.arch in ("x86_64", "aarch64", "armv7l"), name
        if p.arch == "aarch64":
            assert host.attrs["mtriple"].startswith("aarch64") and p.cc == "aarch64-linux-gnu-g++", name
            assert p.qemu_cpu, name
        if p.cc:
            assert p.cc_install and p.cc.split("-g++")[0].replace("_", "-") in p.cc_install.replace("_", "-"), name
    orin = targets.load_preset("jetson-orin").tvm_target()
    assert str(orin.attrs["arch"]) == "sm_87" and orin.host.attrs["mcpu"] == "cortex-a78ae"


@need("objdump")
def test_x86_avx512_preset_emits_zmm_code(artifacts):
    """Built for another x86-64 machine (this one lacks AVX-512, so nothing runs): 512-bit registers in use."""
    lib = artifacts("x86-avx512")
    assert elf_header(lib)[:2] == (64, 62)  # EM_X86_64
    assert devicekit.count_instructions(lib, r"%zmm\d+", "x86_64") > 0


# --- 32-bit Raspberry Pi OS: cross-compiles and links, nothing to run it with ----------------------------


@need("arm-linux-gnueabihf-g++")
def test_armv7_cross_compiles_and_links(artifacts):
    lib = artifacts("rpi-armv7")
    bits, machine, flags = elf_header(lib)
    assert (bits, machine) == (32, 40)  # EM_ARM
    assert flags & 0x400, "not the hard-float ABI (EF_ARM_ABI_FLOAT_HARD)"
    with pytest.raises(MnetError, match="no TVM runtime wheel exists for armv7l"):
        devicekit.fetch_runtime("armv7l")


# --- missing tools ------------------------------------------------------------------------------------


def test_missing_cross_compiler_names_install_command():
    preset = targets.load_preset("arm_cpu")
    with pytest.raises(MnetError, match="nonexistent-g\\+\\+"):
        preset.compiler(cc="nonexistent-g++")
    broken = dataclasses.replace(preset, cc="nonexistent-g++", cc_install="apt-get install g++-aarch64-linux-gnu")
    with pytest.raises(MnetError, match="install it with: apt-get install g\\+\\+-aarch64-linux-gnu"):
        broken.compiler()


def test_missing_runner_compiler_names_install_command(tmp_path):
    kit = devicekit.RuntimeKit("aarch64", (tmp_path,), tmp_path)
    with pytest.raises(MnetError, match="install it with: apt-get install g\\+\\+-aarch64-linux-gnu"):
        devicekit.build_app(kit, out=tmp_path / "mnet-run", cc="nonexistent-g++")


# --- CUDA: built here (nvcc, no GPU), run only where a GPU exists ---------------------------------------


@need("nvcc")
@pytest.mark.parametrize("name, sm, machine", [("jetson-orin", "sm_87", 183), ("cuda", "sm_80", 62)])
def test_cuda_artifact_holds_compiled_gpu_code(name, sm, machine, tmp_path):
    """jetson-orin: sm_87 cubin + PTX with an AArch64 host part (EM_AARCH64); cuda: sm_80 with x86-64 host code."""
    from mnet_compile import cuda

    preset = targets.load_preset(name)
    if preset.cc and shutil.which(preset.cc) is None:
        pytest.skip(f"{preset.cc} not installed")
    lib = build_artifact(name, *SMALL, tmp_path / name)
    assert elf_header(lib)[:2] == (64, machine)
    code = cuda.embedded_gpu_code(lib)
    assert code["cubin"] == [sm] and code["ptx"] == [sm]
    assert not code["cuda_source"], "raw CUDA C in the artifact: the device would need nvcc/NVRTC to load it"
    ptx = Path(lib).read_bytes()
    assert ptx.count(b".shared .align") >= 19, "convolutions without shared-memory tiling (dlight Fallback only?)"


def test_embedded_gpu_code_detects_raw_cuda_source(tmp_path):
    """The check above is not vacuous: an artifact holding TVM's raw CUDA C is reported as such."""
    from mnet_compile import cuda

    fake = tmp_path / "raw.so"
    fake.write_bytes(b'\x7fELF...extern "C" __global__ void __launch_bounds__(64) default_function_kernel(')
    assert cuda.embedded_gpu_code(fake) == {"cubin": [], "ptx": [], "cuda_source": True}


def _gpu_present():
    from mnet_compile import cuda

    return cuda.has_gpu()


@pytest.mark.skipif(not _gpu_present(), reason="no NVIDIA GPU on this machine (the GPU run needs one)")
@need("nvcc")
def test_cuda_artifact_matches_torch_on_gpu(tmp_path):
    from mnet_compile import cuda

    preset = targets.load_preset("cuda")
    dev = tvm.cuda(0)
    spec = dict(preset.target, arch="sm_" + dev.compute_version.replace(".", ""))
    preset = dataclasses.replace(preset, target=spec)
    mod = passes.optimize(frontends.from_torch(build_model(*SMALL[:1], 1000, SEED), (1, 3, SMALL[1], SMALL[1])))
    lib = tmp_path / "gpu.so"
    compile_executable(mod, preset.tvm_target())[0].export_library(str(lib))
    x, ref = reference(*SMALL)
    vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(str(lib)), dev)
    out = vm["main"](tvm.runtime.tensor(x, dev))
    assert_matches((out if hasattr(out, "numpy") else out[0]).numpy(), ref)
    kit = devicekit.host_runtime()
    run = devicekit.run_app(devicekit.build_app(kit, out=tmp_path / "mnet-run"), lib, x, kit=kit, device="cuda")
    assert_matches(run.logits, ref)


# --- slow: full-size model, more CPU models, the Python loader on an emulated AArch64 CPython ------------


@pytest.mark.slow
@AARCH64
def test_mobilenet_1_0_224_under_qemu(artifacts, aarch64_kit, aarch64_app):
    lib = artifacts("arm_cpu", 1.0, 224)
    x, ref = reference(1.0, 224)
    run = devicekit.run_app(aarch64_app, lib, x, kit=aarch64_kit, qemu_cpu="cortex-a72")
    assert_matches(run.logits, ref)
    assert devicekit.count_instructions(lib, r"\bfmla\s+v\d+\.4s", "aarch64") > 0


@pytest.mark.slow
@AARCH64
@pytest.mark.parametrize("name", ["rpi3", "rpi4", "rpi5", "jetson-xavier"])
def test_more_aarch64_presets_under_qemu(name, artifacts, aarch64_kit, aarch64_app):
    preset = targets.load_preset(name)
    x, ref = reference(*SMALL)
    run = devicekit.run_app(aarch64_app, artifacts(name), x, kit=aarch64_kit, qemu_cpu=preset.qemu_cpu)
    assert_matches(run.logits, ref)


LOADER = textwrap.dedent(
    """
    import sys, time, platform
    import numpy as np
    t = time.time()
    import tvm
    from tvm.runtime.vm import VirtualMachine
    lib, x_path, out_path = sys.argv[1:4]
    vm = VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
    x = np.load(x_path)
    out = vm["main"](tvm.runtime.tensor(x))
    y = out[0] if not hasattr(out, "numpy") else out
    np.save(out_path, y.numpy())
    print(platform.machine(), sys.version.split()[0], "import+run", round(time.time() - t, 1), "s")
    """
)


@pytest.mark.slow
@AARCH64
@need("debootstrap", "dpkg-deb")
def test_python_loader_under_emulated_aarch64_cpython(artifacts, tmp_path):
    """The device's view: Debian bookworm's python3 for arm64, the aarch64 wheels, TVM_USE_RUNTIME_LIB=1."""
    root = devicekit.emulated_python("aarch64")
    devicekit.install_wheels(root, "aarch64")
    x, ref = reference(*SMALL)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "loader.py").write_text(LOADER)
    proc = devicekit.run_emulated_python(
        root,
        [str(tmp_path / "loader.py"), os.path.abspath(artifacts("arm_cpu")), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        cpu="cortex-a72",
        env={"TVM_USE_RUNTIME_LIB": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("aarch64 3.11"), proc.stdout
    assert_matches(np.load(tmp_path / "y.npy"), ref)


RUNTIME_LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])  # runtime.py copied alone: the device has numpy and the TVM runtime only
    import runtime
    model = runtime.load(sys.argv[2])
    np.save(sys.argv[4], model(np.load(sys.argv[3])))
    print("top5", model.classify(np.load(sys.argv[3]), k=5))
    """
)


@pytest.mark.slow
@AARCH64
@need("debootstrap", "dpkg-deb")
def test_runtime_load_under_emulated_aarch64_cpython(tmp_path):
    """mnet_compile/runtime.py, copied alone to the 'device', loads an arm_cpu artifact folder from build.py."""
    build = pytest.importorskip("mnet_compile.build")
    import mnet_compile.runtime as runtime_module

    request = build.CompileRequest(alpha=SMALL[0], resolution=SMALL[1], target="arm_cpu", tuned=False, output=str(tmp_path / "art"))
    art = build.compile_model(request, log=lambda _m: None)
    root = devicekit.emulated_python("aarch64")
    devicekit.install_wheels(root, "aarch64")
    (tmp_path / "dev").mkdir()
    shutil.copy(runtime_module.__file__, tmp_path / "dev" / "runtime.py")
    (tmp_path / "loader.py").write_text(RUNTIME_LOADER)
    x, ref = reference(*SMALL)
    np.save(tmp_path / "x.npy", x)
    args = [str(tmp_path / "loader.py"), str(tmp_path / "dev"), str(art), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    proc = devicekit.run_emulated_python(root, args, cpu="cortex-a72", env={"TVM_USE_RUNTIME_LIB": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_matches(np.load(tmp_path / "y.npy"), ref)
    assert proc.stdout.startswith(f"top5 [({int(ref.argmax())},")


@need("aarch64-linux-gnu-g++")
def test_wrong_architecture_compiler_fails_in_one_line(capsys, tmp_path):
    """x86 g++ cannot link AArch64 objects: one line naming the link failure, exit 1, no artifact."""
    from mnet_compile.cli import main

    out = tmp_path / "arm"
    code = main(["--target", "arm_cpu", "--alpha", "0.25", "--resolution", "32", "--cc", "g++", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: linking model.so failed") and not out.exists()
    assert not list(tmp_path.iterdir()), "temporary folder left behind"
    code = main(["--target", "arm_cpu", "--sysroot", str(tmp_path / "none"), "--output", str(out)])
    assert code == 1 and "is not a folder" in capsys.readouterr().err
