"""Every way a model file can be wrong is one line on stderr, exit 1, and nothing left behind."""

import os
import warnings

import torch

from mnet_compile.models import create_model

from ..helpers import error_line, run_cli


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
    torch.save(create_model(alpha=0.25).state_dict(), state_dict)

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
        (["--from", small_onnx["static"], "--alpha", "0.5"], "--alpha applies to the built-in models"),
        (["--from", small_onnx["static"], "--seed", "3"], "--seed applies to the built-in models"),
    ]


def test_bad_model_files(capsys, tmp_path, small_onnx):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    for args, message in _bad_files(inputs, small_onnx):
        out = work / "out"
        code, _, err = run_cli(capsys, *args, "--output", out)
        assert code == 1 and message in error_line(err), (args, err)
        assert not out.exists() and list(work.iterdir()) == [], f"artifact or temporary folder left by {args}"
