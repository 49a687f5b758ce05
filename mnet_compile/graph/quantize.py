"""Post-training int8 quantization (TFLite's scheme, frontends/integer.py) of an optimized fp32 module.

    int8_mod, model = quantize_int8(optimized_fp32_mod, calibration_inputs)

The fp32 module (`passes.optimize` output without channel padding: NHWC convs with HWIO constant weights,
BatchNorm folded) is read as a chain of layers: conv2d + bias + ReLU/ReLU6, residual adds (MobileNet v2), a
global mean, the classifier matmul + bias; each layer reads the previous one's output (an add also an earlier
one's). The chain runs in numpy float32 on the calibration inputs; each activation's min/max (0 included)
gives its scale and zero point. Models with any other operator (MobileNet v3's hardswish, squeeze-excitation)
are refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst, Var

from ..errors import MnetError
from ..frontends.integer import QMAX, QMIN, Conv, IntegerModel, add_layer, mean_pool, quantize_multiplier, to_relax



@dataclass
class FloatConv:
    weight: np.ndarray  # HWIO float32
    bias: np.ndarray
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]
    groups: int
    activation: tuple[float, float] | None = None  # (low, high): ReLU is (0, inf), ReLU6 (0, 6)


class _Pool:
    pass


@dataclass
class FloatAdd:
    other: int  # the layer whose output is added to the previous layer's


def _const(expr, bindings):
    expr = bindings.get(expr, expr) if isinstance(expr, Var) else expr
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def float_layers(mod: tvm.IRModule) -> list:
    """The layer chain of an optimized fp32 module, or MnetError naming the first operator outside it."""
    func = mod["main"]
    bindings = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    layers = []
    source = {func.params[0]: -1}  # var -> index of the layer whose output it is (-1: the input)
    layout = {func.params[0]: "NCHW"}  # var -> its layout (the clips and the pool may run in NCHW)
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
                continue
            name, args = value.op.name, value.args
            last = layers[-1] if layers else None
            inputs = [source[a] for a in args if isinstance(a, Var) and a in source]
            in_layout = next((layout[a] for a in args if isinstance(a, Var) and a in layout), "NHWC")
            if name not in ("relax.add",) and inputs and inputs[0] != len(layers) - 1:
                raise MnetError(f"--quantize int8: {name.removeprefix('relax.')} does not read the previous layer's output")
            if name == "relax.nn.conv2d":
                a = value.attrs
                weight = _const(args[1], bindings)
                if weight is None or (a.data_layout, a.kernel_layout) != ("NHWC", "HWIO") or list(map(int, a.dilation)) != [1, 1]:
                    raise MnetError("--quantize int8: a conv2d that is not NHWC/HWIO with constant weights")
                pad = [int(p) for p in a.padding]
                layers.append(FloatConv(weight, np.zeros(weight.shape[3], np.float32), tuple(map(int, a.strides)),
                                        (pad[0], pad[1], pad[2], pad[3]), int(a.groups)))  # fmt: skip
            elif name == "relax.matmul":
                weight = _const(args[1], bindings)
                if weight is None or weight.ndim != 2:
                    raise MnetError("--quantize int8: a matmul without constant 2-D weights")
                layers.append(FloatConv(weight.reshape(1, 1, *weight.shape), np.zeros(weight.shape[1], np.float32),
                                        (1, 1), (0, 0, 0, 0), 1))  # fmt: skip
            elif name == "relax.add" and len(inputs) == 2:  # a residual add of two layer outputs
                if len(layers) - 1 not in inputs or min(inputs) < 0 or inputs[0] == inputs[1]:
                    raise MnetError("--quantize int8: a residual add must add the previous layer's output to an earlier one")
                layers.append(FloatAdd(min(inputs)))
            elif name == "relax.add" and isinstance(last, FloatConv) and last.activation is None:
                bias = next((c for c in (_const(args[0], bindings), _const(args[1], bindings)) if c is not None), None)
                if bias is None or bias.size != last.bias.size or inputs != [len(layers) - 1]:
                    raise MnetError("--quantize int8: an add that is neither a bias nor a residual connection")
                last.bias = last.bias + bias.reshape(-1)
            elif name == "relax.nn.relu" and isinstance(last, FloatConv):
                last.activation = (0.0, np.inf)
            elif name == "relax.clip" and isinstance(last, FloatConv):
                last.activation = (float(args[1].value), float(args[2].value))
            elif name == "relax.mean" and [int(x) for x in value.attrs.axis] == ([1, 2] if in_layout == "NHWC" else [2, 3]):
                layers.append(_Pool())
            elif name in ("relax.permute_dims", "relax.reshape"):
                pass  # the input's NCHW -> NHWC, the flatten before the classifier (1x1 spatial)
            else:
                raise MnetError(f"--quantize int8 supports conv/ReLU/residual add/pool/classifier chains (MobileNet "
                                f"v1, v2); this model has {name.removeprefix('relax.')}")
            source[binding.var] = len(layers) - 1
            layout[binding.var] = in_layout
            if name == "relax.permute_dims":
                axes = [int(a) for a in value.attrs.axes]
                layout[binding.var] = {(0, 2, 3, 1): "NHWC", (0, 3, 1, 2): "NCHW"}.get(tuple(axes), "other")
    if not layers or not isinstance(layers[-1], FloatConv):
        raise MnetError("--quantize int8: the model does not end in a classifier")
    return layers


def _pad(x: np.ndarray, padding, value) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def conv_nhwc(x: np.ndarray, weight: np.ndarray, strides, groups: int) -> np.ndarray:
    """A valid (unpadded) NHWC conv with HWIO weights, dense or depthwise, in x's dtype (float64 for exact ints)."""
    kh, kw, cin_g, cout = weight.shape
    sh, sw = strides
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, oh, ow, cout), x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
            if groups == 1:
                out += patch @ weight[i, j].astype(x.dtype)
            elif cin_g == 1 and groups == cout:
                out += patch * weight[i, j, 0].astype(x.dtype)
            else:
                raise MnetError("--quantize int8: grouped convolutions other than depthwise are not supported")
    return out


