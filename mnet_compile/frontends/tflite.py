"""TFLite -> Relax (relax.frontend.tflite.from_tflite), kept NHWC as the file is; full-integer files -> tflite_int8."""

from __future__ import annotations

import warnings

import tvm

from ..errors import MnetError
from .common import (
    INCEPTION,
    ModelInput,
    check_input_count,
    first_line,
    fix_shape,
    import_error,
    output_shape,
    release_frontend,
    silence_stderr,
)


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
        raise MnetError(f"{path}: truncated or damaged TFLite file ({first_line(exc)})") from None
    check_input_count(path, names)
    shape = fix_shape(path, names[0], shapes[0], input_shape, "tflite")
    from .tflite_int8 import from_tflite_int8, is_integer

    if is_integer(model):  # full-integer: the integer graph, not the stock frontend
        from .integer import Softmax, to_relax

        if len(shape) != 4:
            raise MnetError(f"{path}: int8 TFLite: expected an NHWC image input, got {shape}")
        integer = from_tflite_int8(model, path, names[0], shape)
        info = ModelInput(names[0], shape, "float32", "NHWC", "tflite", preprocessing=dict(INCEPTION), integer=integer)
        info.output_kind = "probabilities" if isinstance(integer.layers[-1], Softmax) else "logits"
        mod = to_relax(integer)
        info.output_shape = output_shape(mod, path)
        return mod, info
    converter = _tflite_converter()
    converter.path = str(path)
    from tvm.relax.frontend.tflite import from_tflite as relax_from_tflite

    failure = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = relax_from_tflite(model, shape_dict={names[0]: tuple(shape)}, dtype_dict={names[0]: dtypes[0]},
                                    op_converter=converter)
        except MnetError as exc:
            failure, silenced = str(exc), silence_stderr()
        except Exception as exc:
            failure, silenced = import_error(path, "TFLite", exc), silence_stderr()
    if failure:
        raise release_frontend(failure, silenced)
    if mod["main"].attrs is not None and "params" in mod["main"].attrs:  # copies of the weights, bound already
        mod["main"] = mod["main"].without_attr("params")
    info = ModelInput(names[0], shape, dtypes[0], "NHWC", "tflite", preprocessing=dict(INCEPTION))
    info.output_shape = output_shape(mod, path)
    return mod, info
