"""The benchmark peers' model files for one MobileNet v1: ONNX (torch.onnx), its int8 QDQ (ONNX Runtime's
quantizer), TFLite fp32 and TFLite full-integer int8 (both written directly).

The TFLite files are written with the flatbuffer schema of the `tflite` package, NHWC, ReLU fused into each
conv as TFLiteConverter would emit them, so LiteRT/XNNPACK runs without TensorFlow being installed: the fp32
file with PyTorch's weights (BatchNorm folded), the int8 file with the records of our `--quantize int8` build.
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

    def tensor(self, name, shape, data: np.ndarray | None = None, dtype=None, quantization=None) -> int:
        """A tensor (a constant with `data`); `quantization`: (scales, zero points, quantized dimension)."""
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
            dtype = data.dtype
        types = self.tfl.TensorType
        kind = {"float32": types.FLOAT32, "int32": types.INT32, "int8": types.INT8}[np.dtype(dtype or np.float32).name]
        self.tensors.append((name, list(shape), kind, buffer, quantization))
        return len(self.tensors) - 1

    def _quantization(self, scales, zero_points, dimension: int) -> int:
        b, t = self.b, self.tfl
        scales_off = b.CreateNumpyVector(np.asarray(scales, np.float32).reshape(-1))
        zero_points_off = b.CreateNumpyVector(np.asarray(zero_points, np.int64).reshape(-1))
        t.QuantizationParametersStart(b)
        t.QuantizationParametersAddScale(b, scales_off)
        t.QuantizationParametersAddZeroPoint(b, zero_points_off)
        t.QuantizationParametersAddQuantizedDimension(b, dimension)
        return t.QuantizationParametersEnd(b)

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
        for name, shape, kind, buffer, quantization in self.tensors:
            name_off = b.CreateString(name)
            shape_off = self._vector(t.TensorStartShapeVector, shape, b.PrependInt32)
            quantization_off = self._quantization(*quantization) if quantization else None
            t.TensorStart(b)
            t.TensorAddShape(b, shape_off)
            t.TensorAddType(b, kind)
            t.TensorAddBuffer(b, buffer)
            t.TensorAddName(b, name_off)
            if quantization_off is not None:
                t.TensorAddQuantization(b, quantization_off)
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


def _activation(clamp, scale: float, zero_point: int) -> int:
    """The fused activation whose int8 range TFLite derives as `clamp`: RELU, else RELU6, else NONE (the records
    keep only the range; a ReLU whose zero point is -128 clamps nothing, as NONE)."""
    import tflite as t

    from .frontends.tflite_int8 import fused_clamp

    codes = t.ActivationFunctionType
    for code in (codes.RELU, codes.RELU6, codes.NONE):
        if fused_clamp(code, scale, zero_point) == tuple(clamp):
            return code
    raise ValueError(f"no TFLite activation clamps to {tuple(clamp)}")


def _weight_scales(layer, in_scale, out_scale) -> np.ndarray:
    """float32 weight scales that reproduce a Conv record's multipliers as closely as float32 scales can: the
    nearest to in * w / out = M * 2^(e - 31), moved by up to 4 ulps where that brings XNNPACK's requantization
    scale float32(float32(in * w) / out) closer to M * 2^(e - 31) in float32 (equal where it can be)."""
    real = layer.multiplier.astype(np.float64) * np.exp2(layer.exponent.astype(np.float64) - 31)
    target = real.astype(np.float32).view(np.int32).astype(np.int64)  # positive floats order as their bits
    nearest = np.maximum(real * np.float64(out_scale) / np.float64(in_scale), np.finfo(np.float32).tiny).astype(np.float32)
    best, distance = nearest.copy(), np.full(nearest.shape, np.iinfo(np.int64).max)
    for step in (0, 1, -1, 2, -2, 3, -3, 4, -4):
        candidate = nearest
        for _ in range(abs(step)):
            candidate = np.nextafter(candidate, np.float32(np.inf * step))
        ulps = np.abs((candidate * np.float32(in_scale) / np.float32(out_scale)).view(np.int32).astype(np.int64) - target)
        closer = ulps < distance
        best[closer], distance[closer] = candidate[closer], ulps[closer]
    return best


def _int8_conv(w, i: int, layer, x: int, shape, in_scale, out_scale) -> tuple[int, tuple[int, ...]]:
    """A Conv record as (PAD +) CONV_2D or DEPTHWISE_CONV_2D with per-channel weights: (output tensor, its shape)."""
    import tflite as t

    from .frontends.tflite_int8 import same_padding

    kh, kw, _, cout = layer.weight.shape
    (sh, sw), depthwise = layer.strides, layer.groups > 1
    w_scale = _weight_scales(layer, in_scale, out_scale)
    zeros = np.zeros(cout, np.int64)
    filt = layer.weight.transpose(2, 0, 1, 3) if depthwise else layer.weight.transpose(3, 0, 1, 2)  # 1HWC, OHWI
    f = w.tensor(f"w{i}", filt.shape, filt, quantization=(w_scale, zeros, 3 if depthwise else 0))
    bias = w.tensor(f"b{i}", [cout], layer.bias.astype(np.int32),
                    quantization=((np.float64(in_scale) * w_scale).astype(np.float32), zeros, 0))  # fmt: skip
    (top, bottom), (left, right) = same_padding(shape[1], kh, sh), same_padding(shape[2], kw, sw)
    padding = t.Padding.SAME if tuple(layer.padding) == (top, left, bottom, right) else t.Padding.VALID
    quantization = ([in_scale], [layer.input_zero_point], 0)
    top, left, bottom, right = (0,) * 4 if padding == t.Padding.SAME else layer.padding
    if any((top, left, bottom, right)):
        pads = w.tensor(f"pads{i}", [4, 2], np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
        shape = (shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3])
        padded = w.tensor(f"padded{i}", shape, dtype=np.int8, quantization=quantization)
        w.op(t.BuiltinOperator.PAD, [x, pads], [padded])
        x = padded
    if padding == t.Padding.SAME:
        shape = (shape[0], -(-shape[1] // sh), -(-shape[2] // sw), cout)
    else:
        shape = (shape[0], (shape[1] - kh) // sh + 1, (shape[2] - kw) // sw + 1, cout)
    y = w.tensor(f"y{i}", shape, dtype=np.int8, quantization=([out_scale], [layer.output_zero_point], 0))
    activation = _activation(layer.clamp, out_scale, layer.output_zero_point)

    def options(b):
        kind = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"
        getattr(t, f"{kind}Start")(b)
        getattr(t, f"{kind}AddPadding")(b, padding)
        getattr(t, f"{kind}AddStrideW")(b, sw)
        getattr(t, f"{kind}AddStrideH")(b, sh)
        if depthwise:
            t.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        getattr(t, f"{kind}AddFusedActivationFunction")(b, activation)
        getattr(t, f"{kind}AddDilationWFactor")(b, 1)
        getattr(t, f"{kind}AddDilationHFactor")(b, 1)
        return getattr(t, f"{kind}End")(b)

    code = t.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else t.BuiltinOperator.CONV_2D
    kind = t.BuiltinOptions.DepthwiseConv2DOptions if depthwise else t.BuiltinOptions.Conv2DOptions
    w.op(code, [x, f, bias], [y], kind, options)
    return y, shape


def write_tflite_int8(model, path: Path) -> None:
    """An integer graph of graph/quantize.py (frontends/integer.py: Conv, MeanPool, Add records with their output
    scales) as TFLiteConverter's full-integer file: float NHWC input -> QUANTIZE -> int8 (PAD +) CONV_2D /
    DEPTHWISE_CONV_2D with per-channel weights and int32 biases, MEAN, ADD, fused ReLU/ReLU6 -> RESHAPE ->
    DEQUANTIZE -> float. TFLite derives each multiplier from float32 scales, so a weight scale is the float32
    nearest to the one that gives the record's multiplier: the same to float32's precision (2^-24), not to
    the record's 31 bits."""
    import tflite as t

    from .frontends.integer import Add, Conv, MeanPool

    if len(model.scales) != len(model.layers):
        raise ValueError("the integer model has no output scale for each layer")
    w = _TFLiteWriter()
    shape = model.input_shape if model.input_layout == "NHWC" else tuple(model.input_shape[i] for i in (0, 2, 3, 1))
    graph_input = w.tensor("input", shape, dtype=np.float32)
    scale, zero_point = np.float32(model.input_scale), model.input_zero_point
    x = w.tensor("input_int8", shape, dtype=np.int8, quantization=([scale], [zero_point], 0))
    w.op(t.BuiltinOperator.QUANTIZE, [graph_input], [x])
    outs = []
    for i, (layer, out_scale) in enumerate(zip(model.layers, model.scales)):
        out_scale = np.float32(out_scale)
        if isinstance(layer, Conv):
            x, shape = _int8_conv(w, i, layer, x, shape, scale, out_scale)
        elif isinstance(layer, (MeanPool, Add)):
            shape = (shape[0], 1, 1, shape[3]) if isinstance(layer, MeanPool) else shape
            y = w.tensor(f"y{i}", shape, dtype=np.int8, quantization=([out_scale], [layer.output_zero_point], 0))
            if isinstance(layer, MeanPool):
                axes = w.tensor(f"axes{i}", [2], np.array([1, 2], np.int32))

                def options(b):
                    t.ReducerOptionsStart(b)
                    t.ReducerOptionsAddKeepDims(b, True)
                    return t.ReducerOptionsEnd(b)

                w.op(t.BuiltinOperator.MEAN, [x, axes], [y], t.BuiltinOptions.ReducerOptions, options)
            else:
                activation = _activation(layer.clamp, out_scale, layer.output_zero_point)

                def options(b, activation=activation):
                    t.AddOptionsStart(b)
                    t.AddOptionsAddFusedActivationFunction(b, activation)
                    return t.AddOptionsEnd(b)

                w.op(t.BuiltinOperator.ADD, [x, outs[layer.other]], [y], t.BuiltinOptions.AddOptions, options)
            x = y
        else:
            raise ValueError(f"{type(layer).__name__} layers are not written to TFLite")
        outs.append(x)
        scale, zero_point = out_scale, layer.output_zero_point
    if tuple(model.output_shape) != tuple(shape):  # the flatten before the logits
        new_shape = w.tensor("shape", [len(model.output_shape)], np.array(model.output_shape, np.int32))
        flat = w.tensor("logits_int8", model.output_shape, dtype=np.int8, quantization=([scale], [zero_point], 0))
        w.op(t.BuiltinOperator.RESHAPE, [x, new_shape], [flat])
        x = flat
    logits = w.tensor("logits", model.output_shape, dtype=np.float32)
    w.op(t.BuiltinOperator.DEQUANTIZE, [x], [logits])
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

