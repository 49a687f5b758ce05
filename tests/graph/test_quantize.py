"""--quantize int8: the compiled integer graph against an independent integer reference (tests/int8_reference.py,
written from TFLite's integer semantics, not from the emitted Relax graph), and against fp32. The reference
reads the quantized weights and scales of the same IntegerModel the pipeline builds (same seeded weights,
same default calibration set).
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mnet_compile import frontends
from mnet_compile.calibration import calibration_inputs, seeded_image
from mnet_compile.device import devicekit, runtime
from mnet_compile.errors import MnetError
from mnet_compile.export.artifact import image_preprocessing
from mnet_compile.frontends.common import IMAGENET
from mnet_compile.frontends.integer import Add, pad_channels, quantize_multiplier
from mnet_compile.graph import passes
from mnet_compile.graph.quantize import activation_params, quantize_int8
from mnet_compile.models import create_model
from mnet_compile.pipeline import CompileRequest, integer_model

from ..helpers import error_line, need, random_input, run_cli
from ..int8_reference import integer_reference

ALPHA, RESOLUTION = 0.25, 128


@pytest.fixture(scope="module")
def quantized(compiled):
    """(the artifact's loaded model, the IntegerModel the pipeline built for it, the fp32 torch model)."""
    torch_model = create_model("mobilenet_v1", ALPHA, seed=0).eval()
    model = integer_model(CompileRequest(alpha=ALPHA, resolution=RESOLUTION, quantize="int8"))
    return runtime.load(compiled(ALPHA, RESOLUTION, quantize="int8")), model, torch_model


def _test_inputs(manifest):
    rng = np.random.default_rng(1)  # not the calibration set's seed
    images = [runtime.preprocess(seeded_image(rng), manifest) for _ in range(16)]
    return images + [random_input((1, 3, RESOLUTION, RESOLUTION), seed) for seed in (3, 4)]


def test_matches_the_integer_reference_exactly(quantized):
    loaded, model, _ = quantized
    q = loaded.manifest["quantization"]
    assert (q["input"]["scale"], q["input"]["zero_point"]) == (model.input_scale, model.input_zero_point)
    assert q["input"]["quantized_by"] == "model" and loaded.manifest["input"]["dtype"] == "float32"
    for x in _test_inputs(loaded.manifest):
        got = loaded(x)
        levels = np.round(got / np.float32(model.output_scale)).astype(np.int64) + model.output_zero_point
        expected = integer_reference(model, x)
        np.testing.assert_array_equal(levels, expected)  # every int8 logit, exactly
        dequantized = (expected.astype(np.float32) - model.output_zero_point) * np.float32(model.output_scale)
        np.testing.assert_allclose(got, dequantized, rtol=0, atol=1e-6)


def test_agrees_with_fp32(quantized):
    """16 seeded synthetic images and 2 Gaussian inputs: the same top-1 as PyTorch fp32 on all of them, and
    every logit within 5% of the largest fp32 logit (seeded weights, default calibration; about 2% here)."""
    loaded, _, torch_model = quantized
    for x in _test_inputs(loaded.manifest):
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(x)).numpy()
        got = loaded(x)
        assert got.argmax() == ref.argmax()
        assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_channel_padding_is_exact(quantized):
    """The VNNI graph pads 8-channel layers to 16 (zero filters): the same int8 logits as unpadded."""
    _, model, _ = quantized
    padded = dataclasses.replace(model, layers=pad_channels(model.layers))
    assert padded.layers[0].weight.shape[3] == 16 and model.layers[0].weight.shape[3] == 8  # alpha 0.25's stem
    x = random_input((1, 3, RESOLUTION, RESOLUTION), 5)
    np.testing.assert_array_equal(integer_reference(padded, x), integer_reference(model, x))


@need("g++")
def test_cpp_runner_gives_the_loaders_output(quantized, tmp_path):
    """The C++ runner (mnet-run, natively) takes the int8 artifact unchanged: float input, float logits."""
    loaded, _, _ = quantized
    kit = devicekit.host_runtime()
    app = devicekit.build_app(kit, out=tmp_path / "mnet-run")
    x = _test_inputs(loaded.manifest)[0]
    run = devicekit.run_app(app, Path(loaded.path) / "model.so", x, kit=kit)
    np.testing.assert_array_equal(run.logits.reshape(loaded(x).shape), loaded(x))


