"""Bring your own trained MobileNet: model files (ONNX, TFLite, torch.export), v2/v3 architectures, images.

Default run: ONNX files compared with ONNX Runtime on the same file, v2/v3 compared with PyTorch, .pt2, the
one-line errors, and an image through `run`. The TFLite checks need TensorFlow (heavy): marked slow.
"""

import hashlib
import json
import os
import warnings

import numpy as np
import pytest
import torch

from mnet_compile import runtime
from mnet_compile.architectures import MODELS, build_architecture
from mnet_compile.build import CompileRequest, compile_model
from mnet_compile.cli import main
from mnet_compile.model import build_model


def run_cli(capsys, *args):
    """(exit code, stdout, stderr without the "[  1.2s] step" progress lines)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    err = "".join(line for line in captured.err.splitlines(True) if not line.startswith("["))
    return code, captured.out, err


def compile_file(capsys, path, out, *extra):
    code, stdout, err = run_cli(capsys, "--from", path, "--output", out, *extra)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)  # (converters may print before)
    return json.loads((out / "manifest.json").read_text())


def export_onnx(model, path, resolution, dynamic=False):
    x = torch.zeros(1, 3, resolution, resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
        )
    return path


def close(got, ref, rel=1e-4):
    return np.abs(got - ref).max() <= rel * max(1.0, np.abs(ref).max())


# ------------------------------------------------------------------------------------------ ONNX


@pytest.mark.parametrize(
    "arch,alpha,resolution",
    [("mobilenet_v1", 0.25, 96), ("mobilenet_v1", 0.5, 128), ("mobilenet_v2", 0.5, 96)],
)
def test_onnx_matches_onnxruntime(capsys, tmp_path, arch, alpha, resolution):
    import onnxruntime as ort

    onnx_path = export_onnx(build_architecture(arch, alpha, seed=11), tmp_path / f"{arch}.onnx", resolution)
    out = tmp_path / "art"
    manifest = compile_file(capsys, onnx_path, out)
    assert manifest["input"] == {"name": "image", "shape": [1, 3, resolution, resolution], "dtype": "float32",
                                 "layout": "NCHW"}
    assert manifest["source"]["format"] == "onnx" and manifest["source"]["path"] == str(onnx_path)
    assert manifest["source"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert manifest["output"] == {"shape": [1, 1000], "dtype": "float32", "kind": "logits"}
    assert manifest["resolution"] == resolution and manifest["classes"] == 1000
    x = np.random.default_rng(2).standard_normal((1, 3, resolution, resolution)).astype("float32")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ref = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    got = runtime.load(str(out))(x)
    assert close(got, ref), np.abs(got - ref).max()


# ------------------------------------------------------------------------------------ v2 and v3


def test_architectures_are_torchvisions():
    """Parameter counts and module names of torchvision's mobilenet_v2 / v3_small / v3_large."""
    counts = {"mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032}
    for name, count in counts.items():
        model = build_architecture(name)
        assert sum(p.numel() for p in model.parameters()) == count, name
    keys = set(build_architecture("mobilenet_v3_large").state_dict())
    assert {"features.0.0.weight", "features.4.block.2.fc1.weight", "features.16.1.running_var",
            "classifier.3.bias"} <= keys
    keys = set(build_architecture("mobilenet_v2").state_dict())
    assert {"features.1.conv.0.0.weight", "features.2.conv.3.running_mean", "classifier.1.weight"} <= keys
    assert len(build_architecture("mobilenet_v3_small").features) == 13


@pytest.mark.parametrize(
    "name,alpha,resolution",
    [("mobilenet_v2", 1.0, 96), ("mobilenet_v3_small", 1.0, 96), ("mobilenet_v3_large", 1.0, 64)],
)
def test_architecture_matches_pytorch(tmp_path, name, alpha, resolution):
    out = compile_model(CompileRequest(model=name, alpha=alpha, resolution=resolution, seed=5, output=str(tmp_path / "a")),
                        log=lambda m: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == name and manifest["input"]["shape"] == [1, 3, resolution, resolution]
    x = np.random.default_rng(3).standard_normal((1, 3, resolution, resolution)).astype("float32")
    with torch.no_grad():
        ref = build_architecture(name, alpha, seed=5)(torch.from_numpy(x)).numpy()
    got = runtime.load(str(out))(x)
    assert close(got, ref), np.abs(got - ref).max()
    assert np.argmax(got) == np.argmax(ref)


def test_unknown_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--model", "mobilenet_v4", "--output", tmp_path / "o")
    assert code == 1 and "unknown model 'mobilenet_v4'" in err and len(err.strip().splitlines()) == 1
    assert MODELS[0] in err and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ .pt2


def test_pt2_dynamic_shape_needs_input_shape(capsys, tmp_path):
    model = build_model(0.25, seed=4)
    dims = {"x": {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (torch.zeros(1, 3, 64, 64),), dynamic_shapes=dims)
    path = tmp_path / "dyn.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "art"
    code, _, err = run_cli(capsys, "--from", path, "--output", out)
    assert code == 1 and "dynamic shape" in err and "--input-shape" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dyn.pt2"]
    manifest = compile_file(capsys, path, out, "--input-shape", "1,3,96,96")
    assert manifest["input"]["shape"] == [1, 3, 96, 96] and manifest["source"]["format"] == "pt2"
    x = np.random.default_rng(4).standard_normal((1, 3, 96, 96)).astype("float32")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert close(runtime.load(str(out))(x), ref)


# ------------------------------------------------------------------------------------ bad inputs


def _celu_onnx(path):
    from onnx import TensorProto, helper

    node = helper.make_node("Celu", ["image"], ["out"], name="my_celu")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = build_model(0.25, seed=1)
    return {
        "static": export_onnx(model, folder / "v1.onnx", 64),
        "dynamic": export_onnx(model, folder / "v1_dyn.onnx", 64, dynamic=True),
    }


def _bad_files(folder, small_onnx):
    text = folder / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    unknown = folder / "weights.bin"
    unknown.write_bytes(os.urandom(256))
    data = small_onnx["static"].read_bytes()
    truncated = folder / "cut.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    fake_tflite = folder / "cut.tflite"
    fake_tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)
    zipped = folder / "cut.pt2"
    zipped.write_bytes(b"PK\x03\x04" + os.urandom(100))
    state_dict = folder / "sd.pt2"
    torch.save(build_model(0.25).state_dict(), state_dict)
    class Kth(torch.nn.Module):  # aten.kthvalue: no Relax converter
        def forward(self, x):
            return torch.kthvalue(x.flatten(1), 3).values[:, None] + x.mean((2, 3))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kth = folder / "kth.pt2"
        torch.export.save(torch.export.export(Kth(), (torch.zeros(1, 3, 32, 32),)), str(kth))
    return [
        (["--from", folder / "missing.onnx"], "model file not found"),
        (["--from", kth], "unsupported operator kthvalue.default (node 'kthvalue')"),
        (["--from", text], "not a model file"),
        (["--from", unknown], "not a model file"),
        (["--from", state_dict], "not a model file"),
        (["--from", truncated], "truncated or damaged ONNX file"),
        (["--from", fake_tflite], "truncated or damaged TFLite file"),
        (["--from", zipped], "truncated or damaged torch.export archive"),
        (["--from", _celu_onnx(folder / "celu.onnx")], "unsupported operator Celu (node 'my_celu')"),
        (["--from", small_onnx["dynamic"]], "input 'image' has a dynamic shape [?, 3, 64, 64]; pass --input-shape"),
        (["--from", small_onnx["static"], "--input-shape", "1,3,96,96"], "does not fit input 'image'"),
        (["--from", small_onnx["static"], "--input-shape", "1,3,a"], "--input-shape must be positive integers"),
        (["--input-shape", "1,3,64,64"], "--input-shape applies to a model file"),
        (["--from", small_onnx["static"], "--model", "mobilenet_v2"], "--model chooses a built-in architecture"),
    ]


def test_bad_model_files(capsys, tmp_path, small_onnx):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    for args, message in _bad_files(inputs, small_onnx):
        out = work / "out"
        code, stdout, err = run_cli(capsys, *args, "--output", out)
        assert code == 1, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)
        assert not out.exists() and list(work.iterdir()) == [], f"artifact or temporary folder left by {args}"


def test_dynamic_onnx_with_input_shape(capsys, tmp_path, small_onnx):
    import onnxruntime as ort

    out = tmp_path / "art"
    manifest = compile_file(capsys, small_onnx["dynamic"], out, "--input-shape", "1,3,64,64")
    assert manifest["input"]["shape"] == [1, 3, 64, 64]
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype("float32")
    ref = ort.InferenceSession(str(small_onnx["dynamic"]), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert close(runtime.load(str(out))(x), ref)


# ---------------------------------------------------------------------------------------- images


def _torch_preprocess(rgb, resolution):
    """torchvision's Resize(resolution * 256 / 224) + CenterCrop + ToTensor + Normalize, in plain torch."""
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    h, w = rgb.shape[:2]
    short = int(resolution * 256 / 224)
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)
    top, left = int(round((size[0] - resolution) / 2)), int(round((size[1] - resolution) / 2))
    t = t[:, :, top:top + resolution, left:left + resolution] / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (t - mean) / std


def _make_image(path, height=183, width=271):
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(9)
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.float64)
    rgb = np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def test_image_through_run_matches_pytorch(capsys, compiled, tmp_path):
    from PIL import Image

    art = compiled(0.25, 128, seed=7)
    image = tmp_path / "cat.jpg"
    _make_image(image)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"name{i}\n" for i in range(1000)))
    code, out, err = run_cli(capsys, "run", art, image, "--labels", labels, "--repeat", "2")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "class" in line]
    got = [int(line.split()[2]) for line in lines]
    assert [line.split()[-1] for line in lines] == [f"name{i}" for i in got]

    rgb = np.asarray(Image.open(image).convert("RGB"))
    with torch.no_grad():
        logits = build_model(0.25, seed=7)(_torch_preprocess(rgb, 128))[0].numpy()
    assert got == list(np.argsort(-logits, kind="stable")[:5])
    manifest = runtime.load(str(art)).manifest
    assert np.abs(runtime.preprocess(rgb, manifest) - _torch_preprocess(rgb, 128).numpy()).max() < 1e-3


