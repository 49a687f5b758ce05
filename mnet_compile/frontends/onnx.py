"""ONNX -> Relax (relax.frontend.onnx.from_onnx on onnx.load), unsupported operators named with their node."""

from __future__ import annotations

import os
import warnings

import tvm

from ..errors import MnetError
from .common import (
    ModelInput,
    check_input_count,
    first_line,
    fix_shape,
    guess_layout,
    import_error,
    output_shape,
    release_frontend,
    silence_stderr,
)


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
        raise MnetError(f"{path}: truncated or damaged ONNX file ({first_line(exc)})") from None
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
    known = initializers | {v.name for v in graph.input} | {o for n in graph.node for o in n.output} | {""}
    dangling = [(n, i) for n in graph.node for i in n.input if i not in known]
    if dangling:  # a damaged name (a flipped byte) or a cut graph: say so instead of the frontend's KeyError
        n, name = dangling[0]
        raise MnetError(f"{path}: damaged ONNX graph: node '{n.name or n.op_type}' reads {name!r}, which nothing produces")
    inputs = [v for v in graph.input if v.name not in initializers]
    check_input_count(path, [v.name for v in inputs])
    value = inputs[0]
    file_shape = _onnx_dims(value)
    if file_shape is None:
        if input_shape is None:
            raise MnetError(f"{path}: input '{value.name}' has no shape (unknown rank); pass --input-shape")
        file_shape = [None] * len(input_shape)
    shape = fix_shape(path, value.name, file_shape, input_shape, "onnx")
    try:
        dtype = str(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    except Exception:
        raise MnetError(f"{path}: input '{value.name}' has an unsupported element type") from None
    if model.graph.initializer and any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        try:
            onnx.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as exc:
            raise MnetError(f"{path}: cannot read its external weights: {first_line(exc)}") from None
    from .onnx_qdq import from_qdq, is_qdq

    if is_qdq(model):  # int8 QDQ: the integer graph, not the stock frontend's float math
        from .integer import to_relax

        if len(shape) != 4 or dtype != "float32":
            raise MnetError(f"{path}: QDQ model: expected a float32 NCHW image input, got {dtype} {shape}")
        integer = from_qdq(model, path, value.name, shape)
        info = ModelInput(value.name, shape, dtype, "NCHW", "onnx", integer=integer)
        mod = to_relax(integer)
        info.output_shape = output_shape(mod, path)
        return mod, info
    failure = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = relax_from_onnx(model, shape_dict={value.name: shape}, dtype_dict={value.name: dtype})
        except Exception as exc:
            failure, silenced = import_error(path, "ONNX", exc), silence_stderr()
    if failure:  # raised outside the except block, once the frontend's objects are freed
        raise release_frontend(failure, silenced)
    info = ModelInput(value.name, shape, dtype, guess_layout(shape, "onnx"), "onnx")
    info.output_shape = output_shape(mod, path)
    return mod, info
