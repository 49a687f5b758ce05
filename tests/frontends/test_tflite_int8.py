"""Full-integer .tflite files (TFLiteConverter, tests/data/int8, made by tools/make_int8_tflite.py) imported as
the integer graph and checked against the LiteRT interpreter on the same file.

LiteRT runs int8 graphs through XNNPACK, which requantizes in float (float32(acc) * float32(scale), rounded
half to even); our graph requantizes in TFLite's fixed point (one rounding, half up). The two differ only where
acc * scale lies within float32's error of a .5: the reference with XNNPACK's requantization matches LiteRT on
every element (so the file is read exactly as LiteRT reads it), and the artifact matches the reference with
the fixed-point requantization on every element. A 1-level difference in a logit moves the softmax's int8
output by several levels near the top (1/256 steps of a probability), so after a softmax the bound is a share.
"""

import struct
from pathlib import Path

import numpy as np
import pytest

from mnet_compile.calibration import seeded_image
from mnet_compile.device import runtime
from mnet_compile.frontends.integer import Add, Softmax
from mnet_compile.frontends.tflite import from_tflite
from mnet_compile.models import create_model
from mnet_compile.peer_models import write_tflite

from ..helpers import error_line, run_cli
from ..int8_reference import integer_reference
from .files import compile_file

DATA = Path(__file__).parent.parent / "data" / "int8"


def _inputs(manifest, count: int) -> list[np.ndarray]:
    """Half seeded synthetic images preprocessed as `run` does ([-1, 1], NHWC), half clipped Gaussians."""
    rng = np.random.default_rng(11)
    shape = manifest["input"]["shape"]
    return [runtime.preprocess(seeded_image(rng), manifest) if i % 2 == 0
            else np.clip(rng.normal(0, 0.5, shape), -1, 1).astype(np.float32) for i in range(count)]  # fmt: skip


