"""TFLite files: NHWC in, kept NHWC; numbers checked against the LiteRT interpreter.

The default run needs no TensorFlow: peer_models writes a MobileNet v1 TFLite file directly (BatchNorm folded,
fused ReLU, as TFLite's converter emits it) and LiteRT (ai-edge-litert) runs it. The slow checks convert Keras
MobileNets with TensorFlow (`pip install tensorflow-cpu==2.21.0`; without it they skip and say so).
"""

import numpy as np
import pytest

from mnet_compile.device import runtime
from mnet_compile.models import create_model
from mnet_compile.peer_models import write_tflite

from ..helpers import assert_matches, error_line, make_image, pytorch_reference, random_input, run_cli
from .files import compile_file


def litert(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("alpha,resolution", [(0.25, 96), (0.5, 64)])
def test_tflite_file_matches_litert(capsys, tmp_path, alpha, resolution):
    path = tmp_path / "v1.tflite"
    write_tflite(create_model(alpha=alpha, seed=3), resolution, path)
    out = tmp_path / "art"
    manifest = compile_file(capsys, path, out)
    assert manifest["input"] == {"name": "x", "shape": [1, resolution, resolution, 3], "dtype": "float32", "layout": "NHWC"}
    assert manifest["source"]["format"] == "tflite" and manifest["output"]["kind"] == "logits"
    assert manifest["preprocessing"]["scale"] == 1 / 127.5  # Keras MobileNets' [-1, 1]
    x = random_input((1, resolution, resolution, 3), seed=resolution)
    ref = litert(path, x)
    assert_matches(ref, pytorch_reference(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), alpha=alpha, seed=3))
    assert_matches(runtime.load(str(out))(x), ref)


def _keras_tflite(path, alpha, resolution, seed=0):
    """Keras MobileNet (weights=None, weights randomized incl. BN statistics) converted with TFLiteConverter."""
    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.applications.MobileNet(input_shape=(resolution, resolution, 3), alpha=alpha, weights=None)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape, name = tuple(weight.shape), weight.path if hasattr(weight, "path") else weight.name
        if "moving_variance" in name:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "beta" in name or "moving_mean" in name or "bias" in name:
            value = 0.1 * rng.standard_normal(shape)
        else:  # conv kernels HWIO, depthwise HWC1
            fan_in = shape[0] * shape[1] * (shape[2] if shape[-1] != 1 else 1)
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            if shape[-1] == 1000:  # the classifier: logits spread enough for a clear top-5
                value *= 10
        weight.assign(value.astype("float32"))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.write_bytes(converter.convert())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("alpha,resolution", [(0.25, 128), (0.5, 128), (0.25, 160), (0.5, 160)])
def test_tflite_keras_mobilenet_matches_interpreter(capsys, tmp_path, alpha, resolution):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tflite")
    path = _keras_tflite(tmp_path / f"mobilenet_{alpha}_{resolution}.tflite", alpha, resolution)
    out = tmp_path / "art"
    manifest = compile_file(capsys, path, out)
    assert manifest["input"]["layout"] == "NHWC" and manifest["input"]["shape"] == [1, resolution, resolution, 3]
    assert manifest["source"]["format"] == "tflite" and manifest["output"]["kind"] == "probabilities"
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    model = runtime.load(str(out))
    refs = []
    for seed in range(2):
        x = np.random.default_rng(seed).uniform(-1, 1, (1, resolution, resolution, 3)).astype("float32")
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        ref = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        got = model(x)
        assert np.abs(np.log(got) - np.log(ref)).max() < 1e-3, np.abs(np.log(got) - np.log(ref)).max()
        assert list(np.argsort(-got[0])[:5]) == list(np.argsort(-ref[0])[:5])
        refs.append(ref)
    assert np.abs(np.log(refs[0]) - np.log(refs[1])).max() > 0.1, "the output does not depend on the input"
    # an image through `run`: NHWC input, [-1, 1] scaling, top-5 as the interpreter gives on the same input
    image = tmp_path / "img.jpg"
    make_image(image)
    code, stdout, err = run_cli(capsys, "run", out, image, "--repeat", "1")
    assert code == 0, err
    got = [int(line.split()[2]) for line in stdout.splitlines() if "class" in line]
    from PIL import Image

    x = runtime.preprocess(np.asarray(Image.open(image).convert("RGB")), manifest)
    assert x.shape == (1, resolution, resolution, 3) and -1.0 <= x.min() and x.max() <= 1.0
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    assert got == list(np.argsort(-interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])[:5])


def test_tflite_truncated(capsys, tmp_path):
    path = tmp_path / "m.tflite"
    write_tflite(create_model(alpha=0.25), 96, path)
    data = path.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = run_cli(capsys, "--from", cut, "--output", tmp_path / "o")
    assert code == 1 and "truncated or damaged TFLite file" in error_line(err)
    assert not (tmp_path / "o").exists()
