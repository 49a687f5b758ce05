"""ONNX QDQ models (as ONNX Runtime's quantize_static writes them) -> the integer graph (integer.py).

The stock Relax ONNX frontend imports QuantizeLinear/DequantizeLinear as float math around float convs.
Here each Conv/Gemm whose inputs come from DequantizeLinear (int8 activations per tensor, int8 weights per
output channel with zero point 0, int32 bias) and whose output goes to one QuantizeLinear becomes an int8
conv with TFLite-style fixed-point requantization; a ReLU that the quantizer folded into the output's range
is the saturation of that QuantizeLinear. An Add of two DequantizeLinear'd layer outputs (MobileNet v2's
residual) is the integer add; GlobalAveragePool is an integer mean; Flatten/Reshape of a 1x1 image keep the
tensor. Anything else is refused with one line naming the operator and node.
"""

from __future__ import annotations

import numpy as np

from ..errors import MnetError
from .integer import Conv, IntegerModel, add_layer, mean_pool, quantize_multiplier

QDQ = ("QuantizeLinear", "DequantizeLinear")


def is_qdq(model) -> bool:
    return any(n.op_type in QDQ for n in model.graph.node)


class _Graph:
    def __init__(self, model, path):
        from onnx import numpy_helper

        self.path = path
        self.init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant":
                self.init[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def fail(self, node, problem: str):
        raise MnetError(f"{self.path}: QDQ model: {problem} (node '{node.name or node.op_type}')")

    def const(self, name, node):
        if name not in self.init:
            self.fail(node, f"{name!r} is not a constant")
        return self.init[name]

    def qparams(self, node):
        """(scale, zero point) of a per-tensor Q/DQ node."""
        scale = self.const(node.input[1], node)
        zero = self.const(node.input[2], node) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if scale.size != 1 or zero.dtype != np.int8:
            self.fail(node, "activations must be int8, one scale and zero point per tensor")
        return float(scale.reshape(())), int(zero.reshape(()))

    def dequantized(self, name, node):
        """The DequantizeLinear node that produces `name`."""
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            self.fail(node, f"input {name!r} does not come from DequantizeLinear")
        return dq

    def output_q(self, node):
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            self.fail(node, "output must go to exactly one QuantizeLinear")
        return users[0]

    def weight(self, name, node, count: int):
        """(int8 weights, per-output-channel float scales) of a DequantizeLinear'd constant."""
        dq = self.dequantized(name, node)
        q, scale = self.const(dq.input[0], dq), self.const(dq.input[1], dq).astype(np.float64).reshape(-1)
        zero = self.const(dq.input[2], dq) if len(dq.input) > 2 and dq.input[2] else np.zeros(1, np.int8)
        if q.dtype != np.int8 or np.any(zero != 0) or scale.size not in (1, count):
            self.fail(node, "weights must be int8, symmetric (zero point 0), per tensor or per output channel")
        return q, np.broadcast_to(scale, (count,))

    def bias(self, node, index: int, count: int, scale: np.ndarray):
        """int32 bias at scale input_scale * weight_scale (a float bias is quantized to it)."""
        if len(node.input) <= index or not node.input[index]:
            return np.zeros(count, np.int32)
        name = node.input[index]
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = self.const(dq.input[0], dq)
            if q.dtype != np.int32:
                self.fail(node, "a quantized bias must be int32")
            value = q.astype(np.float64) * self.const(dq.input[1], dq).astype(np.float64).reshape(-1)
        else:
            value = self.const(name, node).astype(np.float64)
        return np.round(value.reshape(-1) / scale).astype(np.int32)


def from_qdq(model, path, input_name: str, shape) -> IntegerModel:
    """The integer model of a QDQ ONNX graph with float input `input_name` (NCHW `shape`)."""
    g = _Graph(model, path)
    out_name = model.graph.output[0].name
    users = g.consumers.get(input_name, [])
    if len(users) != 1 or users[0].op_type != "QuantizeLinear":
        raise MnetError(f"{path}: QDQ model: the input must go to exactly one QuantizeLinear")
    scale, zp = g.qparams(users[0])
    result = IntegerModel(input_name, tuple(shape), scale, zp)
    height, width = shape[2], shape[3]
    last_q = users[0]
    produced = {}  # a layer's QuantizeLinear output -> the layer's index
    for node in model.graph.node:
        if node.op_type in QDQ + ("Constant",):
            continue
        sources = [g.dequantized(name, node).input[0] for name in node.input[: 2 if node.op_type == "Add" else 1]]
        if last_q.output[0] not in sources:
            g.fail(node, "not a chain of layers (each reading the previous one, an Add also an earlier one)")
        if node.op_type in ("Conv", "Gemm"):
            x_dq = g.dequantized(node.input[0], node)
            x_scale, x_zp = g.qparams(x_dq)
            out_q = g.output_q(node)
            y_scale, y_zp = g.qparams(out_q)
            attrs = {a.name: a for a in node.attribute}
            if node.op_type == "Conv":
                from onnx import helper

                get = lambda k, d: helper.get_attribute_value(attrs[k]) if k in attrs else d  # noqa: E731
                count = int(g.const(g.dequantized(node.input[1], node).input[0], node).shape[0])
                w, w_scale = g.weight(node.input[1], node, count)
                pads = list(get("pads", [0, 0, 0, 0]))
                strides, groups = tuple(get("strides", [1, 1])), int(get("group", 1))
                if list(get("dilations", [1, 1])) != [1, 1] or get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    g.fail(node, "dilated or auto-padded convolutions are not supported")
                weight = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                padding = (pads[0], pads[1], pads[2], pads[3])
                height = (height + pads[0] + pads[2] - w.shape[2]) // strides[0] + 1
                width = (width + pads[1] + pads[3] - w.shape[3]) // strides[1] + 1
            else:
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                if any(a.name in ("alpha", "beta") and a.f != 1.0 for a in node.attribute) or any(
                    a.name == "transA" and a.i for a in node.attribute
                ):
                    g.fail(node, "Gemm with alpha, beta or transA is not supported")
                q = g.const(g.dequantized(node.input[1], node).input[0], node)
                count = int(q.shape[0] if trans_b else q.shape[1])
                w, w_scale = g.weight(node.input[1], node, count)
                weight = (w.T if trans_b else w).reshape(1, 1, -1, count)
                strides, padding, groups = (1, 1), (0, 0, 0, 0), 1
            acc_scale = x_scale * w_scale
            multiplier, exponent = quantize_multiplier(acc_scale / y_scale)
            bias = g.bias(node, 2, count, acc_scale)
            result.layers.append(Conv(np.ascontiguousarray(weight), bias, strides, padding, groups, x_zp,
                                      multiplier.astype(np.int32), exponent, y_zp, (-128, 127)))  # fmt: skip
            last_q = out_q
        elif node.op_type == "Add":
            other = next((s for s in sources if s != last_q.output[0]), None)
            if other not in produced or len(sources) != 2:
                g.fail(node, "an Add must add the previous layer's output to an earlier layer's")
            out_q = g.output_q(node)
            current, earlier = (g.qparams(g.dequantized(node.input[sources.index(s)], node)) for s in (last_q.output[0], other))
            result.layers.append(add_layer(produced[other], (current[0], earlier[0]), (current[1], earlier[1]), *g.qparams(out_q)))
            last_q = out_q
        elif node.op_type == "GlobalAveragePool":
            x_scale, x_zp = g.qparams(g.dequantized(node.input[0], node))
            out_q = g.output_q(node)
            result.layers.append(mean_pool(height * width, x_scale, x_zp, *g.qparams(out_q)))
            height = width = 1
            last_q = out_q
        elif node.op_type in ("Flatten", "Reshape") and height == width == 1:
            x = g.qparams(g.dequantized(node.input[0], node))
            out_q = g.output_q(node)
            if g.qparams(out_q) != x:
                g.fail(node, "a flatten that changes the quantization")
            last_q = out_q
        else:
            g.fail(node, f"operator {node.op_type} is not supported in a QDQ model yet")
        produced[last_q.output[0]] = len(result.layers) - 1
    final = g.consumers.get(last_q.output[0], [])
    if len(final) != 1 or final[0].op_type != "DequantizeLinear" or final[0].output[0] != out_name:
        raise MnetError(f"{path}: QDQ model: the output must be the DequantizeLinear of the last layer")
    result.output_scale, result.output_zero_point = g.qparams(final[0])
    result.output_shape = (shape[0], result.layers[-1].weight.shape[3]) if result.layers else ()
    return result
