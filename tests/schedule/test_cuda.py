"""CUDA targets: built here (nvcc, no GPU needed) with compiled GPU code inside; run only where a GPU exists."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import tvm

from mnet_compile import frontends, targets
from mnet_compile.device import devicekit
from mnet_compile.export.executable import compile_executable
from mnet_compile.graph import passes
from mnet_compile.models import create_model
from mnet_compile.schedule import cuda

from ..helpers import assert_matches, elf_header, need, pytorch_reference, random_input

SMALL = (0.25, 128)


@need("nvcc")
@pytest.mark.parametrize("name, sm, machine", [pytest.param("jetson-orin", "sm_87", 183, marks=pytest.mark.slow), ("cuda", "sm_80", 62)])
def test_cuda_artifact_holds_compiled_gpu_code(compiled, name, sm, machine):
    """jetson-orin: sm_87 cubin + PTX with an AArch64 host part (EM_AARCH64); cuda: sm_80 with x86-64 host code."""
    preset = targets.load_preset(name)
    if preset.cc and shutil.which(preset.cc) is None:
        pytest.skip(f"{preset.cc} not installed")
    lib = compiled(*SMALL, target=name, seed=0) / "model.so"
    assert elf_header(lib)[:2] == (64, machine)
    code = cuda.embedded_gpu_code(lib)
    assert code["cubin"] == [sm] and code["ptx"] == [sm]
    assert not code["cuda_source"], "raw CUDA C in the artifact: the device would need nvcc/NVRTC to load it"
    assert Path(lib).read_bytes().count(b".shared .align") >= 19, "convolutions without shared-memory tiling (dlight Fallback only?)"


def test_embedded_gpu_code_detects_raw_cuda_source(tmp_path):
    """The check above is not vacuous: an artifact holding TVM's raw CUDA C is reported as such."""
    fake = tmp_path / "raw.so"
    fake.write_bytes(b'\x7fELF...extern "C" __global__ void __launch_bounds__(64) default_function_kernel(')
    assert cuda.embedded_gpu_code(fake) == {"cubin": [], "ptx": [], "cuda_source": True}


@pytest.mark.skipif(not cuda.has_gpu(), reason="no NVIDIA GPU on this machine (the GPU run needs one)")
@need("nvcc")
def test_cuda_artifact_matches_torch_on_gpu(tmp_path):
    preset = targets.load_preset("cuda")
    dev = tvm.cuda(0)
    preset = dataclasses.replace(preset, tvm_spec=dict(preset.tvm_spec, arch="sm_" + dev.compute_version.replace(".", "")))
    mod = passes.optimize(frontends.from_torch(create_model(alpha=SMALL[0]), (1, 3, SMALL[1], SMALL[1])))
    lib = tmp_path / "gpu.so"
    compile_executable(mod, preset)[0].export_library(str(lib))
    x = random_input((1, 3, SMALL[1], SMALL[1]), seed=1)
    ref = pytorch_reference(x, alpha=SMALL[0])
    vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(str(lib)), dev)
    out = vm["main"](tvm.runtime.tensor(x, dev))
    assert_matches((out if hasattr(out, "numpy") else out[0]).numpy(), ref)
    kit = devicekit.host_runtime()
    run = devicekit.run_app(devicekit.build_app(kit, out=tmp_path / "mnet-run"), lib, x, kit=kit, device="cuda")
    assert_matches(run.logits, ref)
