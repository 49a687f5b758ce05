"""Every compiled artifact must match PyTorch eager on the same weights."""

import hashlib
import json

import numpy as np
import pytest
import torch

from mnet_compile import runtime
from mnet_compile.model import build_model

# The paper's width multipliers at 224 and 128, and one at each other paper resolution.
CASES = [(a, r) for r in (224, 128) for a in (1.0, 0.75, 0.5, 0.25)] + [(0.5, 192), (0.25, 160)]


@pytest.mark.parametrize("alpha,resolution", CASES)
def test_artifact_matches_pytorch(compiled, alpha, resolution):
    out = compiled(alpha, resolution, seed=7)
    model = runtime.load(str(out))
    x = np.random.default_rng(resolution).standard_normal((1, 3, resolution, resolution)).astype("float32")
    ref = build_model(alpha, seed=7)(torch.from_numpy(x)).detach().numpy()
    got = model(x)
    assert got.shape == ref.shape == (1, 1000)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert got.argmax() == ref.argmax()


def test_batchnorm_is_folded_and_randomized(compiled):
    """The seed randomizes BN statistics and affine parameters, and the compiled graph has no BN left."""
    bn = build_model(0.25, seed=7).features[0][1]
    assert bn.running_mean.abs().sum() > 0 and (bn.running_var - 1).abs().sum() > 0
    assert (bn.weight - 1).abs().sum() > 0 and bn.bias.abs().sum() > 0
    from mnet_compile import frontends, passes

    mod = passes.optimize(frontends.from_torch(build_model(0.25, seed=7), (1, 3, 64, 64)))
    text = mod.script(show_meta=False)
    assert "batch_norm" not in text and text.count("R.nn.conv2d(") == 27
    assert 'data_layout="NHWC"' in text and 'kernel_layout="HWIO"' in text


def test_manifest(compiled):
    out = compiled(0.25, 128, seed=7)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == runtime.FORMAT_VERSION
    assert (manifest["alpha"], manifest["resolution"], manifest["classes"]) == (0.25, 128, 1000)
    assert manifest["input"] == {"name": "x", "shape": [1, 3, 128, 128], "dtype": "float32", "layout": "NCHW"}
    assert manifest["output"]["shape"] == [1, 1000]
    assert manifest["target"]["tvm"]["kind"] == "llvm" and manifest["target"]["arch"] == "x86_64"
    assert set(manifest["files"]) == {"model.so"}
    assert manifest["files"]["model.so"]["sha256"] == hashlib.sha256((out / "model.so").read_bytes()).hexdigest()
    for key in ("preprocessing", "tvm_version", "tvm_ffi_version", "created", "weights"):
        assert manifest[key]


def test_weights_file(compiled, tmp_path):
    """--weights loads a state_dict: the artifact reproduces that model, not the seeded one."""
    trained = build_model(0.25, seed=123)
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    out = compiled(0.25, 128, weights=str(path))
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype("float32")
    ref = trained(torch.from_numpy(x)).detach().numpy()
    got = runtime.load(str(out))(x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["source"] == "file" and len(manifest["weights"]["sha256"]) == 64