def litert_levels(path, manifest, inputs):
    """(our int8 outputs' levels are compared with) LiteRT's int8 output for each float input: an int8 input
    file gets the input quantized with its own scale and zero point, which is what the artifact does."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = manifest["quantization"]["output"]["scale"], manifest["quantization"]["output"]["zero_point"]
    levels = []
    for x in inputs:
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            x = np.clip(np.floor(x * np.float32(1 / s) + np.float32(0.5)) + z, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        levels.append(y.astype(np.int64) if y.dtype == np.int8 else np.round(y / np.float32(scale)).astype(np.int64) + zero_point)
    return levels


def our_levels(model, manifest, inputs):
    q = manifest["quantization"]["output"]
    return [np.round(model(x) / np.float32(q["scale"])).astype(np.int64) + q["zero_point"] for x in inputs]


def _check(capsys, tmp_path, name, count, exact_share, xnnpack_exact=True):
    """Compile DATA/name; returns (manifest, imported info). The artifact equals the fixed-point reference on
    every element, LiteRT the float-requantized one (`xnnpack_exact`; v2's ADDs in XNNPACK round their own way)."""
    path = DATA / name
    manifest = compile_file(capsys, path, tmp_path / "art")
    assert manifest["input"]["dtype"] == "float32" and manifest["input"]["layout"] == "NHWC"
    assert manifest["quantization"]["input"]["quantized_by"] == "model"
    _, info = from_tflite(str(path))
    inputs = _inputs(manifest, count)
    ours = our_levels(runtime.load(tmp_path / "art"), manifest, inputs)
    theirs = litert_levels(path, manifest, inputs)
    for x, got, ref in zip(inputs, ours, theirs):
        np.testing.assert_array_equal(got.reshape(-1), integer_reference(info.integer, x).reshape(-1).astype(np.int64))
        if xnnpack_exact:
            xnnpack = integer_reference(info.integer, x, requantize="float").reshape(-1).astype(np.int64)
            np.testing.assert_array_equal(xnnpack, ref.reshape(-1))
        assert got.argmax() == ref.argmax()
    diffs = np.abs(np.concatenate([g.reshape(-1) - r.reshape(-1) for g, r in zip(ours, theirs)]))
    assert (diffs == 0).mean() >= exact_share, (diffs == 0).mean()
    return manifest, info


def test_small_model_matches_litert_exactly(capsys, tmp_path):
    """PAD, CONV_2D, DEPTHWISE_CONV_2D, ReLU/ReLU6, ADD, AVERAGE_POOL_2D, the SHAPE/STRIDED_SLICE/PACK flatten,
    FULLY_CONNECTED, SOFTMAX, float in and out: every int8 output as LiteRT's on 16 inputs."""
    manifest, info = _check(capsys, tmp_path, "ops_32_float.tflite", 16, exact_share=1.0)
    assert manifest["output"]["kind"] == "probabilities" and manifest["output"]["shape"] == [1, 10]
    assert any(isinstance(layer, Add) for layer in info.integer.layers)
    assert isinstance(info.integer.layers[-1], Softmax) and info.integer.layers[0].padding == (0, 0, 1, 1)


def test_keras_mobilenet_v1_int8_io(capsys, tmp_path):
    """Keras MobileNet v1 0.25-128, int8 input and output: 6 inputs x 1000 probabilities; at least 99.5%
    identical to LiteRT's (measured 99.97% over 12 inputs: the rest where a logit's requantization falls on the
    other side of a .5, amplified by the softmax), the same top-1 on every input."""
    manifest, _ = _check(capsys, tmp_path, "mobilenet_v1_0.25_128_int8.tflite", 6, exact_share=0.995)
    assert manifest["input"]["shape"] == [1, 128, 128, 3] and manifest["preprocessing"]["scale"] == pytest.approx(1 / 127.5)


@pytest.mark.slow
def test_keras_mobilenet_v1_float_io(capsys, tmp_path):
    _check(capsys, tmp_path, "mobilenet_v1_0.25_128_float.tflite", 8, exact_share=0.995)


@pytest.mark.slow
def test_keras_mobilenet_v2_int8_io(capsys, tmp_path):
    """v2 0.35-96 with its 10 residual ADDs (XNNPACK's ADD rounds differently: no float-reference check)."""
    _check(capsys, tmp_path, "mobilenet_v2_0.35_96_int8.tflite", 8, exact_share=0.99, xnnpack_exact=False)


def _with_op_code(path: Path, old: str, new: int, out: Path) -> Path:
    """A copy of a .tflite file whose operator code `old` (a BuiltinOperator name) is replaced by `new`."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    buf = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(buf, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == getattr(BuiltinOperator, old):
            tab = code._tab
            buf[tab.Pos + tab.Offset(4)] = new  # deprecated_builtin_code (int8)
            if tab.Offset(10):
                struct.pack_into("<i", buf, tab.Pos + tab.Offset(10), new)  # builtin_code (int32)
    out.write_bytes(bytes(buf))
    return out


def test_unsupported_operator_is_named(capsys, tmp_path):
    from tflite.BuiltinOperator import BuiltinOperator

    path = _with_op_code(DATA / "ops_32_float.tflite", "SOFTMAX", BuiltinOperator.TANH, tmp_path / "tanh.tflite")
    code, _, err = run_cli(capsys, "--from", path, "--output", tmp_path / "art")
    line = error_line(err)
    assert code == 1 and "int8 TFLite: operator TANH is not supported" in line and "operator #" in line, line
    assert not (tmp_path / "art").exists()


def test_integer_files_take_the_integer_path_and_float_files_not(tmp_path):
    _, info = from_tflite(str(DATA / "mobilenet_v1_0.25_128_int8.tflite"))
    assert info.integer is not None and info.integer.input_layout == "NHWC" and info.manifest_input()["dtype"] == "float32"
    assert info.integer.input_scale == pytest.approx(2 / 255, rel=1e-2)  # Keras' [-1, 1] input, as calibrated
    write_tflite(create_model(alpha=0.25, seed=0), 32, tmp_path / "fp32.tflite")
    _, info = from_tflite(str(tmp_path / "fp32.tflite"))
    assert info.integer is None