def run_float(layers: list, x_nchw: np.ndarray) -> list[np.ndarray]:
    """The float chain on one NCHW input: the NHWC input, then every layer's output."""
    h = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1), dtype=np.float32)
    outs = [h]
    for layer in layers:
        if isinstance(layer, _Pool):
            h = h.mean(axis=(1, 2), keepdims=True)
        elif isinstance(layer, FloatAdd):
            h = h + outs[layer.other + 1]
        else:
            h = conv_nhwc(_pad(h, layer.padding, 0.0), layer.weight, layer.strides, layer.groups) + layer.bias
            if layer.activation is not None:
                h = np.clip(h, *layer.activation)
        outs.append(h.astype(np.float32))
    return outs


def activation_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 tensor covering [low, high] (widened to include 0), as TFLite."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / (QMAX - QMIN) if high > low else 1.0
    zero_point = int(np.clip(round(QMIN - low / scale), QMIN, QMAX))
    return float(scale), zero_point


def _ranges(layers: list, inputs: list[np.ndarray]) -> tuple[list[tuple[float, float]], list[tuple[int, ...]]]:
    """(min, max) of the input and of every layer's output over all inputs, and their shapes."""
    ranges = None
    for x in inputs:
        outs = run_float(layers, x)
        found = [(float(t.min()), float(t.max())) for t in outs]
        ranges = found if ranges is None else [(min(a, c), max(b, d)) for (a, b), (c, d) in zip(ranges, found)]
    return ranges, [t.shape for t in outs]


def _clamp(activation, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized: the activation's bounds in the output's int8 domain."""
    if activation is None:
        return QMIN, QMAX
    low, high = activation
    lo = max(QMIN, zero_point + int(round(low / scale)))
    hi = QMAX if not np.isfinite(high) else min(QMAX, zero_point + int(round(high / scale)))
    return lo, hi


def quantize_layers(layers: list, inputs: list[np.ndarray], input_name: str, output_shape) -> IntegerModel:
    """The integer model of a float chain, its activation ranges calibrated on `inputs` (NCHW float32)."""
    if not inputs:
        raise MnetError("--quantize int8: no calibration inputs")
    ranges, shapes = _ranges(layers, inputs)
    scale, zp = activation_params(*ranges[0])
    model = IntegerModel(input_name, tuple(inputs[0].shape), scale, zp, output_shape=tuple(output_shape))
    params = []  # every layer's output (scale, zero point)
    for layer, (low, high), shape in zip(layers, ranges[1:], shapes):  # shape: the layer's input
        if isinstance(layer, _Pool):  # the mean stays within its input's range: same scale and zero point
            model.layers.append(mean_pool(shape[1] * shape[2], scale, zp, scale, zp))
            params.append((scale, zp))
            continue
        out_scale, out_zp = activation_params(low, high)
        if isinstance(layer, FloatAdd):
            other = params[layer.other]
            model.layers.append(add_layer(layer.other, (scale, other[0]), (zp, other[1]), out_scale, out_zp))
            scale, zp = out_scale, out_zp
            params.append((scale, zp))
            continue
        w = layer.weight.astype(np.float64)
        w_scale = np.abs(w).max(axis=(0, 1, 2)) / QMAX
        w_scale[w_scale == 0] = 1.0
        qw = np.clip(np.round(w / w_scale), -QMAX, QMAX).astype(np.int8)
        bias = np.round(layer.bias / (scale * w_scale)).astype(np.int64)
        if np.abs(bias).max(initial=0) >= 2**31:
            raise MnetError("--quantize int8: a bias does not fit int32 at its scale")
        multiplier, exponent = quantize_multiplier(scale * w_scale / out_scale)
        model.layers.append(
            Conv(qw, bias.astype(np.int32), layer.strides, layer.padding, layer.groups, zp, multiplier.astype(np.int32),
                 exponent, out_zp, _clamp(layer.activation, out_scale, out_zp))
        )  # fmt: skip
        scale, zp = out_scale, out_zp
        params.append((scale, zp))
    model.output_scale, model.output_zero_point = scale, zp
    model.scales = [s for s, _ in params]
    return model


def quantize_int8(mod: tvm.IRModule, inputs: list[np.ndarray], dot_product: str | None = None,
                  pointwise_form: str | None = None) -> tuple[tvm.IRModule, IntegerModel]:
    """The int8 Relax module of an optimized fp32 module, and its integer model (for the manifest, tests);
    `dot_product`, `pointwise_form`: the dense convs' and 1x1 convs' dot-product forms (frontends.integer.to_relax)."""
    func = mod["main"]
    params = func.params
    if len(params) != 1:
        raise MnetError("--quantize int8: the model must have one input")
    ret = func.ret_ty
    shape = ret.fields[0].shape if hasattr(ret, "fields") else ret.shape
    model = quantize_layers(float_layers(mod), inputs, params[0].name, [int(d) for d in shape])
    return to_relax(model, dot_product, pointwise_form), model
