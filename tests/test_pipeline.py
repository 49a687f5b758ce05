"""Every compiled artifact must match the framework that defined its model (PyTorch eager, same weights)."""

import json

import pytest
import torch

from mnet_compile.device import runtime
from mnet_compile.models import create_model
from mnet_compile.pipeline import CompileRequest, compile_model, fuses_blocks, tune_model
from mnet_compile.targets import load_preset

from .frontends.files import export_onnx
from .helpers import assert_matches_pytorch, random_input

# The paper's width multipliers at 224 and 128, and one at each other paper resolution.
CASES = [(a, r) for r in (224, 128) for a in (1.0, 0.75, 0.5, 0.25)] + [(0.5, 192), (0.25, 160)]


@pytest.mark.parametrize("alpha,resolution", CASES)
def test_artifact_matches_pytorch(compiled, alpha, resolution):
    out = compiled(alpha, resolution, seed=7)
    x = random_input((1, 3, resolution, resolution), seed=resolution)
    got = runtime.load(str(out))(x)
    assert got.shape == (1, 1000)
    assert_matches_pytorch(got, x, alpha=alpha, seed=7)


def _block_kernels(folder) -> list[str]:
    kernels = json.loads((folder / "manifest.json").read_text())["schedules"]["per_kernel"]
    return [name for name in kernels if name.startswith("block_") and name.count("conv2d") == 2]


def test_blocks_are_fused_by_default_on_x86(compiled):
    """0.25-128 on x86: the stride-1 blocks on 64 and 32 rows are one kernel each; with --no-fuse-blocks every
    conv is its own kernel. Both match PyTorch."""
    fused, apart = compiled(0.25, 128, seed=7), compiled(0.25, 128, seed=7, fuse_blocks=False)
    assert len(_block_kernels(fused)) == 2 and _block_kernels(apart) == []
    x = random_input((1, 3, 128, 128), seed=128)
    assert_matches_pytorch(runtime.load(str(apart))(x), x, alpha=0.25, seed=7)


@pytest.mark.parametrize("target,integer,asked,fused", [
    ("x86", False, None, True), ("x86", True, None, False), ("rpi4", False, None, False), ("cuda", False, None, False),
    ("x86", False, False, False), ("rpi4", False, True, True), ("cuda", False, True, False),
])  # fmt: skip
def test_which_builds_fuse_blocks(target, integer, asked, fused):
    """By default float32 models on x86 (measured); ARM boards and int8 graphs only when asked; GPUs never."""
    request = CompileRequest(target=target, fuse_blocks=asked)
    assert fuses_blocks(request, load_preset(target), integer) is fused


@pytest.mark.parametrize(
    "name,alpha,resolution",
    [("mobilenet_v2", 1.0, 96), pytest.param("mobilenet_v3_small", 1.0, 96, marks=pytest.mark.slow),
     pytest.param("mobilenet_v3_large", 1.0, 64, marks=pytest.mark.slow)],
)
def test_architecture_matches_pytorch(tmp_path, name, alpha, resolution):
    request = CompileRequest(model=name, alpha=alpha, resolution=resolution, seed=5, output=str(tmp_path / "a"))
    out = compile_model(request, log=lambda m: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == name and manifest["input"]["shape"] == [1, 3, resolution, resolution]
    x = random_input((1, 3, resolution, resolution), seed=3)
    assert_matches_pytorch(runtime.load(str(out))(x), x, model=name, alpha=alpha, seed=5)


def test_weights_file(compiled, tmp_path):
    """--weights loads a state_dict: the artifact reproduces that model, not the seeded one."""
    path = tmp_path / "w.pt"
    torch.save(create_model(alpha=0.25, seed=123).state_dict(), path)
    out = compiled(0.25, 128, weights=str(path))
    x = random_input((1, 3, 128, 128), seed=1)
    assert_matches_pytorch(runtime.load(str(out))(x), x, alpha=0.25, seed=123)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["source"] == "file" and len(manifest["weights"]["sha256"]) == 64


@pytest.mark.slow
def test_model_file_is_tuned_and_its_records_apply(tmp_path):
    """tune and compile share the loaded-model step, so a --from file tunes as a built-in model does."""
    path = export_onnx(create_model(alpha=0.25, seed=2), tmp_path / "m.onnx", 32)
    work = tune_model(CompileRequest(source=str(path)), 3, str(tmp_path / "records"), log=lambda m: None)
    assert work == tmp_path / "records" and (work / "database_tuning_record.json").read_text().count("\n") >= 3
    out = compile_model(CompileRequest(source=str(path), records=str(work), output=str(tmp_path / "art")), log=lambda m: None)
    assert json.loads((out / "manifest.json").read_text())["schedules"]["tuned"] > 0
    x = random_input((1, 3, 32, 32))
    assert_matches_pytorch(runtime.load(str(out))(x), x, alpha=0.25, seed=2)
