"""Edge targets: cross-compiled artifacts run under qemu-user through the C++ runner and match PyTorch here.

Emulation proves correctness and the instruction set, never speed. Tools these tests need, and what
installs them (CI installs all of them; a test skips only when its tool is absent):
  aarch64-linux-gnu-g++ / -objdump: apt-get install g++-aarch64-linux-gnu
  arm-linux-gnueabihf-g++:          apt-get install g++-arm-linux-gnueabihf
  qemu-aarch64-static:              apt-get install qemu-user-static
  debootstrap (slow test only):     apt-get install debootstrap
The AArch64 TVM runtime comes from PyPI's wheels via devicekit.fetch_runtime (cached in ~/.cache/mnet-compile).
"""

from __future__ import annotations

import os
import shutil
import textwrap

import numpy as np
import pytest

from mnet_compile import targets
from mnet_compile.device import devicekit
from mnet_compile.errors import MnetError

from ..emulation import count_instructions, emulated_python, install_wheels, run_emulated_python
from ..helpers import assert_matches, elf_header, error_line, need, pytorch_reference, random_input, run_cli

SMALL = (0.25, 128)  # MobileNet v1 0.25-128: ~30 s to build here, ~10 s under qemu
AARCH64 = need("aarch64-linux-gnu-g++", "qemu-aarch64-static")


def reference(alpha: float, resolution: int, seed: int = 1):
    """A random input and PyTorch's logits for it (seed-0 weights), on this x86 machine."""
    x = random_input((1, 3, resolution, resolution), seed)
    return x, pytorch_reference(x, alpha=alpha)


@pytest.fixture(scope="module")
def artifacts(compiled):
    """artifacts(preset, alpha, resolution) -> the model.so `mnet-compile --target PRESET` makes (seed-0 weights)."""
    return lambda name, alpha=SMALL[0], resolution=SMALL[1]: str(compiled(alpha, resolution, target=name, seed=0) / "model.so")


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
    fmla = count_instructions(lib, r"\bfmla\s+v\d+\.4s", "aarch64")
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
def test_runner_errors_are_one_line(aarch64_kit, aarch64_app, tmp_path):
    bad = tmp_path / "not-a-model.so"
    bad.write_bytes(b"nothing")
    with pytest.raises(MnetError, match="mnet-run failed"):
        devicekit.run_app(aarch64_app, bad, None, kit=aarch64_kit, qemu_cpu="cortex-a72", shape=(1, 3, 32, 32))


@need("objdump")
def test_x86_avx512_preset_emits_zmm_code(artifacts):
    """Built for another x86-64 machine (this one lacks AVX-512, so nothing runs): 512-bit registers in use."""
    lib = artifacts("x86-avx512")
    assert elf_header(lib)[:2] == (64, 62)  # EM_X86_64
    assert count_instructions(lib, r"%zmm\d+", "x86_64") > 0


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


def test_missing_runner_compiler_names_install_command(tmp_path):
    kit = devicekit.RuntimeKit("aarch64", (tmp_path,), tmp_path)
    with pytest.raises(MnetError, match="install it with: apt-get install g\\+\\+-aarch64-linux-gnu"):
        devicekit.build_app(kit, out=tmp_path / "mnet-run", cc="nonexistent-g++")


# --- slow: full-size model, more CPU models, the Python loader on an emulated AArch64 CPython ------------


@pytest.mark.slow
@AARCH64
def test_mobilenet_1_0_224_under_qemu(artifacts, aarch64_kit, aarch64_app):
    lib = artifacts("arm_cpu", 1.0, 224)
    x, ref = reference(1.0, 224)
    run = devicekit.run_app(aarch64_app, lib, x, kit=aarch64_kit, qemu_cpu="cortex-a72")
    assert_matches(run.logits, ref)
    assert count_instructions(lib, r"\bfmla\s+v\d+\.4s", "aarch64") > 0


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
    root = emulated_python("aarch64")
    install_wheels(root, "aarch64")
    x, ref = reference(*SMALL)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "loader.py").write_text(LOADER)
    proc = run_emulated_python(
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
def test_runtime_load_under_emulated_aarch64_cpython(compiled, tmp_path):
    """mnet_compile/device/runtime.py, copied alone to the 'device', loads an arm_cpu artifact folder."""
    from mnet_compile.device import runtime as runtime_module

    art = compiled(*SMALL, target="arm_cpu", seed=0, tuned=False)
    root = emulated_python("aarch64")
    install_wheels(root, "aarch64")
    (tmp_path / "dev").mkdir()
    shutil.copy(runtime_module.__file__, tmp_path / "dev" / "runtime.py")
    (tmp_path / "loader.py").write_text(RUNTIME_LOADER)
    x, ref = reference(*SMALL)
    np.save(tmp_path / "x.npy", x)
    args = [str(tmp_path / "loader.py"), str(tmp_path / "dev"), str(art), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    proc = run_emulated_python(root, args, cpu="cortex-a72", env={"TVM_USE_RUNTIME_LIB": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_matches(np.load(tmp_path / "y.npy"), ref)
    assert proc.stdout.startswith(f"top5 [({int(ref.argmax())},")


@need("aarch64-linux-gnu-g++")
def test_wrong_architecture_compiler_fails_in_one_line(capsys, tmp_path):
    """x86 g++ cannot link AArch64 objects: one line naming the link failure, exit 1, no artifact."""
    out = tmp_path / "arm"
    code, _, err = run_cli(capsys, "--target", "arm_cpu", "--alpha", "0.25", "--resolution", "32", "--cc", "g++", "--output", out)
    assert code == 1 and error_line(err).startswith("error: linking model.so failed") and not out.exists()
    assert not list(tmp_path.iterdir()), "temporary folder left behind"
    code, _, err = run_cli(capsys, "--target", "arm_cpu", "--sysroot", tmp_path / "none", "--output", out)
    assert code == 1 and "is not a folder" in error_line(err)
