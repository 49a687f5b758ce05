"""What every frontend shares: the input description recorded in the manifest, shape fixing, output facts."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import tvm

from ..errors import MnetError

# Default preprocessing per source: torchvision / PyTorch models take ImageNet mean/std on [0, 1]; TFLite files
# (Keras MobileNets, mode "tf") take [-1, 1]. The manifest records which one an artifact uses.
IMAGENET = {"channel_order": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
INCEPTION = {"channel_order": "RGB", "scale": 1 / 127.5, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]}


@dataclass
class ModelInput:
    """What the manifest records about an imported model file."""

    name: str
    shape: list[int]
    dtype: str
    layout: str  # "NCHW" or "NHWC"
    format: str  # "onnx", "tflite", "pt2"
    output_shape: list[int] = field(default_factory=list)
    output_kind: str = "logits"  # "probabilities" when the graph ends in a softmax (Keras models do)
    preprocessing: dict = field(default_factory=lambda: dict(IMAGENET))
    integer: object = None  # a quantized file's integer model (integer.IntegerModel), else None

    @property
    def resolution(self) -> int:
        h, w = (self.shape[1], self.shape[2]) if self.layout == "NHWC" else (self.shape[2], self.shape[3])
        return h if h == w else min(h, w)

    @property
    def classes(self) -> int:
        return int(self.output_shape[-1]) if self.output_shape else 0

    def manifest_input(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())[:300]


def import_error(path, fmt: str, exc: BaseException) -> str:
    """One line for a frontend that failed on a file it had accepted (often a damaged file)."""
    detail = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
    return f"{path}: cannot import this {fmt} file, damaged or using what the Relax frontend lacks ({detail})"


def silence_stderr() -> tuple[int, int]:
    """Point fd 2 at /dev/null (native code writes there); release_frontend puts it back."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    return saved, devnull


def release_frontend(message: str, silenced: tuple[int, int]) -> MnetError:
    """Free a failed frontend's objects with stderr silenced, then report: TVM's BlockBuilder warns on stderr
    ("destroyed with remaining blocks") when it is freed, which would otherwise break the one-line error."""
    import gc

    try:
        gc.collect()
    finally:
        os.dup2(silenced[0], 2)
        os.close(silenced[0])
        os.close(silenced[1])
    return MnetError(message)


def parse_shape(text) -> tuple[int, ...] | None:
    """--input-shape "1,3,224,224" -> (1, 3, 224, 224); None stays None."""
    if text is None or isinstance(text, tuple):
        return text
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise MnetError(f"--input-shape must be positive integers separated by commas (e.g. 1,3,224,224), got {text!r}")
    return shape


def guess_layout(shape, fmt: str) -> str:
    """TFLite convolutions are NHWC by definition; ONNX and torch ones NCHW unless the input is visibly NHWC."""
    if fmt == "tflite":
        return "NHWC"
    if len(shape) == 4 and shape[1] not in (1, 3) and shape[3] in (1, 3):
        return "NHWC"
    return "NCHW"


def fix_shape(path, name, file_shape, input_shape, fmt):
    """The file's input shape with its dynamic dims (None) filled from --input-shape, or a one-line error."""
    shown = "[" + ", ".join("?" if d is None else str(d) for d in file_shape) + "]"
    if input_shape is None:
        if any(d is None for d in file_shape):
            example = ",".join(str(d) if d is not None else ("1" if i == 0 else "224") for i, d in enumerate(file_shape))
            raise MnetError(
                f"{path}: input '{name}' has a dynamic shape {shown}; pass --input-shape (e.g. --input-shape {example})"
            )
        return [int(d) for d in file_shape]
    if len(input_shape) != len(file_shape) or any(d is not None and d != s for d, s in zip(file_shape, input_shape)):
        raise MnetError(
            f"--input-shape {','.join(map(str, input_shape))} does not fit input '{name}' of {path}, whose shape is {shown}"
        )
    return list(input_shape)


def output_shape(mod: tvm.IRModule, path) -> list[int]:
    ret = mod["main"].ret_ty if hasattr(mod["main"], "ret_ty") else None
    if ret is None:
        ret = mod["main"].body.ty
    if isinstance(ret, tvm.relax.TupleType):
        ret = ret.fields[0]
    try:
        return [int(d) for d in ret.shape]
    except Exception:
        raise MnetError(f"{path}: the model's output shape is not static ({ret}); pass --input-shape") from None


def output_kind(mod: tvm.IRModule) -> str:
    """"probabilities" if the value main returns is computed by a softmax, else "logits"."""
    bindings = {}
    body = mod["main"].body
    for block in body.blocks:
        for binding in block.bindings:
            bindings[binding.var.name] = binding.value
    expr = body.body
    for _ in range(4):  # follow var -> tuple -> var to the call that makes the first output
        if isinstance(expr, tvm.relax.Tuple):
            expr = expr.fields[0]
        elif isinstance(expr, tvm.relax.TupleGetItem):
            expr = expr.tuple_value
        elif hasattr(expr, "name") and expr.name in bindings:
            expr = bindings[expr.name]
        else:
            break
    op = getattr(expr, "op", None)
    return "probabilities" if isinstance(op, tvm.ir.Op) and op.name == "relax.nn.softmax" else "logits"


def check_input_count(path, names):
    if len(names) != 1:
        raise MnetError(f"{path}: the model has {len(names)} inputs ({', '.join(names) or 'none'}); expected one image input")
