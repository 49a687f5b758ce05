"""--bundle: the .tar.gz alone is enough on the device: its Makefile builds mnet-run, which runs its model.so."""

import subprocess
import tarfile

from mnet_compile.device import devicekit
from mnet_compile.pipeline import CompileRequest, compile_model
from mnet_compile.resources import tvm_requirements

from ..helpers import assert_matches, need, pytorch_reference, random_input


@need("aarch64-linux-gnu-g++", "qemu-aarch64-static", "make")
def test_device_bundle_builds_and_runs(tmp_path):
    request = CompileRequest(alpha=0.25, resolution=128, target="rpi4", seed=0, bundle=True, output=str(tmp_path / "m_rpi4"))
    art = compile_model(request, log=lambda message: None)
    with tarfile.open(tmp_path / "m_rpi4.tar.gz") as tar:
        tar.extractall(tmp_path / "device", filter="data")
    root = tmp_path / "device" / "m_rpi4"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "app", "manifest.json", "model.so", "runtime.py"]
    assert (root / "model.so").read_bytes() == (art / "model.so").read_bytes()
    readme = (root / "README.md").read_text()
    assert "{" not in readme.split("```")[0].replace("${", "") and f"pip install {tvm_requirements()} numpy" in readme
    kit = devicekit.fetch_runtime("aarch64")
    make = ["make", "-C", str(root / "app"), f"KIT={kit.lib_dirs[0].parent}", "CXX=aarch64-linux-gnu-g++"]
    subprocess.run(make, check=True, capture_output=True)
    x = random_input((1, 3, 128, 128), seed=1)
    run = devicekit.run_app(root / "app" / "mnet-run", root / "model.so", x, kit=kit, qemu_cpu="cortex-a72")
    assert_matches(run.logits, pytorch_reference(x, alpha=0.25))
