"""Model -> Relax: one entry point per source framework, weights bound as constants.

`from_torch` traces a built-in torch module; `load_model_file` reads a user's trained model file (ONNX, TFLite or
a torch.export archive), takes the input's name, shape, dtype and layout from the file, and turns every way such
a file can be wrong into a one-line MnetError: not a model file, truncated or damaged, unsupported operator
(named with its node), dynamic shape without --input-shape.
"""

from __future__ import annotations

import os

import tvm

from ..errors import MnetError
from .common import ModelInput, output_kind, parse_shape
from .torch import from_torch

__all__ = ["FORMATS", "ModelInput", "detect_format", "from_torch", "load_model_file", "parse_shape"]

FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "pt2"}


def detect_format(path) -> str:
    """The format of a model file, from its first bytes, else from its extension; or a one-line error."""
    path = str(path)
    if not os.path.exists(path):
        raise MnetError(f"model file not found: {path}")
    if not os.path.isfile(path):
        raise MnetError(f"{path}: not a model file (not a regular file)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise MnetError(f"cannot read model file {path}: {exc.strerror}") from None
    ext = os.path.splitext(path)[1].lower()
    if not head:
        raise MnetError(f"{path}: not a model file (it is empty)")
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:4] == b"PK\x03\x04":
        return "pt2"
    if ext in FORMATS:
        return FORMATS[ext]
    raise MnetError(f"{path}: not a model file (expected .onnx, .tflite or .pt2 (torch.export archive))")


def load_model_file(path, input_shape=None) -> tuple[tvm.IRModule, ModelInput]:
    """Import a model file into Relax, weights bound as constants; returns (module, input info)."""
    fmt = detect_format(path)
    input_shape = parse_shape(input_shape)
    from .onnx import from_onnx
    from .tflite import from_tflite
    from .torch import from_pt2

    loader = {"onnx": from_onnx, "tflite": from_tflite, "pt2": from_pt2}[fmt]
    mod, info = loader(str(path), input_shape)
    if info.integer is None:  # an integer model's loader says whether it ends in a softmax
        info.output_kind = output_kind(mod)
    if len(info.shape) != 4:
        raise MnetError(f"{path}: input '{info.name}' has shape {info.shape}; expected an image batch (rank 4)")
    return mod, info
