"""ONNX QDQ models from ONNX Runtime's quantize_static: imported as the integer graph, checked against ORT."""

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from mnet_compile.calibration import seeded_image
from mnet_compile.device import runtime
from mnet_compile.models import create_model

from ..helpers import error_line, run_cli
from .files import compile_file, export_onnx

RESOLUTION = 128


class _Images(CalibrationDataReader):
    def __init__(self, count=4):
        rng = np.random.default_rng(0)
        self.inputs = iter([{"image": rng.standard_normal((1, 3, RESOLUTION, RESOLUTION)).astype(np.float32)} for _ in range(count)])

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