def test_quantize_multiplier_is_tflites():
    multipliers, exponents = quantize_multiplier(np.array([0.5, 0.75, 1 / 3, 1e-3, 0.0]))
    assert list(multipliers[:2]) == [1 << 30, 3 << 29] and list(exponents[:2]) == [0, 0]
    real = multipliers * np.exp2(exponents.astype(float) - 31)
    np.testing.assert_allclose(real[2:4], [1 / 3, 1e-3], rtol=2**-30)
    assert multipliers[4] == 0 and all((1 << 30) <= m < (1 << 31) for m in multipliers[:4])


def test_activation_params_cover_zero():
    scale, zero_point = activation_params(0.0, 6.0)  # a ReLU6 output: 0 is the lowest level
    assert zero_point == -128 and scale == pytest.approx(6 / 255)
    scale, zero_point = activation_params(0.5, 2.0)  # widened to include 0
    assert zero_point == -128 and scale == pytest.approx(2 / 255)
    assert activation_params(-1.0, 1.0)[1] == 0


def _v2(alpha, resolution):
    torch_model = create_model("mobilenet_v2", alpha, seed=0).eval()
    mod = passes.optimize(frontends.from_torch(torch_model, (1, 3, resolution, resolution)))
    inputs, _ = calibration_inputs(None, (1, 3, resolution, resolution))
    return quantize_int8(mod, inputs)[1], torch_model


def _agreement(model, torch_model, inputs, run):
    """(share of inputs with fp32's top-1, max |int8 - fp32| / max |fp32|) of `run` (x -> float logits)."""
    agree, errors = [], []
    for x in inputs:
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(x)).numpy()
        got = run(x)
        agree.append(got.argmax() == ref.argmax())
        errors.append(np.abs(got - ref).max() / np.abs(ref).max())
    return float(np.mean(agree)), float(max(errors))


def test_v2_residual_adds_are_quantized():
    """MobileNet v2 (0.35-64): its 10 residual adds become integer adds of two earlier layers' outputs, and the
    integer graph (by the reference) tracks fp32 on 16 seeded images: the same top-1 on at least 8, every
    logit within 35% of the largest (random weights, 1000 classes with close logits: the quantization noise
    of 17 random blocks moves the top-1; 10 of 16 here, error 25%)."""
    model, torch_model = _v2(0.35, 64)
    adds = [(i, layer) for i, layer in enumerate(model.layers) if isinstance(layer, Add)]
    assert len(adds) == 10 and all(0 <= layer.other < i - 1 for i, layer in adds)
    zero_point, scale = model.output_zero_point, model.output_scale
    dequantize = lambda x: (integer_reference(model, x).astype(np.float32) - zero_point) * scale  # noqa: E731
    shape = [1, 3, 64, 64]
    manifest = {"input": {"shape": shape, "dtype": "float32", "layout": "NCHW"}}
    manifest["preprocessing"] = image_preprocessing(IMAGENET, manifest["input"])
    agree, error = _agreement(model, torch_model, _test_inputs(manifest)[:16], dequantize)
    assert agree >= 0.5 and error <= 0.35, (agree, error)


@pytest.mark.slow
def test_v2_artifact_matches_the_integer_reference_exactly(compiled):
    """`--model mobilenet_v2 --quantize int8` compiled (0.35-96): every int8 logit as the reference's."""
    model, _ = _v2(0.35, 96)
    loaded = runtime.load(compiled(0.35, 96, model="mobilenet_v2", quantize="int8"))
    for x in _test_inputs(loaded.manifest)[:6]:
        levels = np.round(loaded(x) / np.float32(model.output_scale)).astype(np.int64) + model.output_zero_point
        np.testing.assert_array_equal(levels, integer_reference(model, x))


def test_other_models_are_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--model", "mobilenet_v3_small", "--alpha", "0.5", "--resolution", "64",
                           "--quantize", "int8", "--output", tmp_path / "out")  # fmt: skip
    assert code == 1 and error_line(err).startswith("error: --quantize int8: ")  # v3's hardswish, squeeze-excitation
    assert not (tmp_path / "out").exists()


def test_no_calibration_inputs_is_refused():
    mod = passes.optimize(frontends.from_torch(create_model(alpha=0.25), (1, 3, 32, 32)))
    with pytest.raises(MnetError, match="no calibration inputs"):
        quantize_int8(mod, [])
