"""Model files for the frontend tests, and compiling one through the CLI."""

import json
import warnings

import torch

from ..helpers import run_cli


def export_onnx(model, path, resolution, dynamic=False):
    x = torch.zeros(1, 3, resolution, resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
        )
    return path


def compile_file(capsys, path, out, *extra) -> dict:
    """`mnet-compile --from PATH --output OUT`; returns the manifest."""
    code, stdout, err = run_cli(capsys, "--from", path, "--output", out, *extra)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)  # (converters may print before)
    return json.loads((out / "manifest.json").read_text())
