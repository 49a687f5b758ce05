"""The benchmark peers' model files for one MobileNet v1: ONNX (torch.onnx), its int8 QDQ (ONNX Runtime's
quantizer) and TFLite (written directly).

The TFLite file is written with the flatbuffer schema of the `tflite` package, BatchNorm folded, NHWC, ReLU
fused into each conv as a TFLite converter would emit it, so LiteRT/XNNPACK runs the same weights as
PyTorch without TensorFlow being installed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def write_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), str(path), input_names=["x"], output_names=["logits"], dynamo=False)


def _folded_convs(model: nn.Module):
    """(conv module, weight, bias) with BatchNorm folded, in network order."""
    for block in model.features:
        conv, bn = block[0], block[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        yield conv, weight.detach().numpy(), bias.detach().numpy()


class _TFLiteWriter:
    def __init__(self):
        import flatbuffers
        import tflite

        self.fb, self.tfl = flatbuffers, tflite
        self.b = flatbuffers.Builder(1 << 20)
        self.buffers = [b""]
        self.tensors = []  # (name, shape, type, buffer index)
        self.operators = []  # (opcode, inputs, outputs, options type, options builder)
        self.opcodes = []

    def tensor(self, name, shape, data: np.ndarray | None = None, dtype=None) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
            dtype = data.dtype
        kind = self.tfl.TensorType.INT32 if np.dtype(dtype or np.float32) == np.int32 else self.tfl.TensorType.FLOAT32
        self.tensors.append((name, list(shape), kind, buffer))
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, options_type=0, options=None):
        if code not in self.opcodes:
            self.opcodes.append(code)
        self.operators.append((self.opcodes.index(code), inputs, outputs, options_type, options))

    def _vector(self, start, values, prepend):
        start(self.b, len(values))
        for v in reversed(values):
            prepend(v)
        return self.b.EndVector()

    def finish(self, inputs, outputs) -> bytes:
        b, t = self.b, self.tfl
        buffers = []
        for data in self.buffers:
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
            t.BufferStart(b)
            if vec is not None:
                t.BufferAddData(b, vec)
            buffers.append(t.BufferEnd(b))
        tensors = []
        for name, shape, kind, buffer in self.tensors:
            name_off = b.CreateString(name)
            shape_off = self._vector(t.TensorStartShapeVector, shape, b.PrependInt32)
            t.TensorStart(b)
            t.TensorAddShape(b, shape_off)
            t.TensorAddType(b, kind)
            t.TensorAddBuffer(b, buffer)
            t.TensorAddName(b, name_off)
            tensors.append(t.TensorEnd(b))
        operators = []
        for opcode, ins, outs, options_type, options in self.operators:
            options_off = options(b) if options else None
            ins_off = self._vector(t.OperatorStartInputsVector, ins, b.PrependInt32)
            outs_off = self._vector(t.OperatorStartOutputsVector, outs, b.PrependInt32)
            t.OperatorStart(b)
            t.OperatorAddOpcodeIndex(b, opcode)
            t.OperatorAddInputs(b, ins_off)
            t.OperatorAddOutputs(b, outs_off)
            if options_off is not None:
                t.OperatorAddBuiltinOptionsType(b, options_type)
                t.OperatorAddBuiltinOptions(b, options_off)
            operators.append(t.OperatorEnd(b))
        codes = []
        for code in self.opcodes:
            t.OperatorCodeStart(b)
            t.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            t.OperatorCodeAddBuiltinCode(b, code)
            t.OperatorCodeAddVersion(b, 1)
            codes.append(t.OperatorCodeEnd(b))
        tensors_off = self._vector(t.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative)
        ops_off = self._vector(t.SubGraphStartOperatorsVector, operators, b.PrependUOffsetTRelative)
        in_off = self._vector(t.SubGraphStartInputsVector, inputs, b.PrependInt32)
        out_off = self._vector(t.SubGraphStartOutputsVector, outputs, b.PrependInt32)
        name = b.CreateString("main")
        t.SubGraphStart(b)
        t.SubGraphAddTensors(b, tensors_off)
        t.SubGraphAddOperators(b, ops_off)
        t.SubGraphAddInputs(b, in_off)
        t.SubGraphAddOutputs(b, out_off)
        t.SubGraphAddName(b, name)
        subgraph = t.SubGraphEnd(b)
        subgraphs = self._vector(t.ModelStartSubgraphsVector, [subgraph], b.PrependUOffsetTRelative)
        codes_off = self._vector(t.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
        buffers_off = self._vector(t.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
        description = b.CreateString("mnet-compile benchmark peer")
        t.ModelStart(b)
        t.ModelAddVersion(b, 3)
        t.ModelAddOperatorCodes(b, codes_off)
        t.ModelAddSubgraphs(b, subgraphs)
        t.ModelAddDescription(b, description)
        t.ModelAddBuffers(b, buffers_off)
        b.Finish(t.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def write_tflite(model: nn.Module, resolution: int, path: Path) -> None:
    """MobileNet v1 (models/mobilenet_v1.py) as a float32 NHWC TFLite file with the same (BN-folded) weights."""
    import tflite as t

    w = _TFLiteWriter()
    size, channels = resolution, 3
    x = w.tensor("x", [1, size, size, channels], dtype=np.float32)
    graph_input = x
    for i, (conv, weight, bias) in enumerate(_folded_convs(model)):
        stride, kernel, out_channels = conv.stride[0], conv.kernel_size[0], conv.out_channels
        if kernel == 3:  # torch pads 1 on every side; TFLite's SAME would pad bottom/right only at stride 2
            pads = w.tensor(f"pads{i}", [4, 2], np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))
            padded = w.tensor(f"padded{i}", [1, size + 2, size + 2, channels], dtype=np.float32)
            w.op(t.BuiltinOperator.PAD, [x, pads], [padded])
            x = padded
        size = (size + 2 * (kernel // 2) - kernel) // stride + 1
        depthwise = conv.groups > 1
        # TFLite filters: conv OHWI, depthwise 1HWC.
        filt = weight.transpose(1, 2, 3, 0) if depthwise else weight.transpose(0, 2, 3, 1)
        f = w.tensor(f"w{i}", filt.shape, np.ascontiguousarray(filt, np.float32))
        bb = w.tensor(f"b{i}", bias.shape, bias.astype(np.float32))
        y = w.tensor(f"y{i}", [1, size, size, out_channels], dtype=np.float32)

        def options(b, depthwise=depthwise, stride=stride):
            mod = t
            if depthwise:
                mod.DepthwiseConv2DOptionsStart(b)
                mod.DepthwiseConv2DOptionsAddPadding(b, t.Padding.VALID)
                mod.DepthwiseConv2DOptionsAddStrideW(b, stride)
                mod.DepthwiseConv2DOptionsAddStrideH(b, stride)
                mod.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
                mod.DepthwiseConv2DOptionsAddFusedActivationFunction(b, t.ActivationFunctionType.RELU)
                mod.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
                mod.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
                return mod.DepthwiseConv2DOptionsEnd(b)
            mod.Conv2DOptionsStart(b)
            mod.Conv2DOptionsAddPadding(b, t.Padding.VALID)
            mod.Conv2DOptionsAddStrideW(b, stride)
            mod.Conv2DOptionsAddStrideH(b, stride)
            mod.Conv2DOptionsAddFusedActivationFunction(b, t.ActivationFunctionType.RELU)
            mod.Conv2DOptionsAddDilationWFactor(b, 1)
            mod.Conv2DOptionsAddDilationHFactor(b, 1)
            return mod.Conv2DOptionsEnd(b)

        code = t.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else t.BuiltinOperator.CONV_2D
        kind = t.BuiltinOptions.DepthwiseConv2DOptions if depthwise else t.BuiltinOptions.Conv2DOptions
        w.op(code, [x, f, bb], [y], kind, options)
        x, channels = y, out_channels

    axes = w.tensor("axes", [2], np.array([1, 2], np.int32))
    pooled = w.tensor("pooled", [1, channels], dtype=np.float32)

    def reducer(b):
        t.ReducerOptionsStart(b)
        t.ReducerOptionsAddKeepDims(b, False)
        return t.ReducerOptionsEnd(b)

    w.op(t.BuiltinOperator.MEAN, [x, axes], [pooled], t.BuiltinOptions.ReducerOptions, reducer)
    fc = model.classifier
    fw = w.tensor("fc_w", list(fc.weight.shape), fc.weight.detach().numpy().astype(np.float32))
    fb = w.tensor("fc_b", list(fc.bias.shape), fc.bias.detach().numpy().astype(np.float32))
    logits = w.tensor("logits", [1, fc.out_features], dtype=np.float32)

    def fc_options(b):
        t.FullyConnectedOptionsStart(b)
        t.FullyConnectedOptionsAddFusedActivationFunction(b, t.ActivationFunctionType.NONE)
        return t.FullyConnectedOptionsEnd(b)

    w.op(t.BuiltinOperator.FULLY_CONNECTED, [pooled, fw, fb], [logits], t.BuiltinOptions.FullyConnectedOptions, fc_options)
    path.write_bytes(w.finish([graph_input], [logits]))


def write_onnx_qdq(onnx_path: Path, path: Path, inputs: list[np.ndarray]) -> None:
    """ONNX Runtime's int8 QDQ model of an fp32 ONNX file (quantize_static: QDQ, per-channel int8 weights,
    int8 activations), calibrated on `inputs` (min/max, as ours)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": x} for x in inputs])  # write_onnx's input name

        def get_next(self):
            return next(self.items, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(onnx_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip

