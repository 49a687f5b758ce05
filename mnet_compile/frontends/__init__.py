"""Model -> Relax: one entry point per source framework, weights bound as constants.

`from_torch` traces a built-in torch module; `load_model_file` reads a user's trained model file (ONNX, TFLite or
a torch.export archive), takes the input's name, shape, dtype and layout from the file, and turns every way such
a file can be wrong into a one-line MnetError: not a model file, truncated or damaged, unsupported operator
(named with its node), dynamic shape without --input-shape.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field

import tvm

from .errors import MnetError

FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "pt2"}

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

    @property
    def resolution(self) -> int:
        h, w = (self.shape[1], self.shape[2]) if self.layout == "NHWC" else (self.shape[2], self.shape[3])
        return h if h == w else min(h, w)

    @property
    def classes(self) -> int:
        return int(self.output_shape[-1]) if self.output_shape else 0

    def manifest_input(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())[:300]


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


def _fix_shape(path, name, file_shape, input_shape, fmt):
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


def _output_shape(mod: tvm.IRModule, path) -> list[int]:
    ret = mod["main"].ret_ty if hasattr(mod["main"], "ret_ty") else None
    if ret is None:
        ret = mod["main"].body.ty
    if isinstance(ret, tvm.relax.TupleType):
        ret = ret.fields[0]
    try:
        return [int(d) for d in ret.shape]
    except Exception:
        raise MnetError(f"{path}: the model's output shape is not static ({ret}); pass --input-shape") from None


def _output_kind(mod: tvm.IRModule) -> str:
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


def _check_input_count(path, names):
    if len(names) != 1:
        raise MnetError(f"{path}: the model has {len(names)} inputs ({', '.join(names) or 'none'}); expected one image input")


# ---------------------------------------------------------------------------------------------- torch


def from_torch(model, input_shape: tuple[int, ...]) -> tvm.IRModule:
    """Trace a torch module with torch.export and import it into Relax (weights become constants)."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    example = torch.zeros(input_shape, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(model.eval(), (example,))
        except Exception as exc:
            raise MnetError(f"torch.export failed: {str(exc).splitlines()[0]}") from None
        return from_exported_program(program)


def from_pt2(path, input_shape=None) -> tuple[tvm.IRModule, ModelInput]:
    """A torch.export archive (torch.export.save) -> Relax."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise MnetError(f"{path}: truncated or damaged torch.export archive ({_first_line(exc)})") from None
    if bad is not None:
        raise MnetError(f"{path}: truncated or damaged torch.export archive (bad CRC in {bad})")
    if any(n.endswith("/data.pkl") for n in names):
        raise MnetError(f"{path}: not a model file: a torch.save file (a state_dict?), not a torch.export archive; "
                        "pass a state_dict of the built-in models with --weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.load(path)
        except Exception as exc:
            raise MnetError(f"{path}: cannot read the torch.export archive: {_first_line(exc)}") from None
        user = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        _check_input_count(path, user)
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user[0])
        val = node.meta.get("val")
        file_shape = [int(d) if isinstance(d, int) else None for d in val.shape]
        dtype = str(val.dtype).replace("torch.", "")
        shape = _fix_shape(path, user[0], file_shape, input_shape, "pt2")
        if any(d is None for d in file_shape):  # re-trace with the fixed shape: Relax then sees static shapes
            try:
                program = torch.export.export(program.module(), (torch.zeros(shape, dtype=val.dtype),))
            except Exception as exc:
                raise MnetError(f"{path}: cannot fix the input shape to {shape}: {_first_line(exc)}") from None
        try:
            mod = from_exported_program(program)
        except AssertionError as exc:
            match = re.search(r"Unsupported function types \[(.*)\]", str(exc))
            if not match:
                raise MnetError(f"{path}: cannot import: {_first_line(exc)}") from None
            ops = [o.strip(" '\"") for o in match.group(1).split(",")]
            nodes = [n.name for n in program.graph.nodes if n.op == "call_function"
                     and getattr(n.target, "__name__", "") in ops]
            where = f" (node '{nodes[0]}')" if nodes else ""
            raise MnetError(f"{path}: unsupported operator {ops[0]}{where}: the Relax torch frontend cannot import it") from None
        except MnetError:
            raise
        except Exception as exc:
            raise MnetError(f"{path}: cannot import: {_first_line(exc)}") from None
    info = ModelInput(user[0], shape, dtype, guess_layout(shape, "pt2"), "pt2")
    info.output_shape = _output_shape(mod, path)
    return mod, info


# ---------------------------------------------------------------------------------------------- ONNX


def _onnx_dims(value_info):
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]


def from_onnx(path, input_shape=None) -> tuple[tvm.IRModule, ModelInput]:
    """An ONNX file -> Relax (relax.frontend.onnx.from_onnx on onnx.load)."""
    import onnx
    from onnx import helper

    with open(path, "rb") as f:
        head = f.read(1)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        if head != b"\x08":  # a ModelProto starts with ir_version (field 1, varint)
            raise MnetError(f"{path}: not a model file (not an ONNX protobuf)") from None
        raise MnetError(f"{path}: truncated or damaged ONNX file ({_first_line(exc)})") from None
    graph = model.graph
    if head != b"\x08" or not model.ir_version or not len(graph.node):
        raise MnetError(f"{path}: not a model file (no ONNX graph in it)")
    if not model.opset_import or not len(graph.output):
        raise MnetError(f"{path}: truncated or damaged ONNX file (no opset or no graph output)")

    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convert_map = _get_convert_map()
    unsupported = [
        (i, n) for i, n in enumerate(graph.node)
        if n.domain not in ("", "ai.onnx") or (n.op_type not in convert_map and n.op_type not in ("Constant", "If"))
    ]
    if unsupported:
        i, n = unsupported[0]
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        more = f"; {len(unsupported) - 1} more unsupported node(s)" if len(unsupported) > 1 else ""
        raise MnetError(
            f"{path}: unsupported operator {op} (node '{n.name or f'#{i}'}'): the Relax ONNX frontend cannot import it{more}"
        )
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    _check_input_count(path, [v.name for v in inputs])
    value = inputs[0]
    file_shape = _onnx_dims(value)
    if file_shape is None:
        if input_shape is None:
            raise MnetError(f"{path}: input '{value.name}' has no shape (unknown rank); pass --input-shape")
        file_shape = [None] * len(input_shape)
    shape = _fix_shape(path, value.name, file_shape, input_shape, "onnx")
    try:
        dtype = str(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    except Exception:
        raise MnetError(f"{path}: input '{value.name}' has an unsupported element type") from None
    if model.graph.initializer and any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        try:
            onnx.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as exc:
            raise MnetError(f"{path}: cannot read its external weights: {_first_line(exc)}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = relax_from_onnx(model, shape_dict={value.name: shape}, dtype_dict={value.name: dtype})
        except Exception as exc:
            raise MnetError(f"{path}: cannot import: {_first_line(exc)}") from None
    info = ModelInput(value.name, shape, dtype, guess_layout(shape, "onnx"), "onnx")
    info.output_shape = _output_shape(mod, path)
    return mod, info


# ---------------------------------------------------------------------------------------------- TFLite


def _tflite_converter():
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    class NamingConverter(OperatorConverter):
        """The stock converter, but an unsupported operator is reported with the tensor it computes."""

        path = ""

        def check_unsupported_ops(self):
            for index in range(self.subgraph.OperatorsLength()):
                op = self.subgraph.Operators(index)
                try:
                    name = self.get_op_code_str(op)
                except NotImplementedError:
                    name = f"code {self.model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()}"
                if name not in self.convert_map:
                    outputs = op.OutputsAsNumpy()
                    tensor = self.subgraph.Tensors(int(outputs[0])).Name().decode() if len(outputs) else "?"
                    raise MnetError(
                        f"{self.path}: unsupported operator {name} (operator #{index}, output tensor '{tensor}'): "
                        "the Relax TFLite frontend cannot import it"
                    )
            super().check_unsupported_ops()

        def convert_reshape(self, op):
            """A RESHAPE whose target shape is computed (SHAPE/STRIDED_SLICE/PACK, from Keras' batch dim of -1):
            the stock converter cannot take a computed shape; the file's static output shape is the answer."""
            inputs = self.get_input_tensors(op)
            output = self.get_output_tensors(op)[0]
            if len(inputs) == 2 and self.has_expr(inputs[1].tensor_idx) and not inputs[0].qnn_params:
                shape = [int(d) for d in output.tensor.ShapeAsNumpy()]
                if shape and all(d > 0 for d in shape):
                    return tvm.relax.op.reshape(self.get_expr(inputs[0].tensor_idx), shape)
            return super().convert_reshape(op)

    return NamingConverter


def from_tflite(path, input_shape=None) -> tuple[tvm.IRModule, ModelInput]:
    """A TFLite flatbuffer -> Relax (relax.frontend.tflite.from_tflite), kept NHWC as the file is."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise MnetError(f"{path}: not a model file (no TFLite 'TFL3' identifier)")
    try:
        import tflite
    except ImportError:
        raise MnetError("reading .tflite files needs the Python package tflite (pip install tflite==2.18.0)") from None
    from tflite.TensorType import TensorType

    type_names = {v: k.lower() for k, v in vars(TensorType).items() if not k.startswith("_")}
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        for i in range(model.BuffersLength()):  # touches every weight: a cut-off file fails here
            b = model.Buffers(i)
            b.DataAsNumpy()
            if b.Offset() > 1 and b.Offset() + b.Size() > len(buf):
                raise ValueError(f"buffer {i} ends past the end of the file")
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        subgraph = model.Subgraphs(0)
        names, shapes, dtypes = [], [], []
        for k in range(subgraph.InputsLength()):
            tensor = subgraph.Tensors(subgraph.Inputs(k))
            names.append(tensor.Name().decode())
            shape = [int(d) for d in tensor.ShapeAsNumpy()]
            signature = tensor.ShapeSignatureAsNumpy()
            if not isinstance(signature, int) and len(signature) == len(shape):
                # batch -1 in the signature: the file's own shape (1) is what the interpreter uses too
                shape = [None if int(s) < 0 and i > 0 else d for i, (d, s) in enumerate(zip(shape, signature))]
            shapes.append(shape)
            dtypes.append(type_names.get(tensor.Type(), str(tensor.Type())))
    except Exception as exc:
        raise MnetError(f"{path}: truncated or damaged TFLite file ({_first_line(exc)})") from None
    _check_input_count(path, names)
    shape = _fix_shape(path, names[0], shapes[0], input_shape, "tflite")
    converter = _tflite_converter()
    converter.path = str(path)
    from tvm.relax.frontend.tflite import from_tflite as relax_from_tflite

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = relax_from_tflite(model, shape_dict={names[0]: tuple(shape)}, dtype_dict={names[0]: dtypes[0]},
                                    op_converter=converter)
        except MnetError:
            raise
        except Exception as exc:
            raise MnetError(f"{path}: cannot import: {_first_line(exc)}") from None
    if mod["main"].attrs is not None and "params" in mod["main"].attrs:  # copies of the weights, bound already
        mod["main"] = mod["main"].without_attr("params")
    info = ModelInput(names[0], shape, dtypes[0], "NHWC", "tflite", preprocessing=dict(INCEPTION))
    info.output_shape = _output_shape(mod, path)
    return mod, info


# ---------------------------------------------------------------------------------------------- dispatch


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
    loader = {"onnx": from_onnx, "tflite": from_tflite, "pt2": from_pt2}[fmt]
    mod, info = loader(str(path), input_shape)
    info.output_kind = _output_kind(mod)
    if len(info.shape) != 4:
        raise MnetError(f"{path}: input '{info.name}' has shape {info.shape}; expected an image batch (rank 4)")
    return mod, info
