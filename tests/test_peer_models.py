"""peer_models.write_tflite_int8: our int8 integer graph as a full-integer .tflite, read back by our own importer
(frontends/tflite_int8.py) and run by LiteRT (XNNPACK), the bench's `tflite-int8` peer."""

import dataclasses

import numpy as np
import pytest

from mnet_compile.frontends.integer import Add, Conv, MeanPool
from mnet_compile.frontends.tflite import from_tflite
from mnet_compile.peer_models import write_tflite_int8
from mnet_compile.pipeline import CompileRequest, integer_model

from .int8_reference import integer_reference

MULTIPLIER_RTOL = 2.0**-20  # float32 scales (24 bits) moved by up to 4 ulps cannot hold a 31-bit multiplier


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """(the IntegerModel of `--quantize int8` for MobileNet v1 0.25-96, its .tflite file)."""
    model = integer_model(CompileRequest(alpha=0.25, resolution=96, quantize="int8"))
    path = tmp_path_factory.mktemp("tfl8") / "model_int8.tflite"
    write_tflite_int8(model, path)
    return model, path


def _real(multiplier, exponent):
    return np.asarray(multiplier, np.float64) * np.exp2(np.asarray(exponent, np.float64) - 31)


def assert_same_records(ours, back) -> float:
    """Every field of every layer equal; multipliers as real values within MULTIPLIER_RTOL. Returns the share
    of conv multipliers that are equal as integers too."""
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in ours.layers]
    np.testing.assert_array_equal(back.scales, np.float32(ours.scales))  # the file holds float32 scales
    assert (back.input_scale, back.input_zero_point) == (np.float32(ours.input_scale), ours.input_zero_point)
    assert (back.output_scale, back.output_zero_point) == (np.float32(ours.output_scale), ours.output_zero_point)
    assert back.output_shape == ours.output_shape
    equal = []
    for a, b in zip(ours.layers, back.layers):
        pairs = [("multiplier", "exponent")] + ([("multipliers", "exponents")] if isinstance(a, Add) else [])
        for m, e in pairs:
            np.testing.assert_allclose(_real(getattr(b, m), getattr(b, e)), _real(getattr(a, m), getattr(a, e)),
                                       rtol=MULTIPLIER_RTOL, atol=0, err_msg=f"{type(a).__name__}.{m}")  # fmt: skip
        if isinstance(a, Conv):
            equal.append(np.asarray(a.multiplier) == np.asarray(b.multiplier))
        for f in dataclasses.fields(a):
            if f.name not in sum(pairs, ()):
                np.testing.assert_array_equal(np.asarray(getattr(b, f.name)), np.asarray(getattr(a, f.name)), err_msg=f.name)
    return float(np.concatenate(equal).mean())


def test_round_trip_gives_our_records(v1):
    """Read back with `--from`'s importer: weights, biases, strides, paddings (SAME, or PAD before a stride-2
    conv), zero points, clamps (fused RELU) and scales as ours, multipliers within float32's reach."""
    import tflite

    model, path = v1
    _, info = from_tflite(str(path))
    assert info.integer.input_layout == "NHWC" and info.shape == [1, 96, 96, 3]
    assert_same_records(model, info.integer)
    assert isinstance(model.layers[-2], MeanPool) and model.layers[-1].weight.shape[:2] == (1, 1)
    g = tflite.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
    dims = {g.Tensors(i).Name().decode(): g.Tensors(i).Quantization() for i in range(g.TensorsLength())}
    assert model.layers[1].groups > 1 == model.layers[2].groups
    assert dims["w1"].QuantizedDimension() == 3 and dims["w2"].QuantizedDimension() == 0  # 1HWC, OHWI


def test_v2_round_trip_with_adds_and_relu6(tmp_path):
    model = integer_model(CompileRequest(model="mobilenet_v2", alpha=0.35, resolution=32, quantize="int8"))
    write_tflite_int8(model, tmp_path / "v2.tflite")
    _, info = from_tflite(str(tmp_path / "v2.tflite"))
    assert sum(isinstance(layer, Add) for layer in model.layers) == 10
    assert_same_records(model, info.integer)


def test_litert_runs_our_integer_graph(v1):
    """LiteRT (XNNPACK) on 8 seeded inputs: every int8 logit equals our integer graph with XNNPACK's float
    requantization (tests/int8_reference.py) and, at this resolution (a 3x3 mean: no exact .5s), our fixed
    point's (what the artifact computes: tests/graph/test_quantize.py): measured 100% on 12 more inputs."""
    from ai_edge_litert.interpreter import Interpreter

    model, path = v1
    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == out["dtype"] == np.float32
    rng = np.random.default_rng(0)
    for _ in range(8):
        x = np.clip(rng.normal(0, 0.5, (1, 3, 96, 96)), -1, 1).astype(np.float32)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        levels = np.round(y / np.float32(model.output_scale)).astype(np.int64) + model.output_zero_point
        np.testing.assert_array_equal(levels, integer_reference(model, x, requantize="float"))
        np.testing.assert_array_equal(levels, integer_reference(model, x))


def test_records_without_scales_are_refused(v1, tmp_path):
    model, _ = v1
    with pytest.raises(ValueError, match="no output scale"):
        write_tflite_int8(dataclasses.replace(model, scales=[]), tmp_path / "x.tflite")
