"""ONNX QDQ models from ONNX Runtime's quantize_static: imported as the integer graph, checked against ORT."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from mnet_compile.calibration import seeded_image
from mnet_compile.device import runtime
from mnet_compile.models import create_model

from ..helpers import error_line, run_cli
from .files import compile_file, export_onnx

RESOLUTION = 128


class _Images(CalibrationDataReader):
    def __init__(self, count=4, resolution=RESOLUTION):
        rng = np.random.default_rng(0)
        self.inputs = iter([{"image": rng.standard_normal((1, 3, resolution, resolution)).astype(np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self.inputs, None)


def _qdq(tmp_path, activations=QuantType.QInt8):
    fp32 = export_onnx(create_model(alpha=0.25, seed=0).eval(), tmp_path / "fp32.onnx", RESOLUTION)
    path = tmp_path / f"qdq_{activations.name}.onnx"
    quantize_static(str(fp32), str(path), _Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=activations, weight_type=QuantType.QInt8)  # fmt: skip
    return path


def test_qdq_matches_onnxruntime(capsys, tmp_path):
    """8 inputs (6 seeded synthetic images, 2 Gaussian), every int8 logit against ORT's: at most 1 level
    apart, and at least 90% identical (ORT requantizes in float, rounding ties to even; we in fixed point;
    about 98% identical here)."""
    path = _qdq(tmp_path)
    manifest = compile_file(capsys, path, tmp_path / "art")
    assert manifest["quantization"]["input"]["quantized_by"] == "model" and manifest["input"]["dtype"] == "float32"
    model = runtime.load(tmp_path / "art")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scale, zero_point = manifest["quantization"]["output"]["scale"], manifest["quantization"]["output"]["zero_point"]
    rng = np.random.default_rng(1)
    diffs = []
    for i in range(8):
        x = runtime.preprocess(seeded_image(rng), manifest) if i < 6 else rng.standard_normal(model.input_shape).astype(np.float32)
        ours, theirs = model(x), session.run(None, {"image": x})[0]
        levels = [np.round(v / np.float32(scale)).astype(np.int64) + zero_point for v in (ours, theirs)]
        diffs.append(np.abs(levels[0] - levels[1]).ravel())
        assert ours.argmax() == theirs.argmax()
    diffs = np.concatenate(diffs)
    assert diffs.max() <= 1 and (diffs == 0).mean() >= 0.9


def test_uint8_activations_are_refused(capsys, tmp_path):
    path = _qdq(tmp_path, QuantType.QUInt8)
    code, _, err = run_cli(capsys, "--from", path, "--output", tmp_path / "art")
    assert code == 1 and "activations must be int8" in error_line(err) and not (tmp_path / "art").exists()


class _Residual(torch.nn.Module):
    """conv -> ReLU6 -> (+ its 1x1 conv) -> global pool -> linear: a residual Add in a few small kernels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.branch = torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        y = torch.clamp(self.stem(x), 0, 6)
        y = y + self.branch(y)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _compare_with_ort(capsys, tmp_path, model, resolution, count):
    """(share of int8 outputs identical to ORT's, max difference in levels, top-1 all equal)."""
    fp32 = export_onnx(model.eval(), tmp_path / "fp32.onnx", resolution)
    path = tmp_path / "qdq.onnx"
    images = _Images(resolution=resolution)
    quantize_static(str(fp32), str(path), images, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
    manifest = compile_file(capsys, path, tmp_path / "art")
    loaded = runtime.load(tmp_path / "art")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scale, zero_point = manifest["quantization"]["output"]["scale"], manifest["quantization"]["output"]["zero_point"]
    rng = np.random.default_rng(1)
    diffs, same_top = [], True
    for i in range(count):
        x = runtime.preprocess(seeded_image(rng), manifest) if i % 2 == 0 else rng.standard_normal(loaded.input_shape).astype(np.float32)
        ours, theirs = loaded(x), session.run(None, {"image": x})[0]
        levels = [np.round(v / np.float32(scale)).astype(np.int64) + zero_point for v in (ours, theirs)]
        diffs.append(np.abs(levels[0] - levels[1]).ravel())
        same_top &= bool(ours.argmax() == theirs.argmax())
    diffs = np.concatenate(diffs)
    return float((diffs == 0).mean()), int(diffs.max()), same_top


def test_qdq_residual_add_matches_onnxruntime(capsys, tmp_path):
    """A QDQ Add of two layer outputs (ORT runs it as QLinearAdd) is the integer graph's residual add: 8 inputs,
    every output within one level of ORT's, at least 90% identical (100% here)."""
    exact, worst, same_top = _compare_with_ort(capsys, tmp_path, _Residual(), 32, 8)
    assert worst <= 1 and exact >= 0.9 and same_top


@pytest.mark.slow
def test_qdq_mobilenet_v2_matches_onnxruntime(capsys, tmp_path):
    """MobileNet v2 0.35-64 through quantize_static (10 residual Adds): 8 inputs, within one level of ORT,
    at least 90% identical (100% when measured)."""
    exact, worst, same_top = _compare_with_ort(capsys, tmp_path, create_model("mobilenet_v2", 0.35, seed=0), 64, 8)
    assert worst <= 1 and exact >= 0.9 and same_top