def test_preprocess_nhwc_and_sizes():
    base = {"channel_order": "RGB", "scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    nchw = {"input": {"shape": [1, 3, 96, 96], "layout": "NCHW", "dtype": "float32"}, "preprocessing": base}
    nhwc = {"input": {"shape": [1, 96, 96, 3], "layout": "NHWC", "dtype": "float32"}, "preprocessing": base}
    rng = np.random.default_rng(0)
    for size in [(96, 96), (50, 333), (640, 480)]:
        rgb = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        a, b = runtime.preprocess(rgb, nchw), runtime.preprocess(rgb, nhwc)
        assert a.shape == (1, 3, 96, 96) and b.shape == (1, 96, 96, 3)
        assert np.array_equal(a.transpose(0, 2, 3, 1), b)
        ref = _torch_preprocess(rgb, 96).numpy() if size != (96, 96) else None
        if ref is not None:
            ref = ref * np.array([0.229, 0.224, 0.225])[:, None, None] + np.array([0.485, 0.456, 0.406])[:, None, None]
            ref = (ref - np.array(base["mean"])[:, None, None]) / np.array(base["std"])[:, None, None]
            assert np.abs(a - ref).max() < 1e-3
    with pytest.raises(runtime.ArtifactError, match="shape"):
        runtime.preprocess(np.zeros((10, 10), np.uint8), nchw)


def test_bad_run_inputs(capsys, compiled, tmp_path):
    art = compiled(0.25, 128, seed=7)
    image = tmp_path / "ok.png"
    _make_image(image, 40, 40)
    short = tmp_path / "short.txt"
    short.write_text("a\nb\nc\n")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    cases = [
        ([image, "--labels", short], "labels file"),
        ([image, "--labels", tmp_path / "none.txt"], "labels file not found"),
        ([broken], "cannot decode image"),
        ([text], "cannot decode image"),
        ([tmp_path / "none.jpg"], "image file not found"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, "run", art, *args, "--repeat", "1")
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert "class" not in out
    code, _, err = run_cli(capsys, "run", art, image, "--labels", short)
    assert "has 3 names, the model has 1000 classes" in err


# ---------------------------------------------------------------------------------------- TFLite


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
    _make_image(image)
    code, stdout, err = run_cli(capsys, "run", out, image, "--repeat", "1")
    assert code == 0, err
    got = [int(line.split()[2]) for line in stdout.splitlines() if "class" in line]
    from PIL import Image

    x = runtime.preprocess(np.asarray(Image.open(image).convert("RGB")), manifest)
    assert x.shape == (1, resolution, resolution, 3) and -1.0 <= x.min() and x.max() <= 1.0
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    assert got == list(np.argsort(-interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])[:5])


@pytest.mark.slow
def test_tflite_truncated(capsys, tmp_path):
    path = _keras_tflite(tmp_path / "m.tflite", 0.25, 96)
    data = path.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = run_cli(capsys, "--from", cut, "--output", tmp_path / "o")
    assert code == 1 and "truncated or damaged TFLite file" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
