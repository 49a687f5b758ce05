"""Full-integer TFLite files (TFLiteConverter, int8 per channel) -> the integer graph (integer.py).

The stock Relax TFLite frontend lacks quantized SHAPE, per-channel quantized DEPTHWISE_CONV_2D and some
quantized pools. Here the flatbuffer is read with the `tflite` package and each operator becomes an integer
layer with the file's own scales, zero points, int8 weights and int32 biases: CONV_2D, DEPTHWISE_CONV_2D
(multiplier 1), FULLY_CONNECTED (a 1x1 conv), ADD, MEAN / AVERAGE_POOL_2D over the whole image, SOFTMAX;
fused ReLU/ReLU6 are the output clamp; a PAD is folded into the next conv (padded with the zero point);
RESHAPE of a 1x1 image and the SHAPE/STRIDED_SLICE/PACK chain that computes its shape are kept out; QUANTIZE
of the float input and DEQUANTIZE of the output are the model's own. An int8 input or output is kept float at
the artifact's interface (quantized by the first conv with the file's input scale and zero point; the int8
result dequantized), so `run` and every loader take the artifact unchanged. Any other operator is refused with
one line naming it.
"""

from __future__ import annotations

import numpy as np

from ..errors import MnetError
from .integer import QMAX, QMIN, Conv, IntegerModel, add_layer, mean_pool, quantize_multiplier, softmax_layer

INT8, INT32, FLOAT32 = 9, 2, 0  # tflite.TensorType
SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")
LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "AVERAGE_POOL_2D", "SOFTMAX")


def is_integer(model) -> bool:
    """True if the file's first subgraph quantizes its input or takes int8 (a full-integer model)."""
    g = model.Subgraphs(0)
    inputs = {int(i) for i in g.InputsAsNumpy()}
    if any(g.Tensors(i).Type() == INT8 for i in inputs):
        return True
    return any(_op_name(model, g.Operators(k)) == "QUANTIZE" and int(g.Operators(k).Inputs(0)) in inputs
               for k in range(g.OperatorsLength()))  # fmt: skip


def _op_name(model, op) -> str:
    from tflite.BuiltinOperator import BuiltinOperator

    code = model.OperatorCodes(op.OpcodeIndex())
    number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    return next((k for k, v in vars(BuiltinOperator).items() if v == number and not k.startswith("_")), f"code {number}")


def _options(op, cls):
    import tflite

    opts = getattr(tflite, cls)()
    table = op.BuiltinOptions()
    opts.Init(table.Bytes, table.Pos)
    return opts


class _File:
    def __init__(self, model, path):
        self.model, self.path, self.g = model, path, model.Subgraphs(0)

    def fail(self, index: int, problem: str):
        op = self.g.Operators(index)
        outputs = op.OutputsAsNumpy()
        tensor = self.g.Tensors(int(outputs[0])).Name().decode() if len(outputs) else "?"
        raise MnetError(f"{self.path}: int8 TFLite: {problem} (operator #{index} {_op_name(self.model, op)}, "
                        f"output tensor '{tensor}')")  # fmt: skip

    def shape(self, t: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.g.Tensors(t).ShapeAsNumpy()) if self.g.Tensors(t).ShapeLength() else ()

    def data(self, t: int):
        """A constant tensor's values (its buffer), or None."""
        tensor = self.g.Tensors(t)
        raw = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(raw, int) or raw.size == 0:
            return None
        dtype = {INT8: np.int8, INT32: np.int32, FLOAT32: np.float32}.get(tensor.Type())
        return None if dtype is None else raw.view(dtype).reshape(self.shape(t))

    def qparams(self, t: int):
        """(scales float64 array, zero points int array) of a quantized tensor, or None."""
        q = self.g.Tensors(t).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        return q.ScaleAsNumpy().astype(np.float32).astype(np.float64), q.ZeroPointAsNumpy().astype(np.int64)

    def activation(self, index: int, t: int) -> tuple[float, int]:
        """(scale, zero point) of an int8 activation tensor (one per tensor)."""
        params = self.qparams(t)
        if self.g.Tensors(t).Type() != INT8 or params is None or params[0].size != 1:
            self.fail(index, "activations must be int8 with one scale and zero point per tensor")
        return float(params[0][0]), int(params[1][0])


