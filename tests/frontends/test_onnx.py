"""ONNX files: compiled artifacts match ONNX Runtime on the same file; dynamic dims fixed by --input-shape."""

import hashlib

import pytest

from mnet_compile.device import runtime
from mnet_compile.models import create_model

from ..helpers import assert_matches, random_input
from .files import compile_file, export_onnx


def onnxruntime_reference(path, x):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


@pytest.mark.parametrize(
    "arch,alpha,resolution",
    [("mobilenet_v1", 0.25, 96), ("mobilenet_v1", 0.5, 128), pytest.param("mobilenet_v2", 0.5, 96, marks=pytest.mark.slow)],
)
def test_onnx_matches_onnxruntime(capsys, tmp_path, arch, alpha, resolution):
    onnx_path = export_onnx(create_model(arch, alpha, seed=11), tmp_path / f"{arch}.onnx", resolution)
    out = tmp_path / "art"
    manifest = compile_file(capsys, onnx_path, out)
    assert manifest["input"] == {"name": "image", "shape": [1, 3, resolution, resolution], "dtype": "float32",
                                 "layout": "NCHW"}
    assert manifest["source"]["format"] == "onnx" and manifest["source"]["path"] == str(onnx_path)
    assert manifest["source"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert manifest["output"] == {"shape": [1, 1000], "dtype": "float32", "kind": "logits"}
    assert manifest["resolution"] == resolution and manifest["classes"] == 1000
    x = random_input((1, 3, resolution, resolution), seed=2)
    assert_matches(runtime.load(str(out))(x), onnxruntime_reference(onnx_path, x))


def test_dynamic_onnx_with_input_shape(capsys, tmp_path, small_onnx):
    out = tmp_path / "art"
    manifest = compile_file(capsys, small_onnx["dynamic"], out, "--input-shape", "1,3,64,64")
    assert manifest["input"]["shape"] == [1, 3, 64, 64]
    x = random_input((1, 3, 64, 64), seed=5)
    assert_matches(runtime.load(str(out))(x), onnxruntime_reference(small_onnx["dynamic"], x))