def fused_clamp(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized (NONE 0, RELU 1, RELU_N1_TO_1 2, RELU6 3)."""
    bound = lambda real: zero_point + int(np.floor(real / scale + 0.5))  # noqa: E731  (TfLiteRound, real >= -1)
    low, high = {0: (None, None), 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}[activation]
    return (QMIN if low is None else max(QMIN, bound(low)), QMAX if high is None else min(QMAX, bound(high)))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TFLite's SAME padding of one axis: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(f: _File, index: int, current: int, pending_pad, x, y) -> Conv:
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED (a 1x1 conv) as a Conv record; x, y: (scale, zero point)."""
    op = f.g.Operators(index)
    name = _op_name(f.model, op)
    ins = [int(t) for t in op.InputsAsNumpy()]
    (x_scale, x_zp), (y_scale, y_zp) = x, y
    w, wq = f.data(ins[1]), f.qparams(ins[1])
    if w is None or w.dtype != np.int8 or wq is None or np.any(wq[1] != 0):
        f.fail(index, "weights must be constant int8, symmetric (zero point 0)")
    bias = f.data(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
    if bias is not None and bias.dtype != np.int32:
        f.fail(index, "a bias must be int32")
    height, width = f.shape(current)[1:3] if len(f.shape(current)) == 4 else (1, 1)
    if name == "FULLY_CONNECTED":
        opts = _options(op, "FullyConnectedOptions")
        if opts.WeightsFormat() != 0 or (height, width) != (1, 1):
            f.fail(index, "FULLY_CONNECTED must take a flat vector with plain weights")
        weight, strides, padding, groups = w.T.reshape(1, 1, *w.T.shape), (1, 1), (0, 0, 0, 0), 1
    else:
        depthwise = name == "DEPTHWISE_CONV_2D"
        opts = _options(op, "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
        if (opts.DilationHFactor(), opts.DilationWFactor()) != (1, 1):
            f.fail(index, "dilated convolutions are not supported")
        if depthwise and w.shape[3] != f.shape(current)[3]:
            f.fail(index, "depthwise convolutions with a channel multiplier are not supported")
        strides = (opts.StrideH(), opts.StrideW())
        top = left = bottom = right = 0
        if opts.Padding() == 0:  # SAME
            top, bottom = same_padding(height, w.shape[1], strides[0])
            left, right = same_padding(width, w.shape[2], strides[1])
        padding = tuple(a + b for a, b in zip((top, left, bottom, right), pending_pad))
        weight = w.transpose(1, 2, 0, 3) if depthwise else w.transpose(1, 2, 3, 0)  # -> HWIO
        groups = weight.shape[3] if depthwise else 1
    count = weight.shape[3]
    if wq[0].size not in (1, count):
        f.fail(index, "weight scales must be per tensor or per output channel")
    multiplier, exponent = quantize_multiplier(x_scale * np.broadcast_to(wq[0], (count,)) / y_scale)
    return Conv(np.ascontiguousarray(weight), np.zeros(count, np.int32) if bias is None else bias.reshape(-1), strides,
                padding, groups, x_zp, multiplier.astype(np.int32), exponent, y_zp,
                fused_clamp(opts.FusedActivationFunction(), y_scale, y_zp))  # fmt: skip


def from_tflite_int8(model, path, input_name: str, shape) -> IntegerModel:
    """The integer model of a full-integer TFLite graph (NHWC input `shape`)."""
    f = _File(model, path)
    g = f.g
    graph_in, graph_out = int(g.Inputs(0)), int(g.Outputs(0))
    if g.OutputsLength() != 1 or g.Tensors(graph_in).Type() not in (INT8, FLOAT32):
        raise MnetError(f"{path}: int8 TFLite: expected one output and a float32 or int8 input")
    current = None  # the tensor the last layer produced (int8)
    producer = {}  # int8 tensor -> index of the layer that produced it
    shape_tensors = set()
    pending_pad = (0, 0, 0, 0)
    result = None
    if g.Tensors(graph_in).Type() == INT8:
        result = IntegerModel(input_name, tuple(shape), *f.activation(0, graph_in), input_layout="NHWC")
        current = graph_in
    for index in range(g.OperatorsLength()):
        op = g.Operators(index)
        name = _op_name(model, op)
        ins = [int(t) for t in op.InputsAsNumpy()]
        out = int(op.Outputs(0))
        if name == "QUANTIZE" and ins[0] == graph_in and result is None:
            result = IntegerModel(input_name, tuple(shape), *f.activation(index, out), input_layout="NHWC")
            current = out
            continue
        if name in SHAPE_OPS:  # the batch size Keras computes for a flatten: only RESHAPE may read it
            if not all(t in shape_tensors or t == current or f.data(t) is not None for t in ins if t >= 0):
                f.fail(index, "a shape computation on something other than the activation's shape")
            shape_tensors.add(out)
            continue
        if name == "DEQUANTIZE" and ins[0] == current and out == graph_out:
            current = out
            continue
        if name not in LAYER_OPS + ("PAD", "RESHAPE"):
            f.fail(index, f"operator {name} is not supported in an int8 TFLite model")
        if result is None or not ins or current not in (ins[:2] if name == "ADD" else ins[:1]):
            f.fail(index, f"operator {name} does not read the previous layer's output (or the input is not quantized)")
        x_scale, x_zp = f.activation(index, current)
        if any(pending_pad) and name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            f.fail(index, "a PAD must be followed by a convolution")
        if name in LAYER_OPS:
            y_scale, y_zp = f.activation(index, out)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            result.layers.append(_conv(f, index, current, pending_pad, (x_scale, x_zp), (y_scale, y_zp)))
            pending_pad = (0, 0, 0, 0)
        elif name == "PAD":
            pads = f.data(ins[1])
            if pads is None or pads.shape != (4, 2) or np.any(pads[[0, 3]] != 0) or f.activation(index, out) != (x_scale, x_zp):
                f.fail(index, "only a spatial PAD that keeps the quantization is supported")
            pending_pad = tuple(int(p) for p in (pads[1, 0], pads[2, 0], pads[1, 1], pads[2, 1]))
            current = out
            continue
        elif name == "ADD":
            other = ins[1] if ins[0] == current else ins[0]
            if other not in producer:
                f.fail(index, "ADD must add two layer outputs")
            clamp = fused_clamp(_options(op, "AddOptions").FusedActivationFunction(), y_scale, y_zp)
            scales = (x_scale, f.activation(index, other)[0])
            zero_points = (x_zp, f.activation(index, other)[1])
            if f.shape(other) != f.shape(current):
                f.fail(index, "ADD with broadcasting is not supported")
            result.layers.append(add_layer(producer[other], scales, zero_points, y_scale, y_zp, clamp))
        elif name in ("MEAN", "AVERAGE_POOL_2D"):
            n, height, width, _ = f.shape(current)
            if name == "MEAN":
                axes = f.data(ins[1])
                if axes is None or sorted(int(a) % 4 for a in axes.reshape(-1)) != [1, 2]:
                    f.fail(index, "MEAN must average over height and width")
            else:
                opts = _options(op, "Pool2DOptions")
                if (opts.FilterHeight(), opts.FilterWidth()) != (height, width) or opts.FusedActivationFunction():
                    f.fail(index, "AVERAGE_POOL_2D must average the whole image (a global pool)")
            result.layers.append(mean_pool(height * width, x_scale, x_zp, y_scale, y_zp))
        elif name == "RESHAPE":
            if any(d != 1 for d in f.shape(current)[1:-1]) or f.activation(index, out) != (x_scale, x_zp):
                f.fail(index, "RESHAPE only of a 1x1 image (a flatten), keeping the quantization")
            if len(ins) > 1 and ins[1] not in shape_tensors and f.data(ins[1]) is None:
                f.fail(index, "RESHAPE to a shape that is neither constant nor the flatten's")
            current = out
            continue
        else:  # SOFTMAX
            result.layers.append(softmax_layer(x_scale, _options(op, "SoftmaxOptions").Beta(), y_scale, y_zp))
        producer[out] = len(result.layers) - 1
        result.scales.append(y_scale)
        current = out
    if result is None or not result.layers or current != graph_out:
        raise MnetError(f"{path}: int8 TFLite: the output is not the last layer's (or there are no layers)")
    last_int8 = current if g.Tensors(current).Type() == INT8 else int(g.Operators(g.OperatorsLength() - 1).Inputs(0))
    result.output_scale, result.output_zero_point = f.activation(g.OperatorsLength() - 1, last_int8)
    result.output_shape = f.shape(graph_out)
    return result
