"""The int8 integer graph: a quantized model as plain layer records, and those records as a Relax module.

Both quantization paths end here: `graph/quantize.py` (post-training quantization of a built-in model) and
an imported quantized file. The scheme is TFLite's full-integer one:
- weights int8, symmetric, one scale per output channel; bias int32 at scale input_scale * weight_scale;
- activations int8, asymmetric, one (scale, zero point) per tensor; ReLU/ReLU6 are the output clamp;
- requantization by a fixed-point multiplier M (int32, Q31) and exponent e (`quantize_multiplier`, as
  TFLite's QuantizeMultiplier): out = zp + ((acc * M + 2^(k-1)) >> k), k = 31 - e, in int64 with one
  rounding (round half up; TFLite's TFLITE_SINGLE_ROUNDING);
- the input's zero point is the padding value (padded inside the conv's kernel: `conv_te`), so its
  correction -zp_in * sum(W) is folded into the bias;
- the float input is quantized by the model's first op: q = clip(floor(x * (1 / scale) + 0.5) + zp) in
  float32; the int8 logits are dequantized by its last: (q - zp) * scale.

Tensors between layers are int8 (NHWC); a conv accumulates in int32 (conv2d with out_dtype int32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, te, tirx, topi

QMIN, QMAX = -128, 127

SCHEME = {
    "dtype": "int8",
    "weights": "int8 symmetric, per output channel",
    "activations": "int8 asymmetric, per tensor",
    "bias": "int32",
    "requantization": "int32 multiplier and shift, one rounding (TFLite single rounding)",
}


@dataclass
class Conv:
    """conv2d (NHWC, HWIO int8 weights, groups) + int32 bias, requantized per output channel, clamped."""

    weight: np.ndarray  # int8 (kh, kw, cin / groups, cout)
    bias: np.ndarray  # int32 (cout,), at scale input_scale * weight_scale (no zero-point correction)
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    groups: int
    input_zero_point: int
    multiplier: np.ndarray  # int32 (cout,), Q31
    exponent: np.ndarray  # int (cout,): real multiplier = multiplier * 2^(exponent - 31)
    output_zero_point: int
    clamp: tuple[int, int]  # the activation as an int8 range


@dataclass
class MeanPool:
    """Global average pool over H and W (keepdims): the int32 sum, requantized with multiplier
    (input_scale / (size * output_scale)) as (multiplier, exponent)."""

    zero_point: int
    size: int  # H * W
    multiplier: int
    exponent: int
    output_zero_point: int


@dataclass
class IntegerModel:
    input_name: str
    input_shape: tuple[int, ...]  # NCHW float32
    input_scale: float
    input_zero_point: int
    layers: list = field(default_factory=list)
    output_scale: float = 1.0
    output_zero_point: int = 0
    output_shape: tuple[int, ...] = ()


def quantize_multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier: real = M * 2^(e - 31) with M an int32 in [2^30, 2^31) (0 for 0)."""
    mults, exps = [], []
    for value in np.atleast_1d(np.asarray(real, np.float64)):
        if value == 0:
            mults.append(0)
            exps.append(0)
            continue
        mantissa, exponent = math.frexp(float(value))
        q = int(round(mantissa * (1 << 31)))
        if q == 1 << 31:
            q //= 2
            exponent += 1
        if exponent < -31:  # too small to matter: the output is the zero point
            q, exponent = 0, 0
        mults.append(q)
        exps.append(exponent)
    return np.array(mults, np.int64), np.array(exps, np.int64)


def _const(value, dtype: str) -> relax.Expr:
    return relax.const(np.asarray(value, dtype), dtype)


def _emit_requantize(bb, acc, multiplier, exponent, zero_point: int, clamp) -> relax.Var:
    """int32 accumulators -> int8: ((acc * M + 2^(k-1)) >> k) + zp, clamped; M, k per channel, in int64."""
    shift = 31 - np.asarray(exponent, np.int64)
    if shift.min() < 1 or shift.max() > 62:
        raise ValueError(f"requantization shift out of range: {shift.min()}..{shift.max()}")
    x = bb.emit(relax.op.astype(acc, "int64"))
    x = bb.emit(relax.op.multiply(x, _const(multiplier, "int64")))
    x = bb.emit(relax.op.add(x, _const(np.left_shift(np.int64(1), shift - 1), "int64")))
    x = bb.emit(relax.op.right_shift(x, _const(shift, "int64")))
    x = bb.emit(relax.op.add(x, _const(zero_point, "int64")))
    x = bb.emit(relax.op.clip(x, int(clamp[0]), int(clamp[1])))
    return bb.emit(relax.op.astype(x, "int8"))


def conv_te(x: te.Tensor, w: te.Tensor, strides, padding, groups: int, zero_point: int) -> te.Tensor:
    """NHWC int8 conv (dense or depthwise) accumulating in int32, its input padded with `zero_point`.

    Blocks as topi's legalized conv2d (`pad_temp`, then `conv2d_nhwc` / `group_conv2d_nhwc`, spatial axes then
    3 reduction axes), so the CPU conv rules recognize it; padding with the zero point (a real 0) inside the
    kernel is what relax's conv2d cannot do (it pads with 0)."""
    top, left, bottom, right = padding
    pad = topi.nn.pad(x, [0, top, left, 0], [0, bottom, right, 0], pad_value=tirx.const(zero_point, "int8"), name="pad_temp")
    n, height, width, _ = (int(d) for d in pad.shape)
    kh, kw, cin, cout = (int(d) for d in w.shape)
    (sh, sw), depthwise = strides, groups > 1
    if depthwise and (cin != 1 or groups != cout):
        raise ValueError("grouped convolutions other than depthwise are not supported")
    out_shape = (n, (height - kh) // sh + 1, (width - kw) // sw + 1, cout)
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cin), "rc")

    def body(b, y, xx, c):
        channel = c + rc if depthwise else rc
        product = pad[b, y * sh + ry, xx * sw + rx, channel].astype("int32") * w[ry, rx, rc, c].astype("int32")
        return te.sum(product, axis=[ry, rx, rc])

    return te.compute(out_shape, body, name="group_conv2d_nhwc" if depthwise else "conv2d_nhwc")


DOT_LANES, DOT_DEPTH = 16, 4  # x86 vpdpbusd (zmm): 16 int32 lanes, each the sum of 4 u8 x s8 products


def packable(layer: Conv) -> bool:
    """A 1x1 conv that runs as a u8 x s8 dot product over packed weights (`conv1x1_u8i8_te`)."""
    kh, kw, cin, cout = layer.weight.shape
    return (kh, kw, layer.groups, tuple(layer.strides)) == (1, 1, 1, (1, 1)) and not any(layer.padding) and (
        cin % DOT_DEPTH == 0 and cout % DOT_LANES == 0
    )


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """HWIO (1, 1, Cin, Cout) -> (Cout/16, Cin/4, 16, 4): each 16x4 block is one vpdpbusd operand."""
    _, _, cin, cout = weight.shape
    w = weight.reshape(cin // DOT_DEPTH, DOT_DEPTH, cout // DOT_LANES, DOT_LANES)
    return np.ascontiguousarray(w.transpose(2, 0, 3, 1))


def conv1x1_u8i8_te(x: te.Tensor, packed: te.Tensor) -> te.Tensor:
    """1x1 conv of int8 NHWC `x` as uint8 (x + 128) times packed int8 weights, int32 sums (the +128 is
    corrected in the bias): the operand types of x86's vpdpbusd, as oneDNN and XNNPACK do it."""
    data = te.compute(x.shape, lambda *i: (x(*i).astype("int32") + 128).astype("uint8"), name="data_u8")
    n, height, width, cin = (int(d) for d in x.shape)
    cout = int(packed.shape[0]) * DOT_LANES
    k = te.reduce_axis((0, cin), "rc")

    def body(b, y, xx, c):
        w = packed[c // DOT_LANES, k // DOT_DEPTH, c % DOT_LANES, k % DOT_DEPTH]
        return te.sum(data[b, y, xx, k].astype("int32") * w.astype("int32"), axis=[k])

    return te.compute((n, height, width, cout), body, name="conv2d_nhwc_u8i8")


def _emit_conv(bb, x, layer: Conv, dot_product: bool = False) -> relax.Var:
    weight = _const(layer.weight, "int8")
    data_zero_point = layer.input_zero_point
    if dot_product and packable(layer):
        acc = bb.emit_te(conv1x1_u8i8_te, x, _const(pack_weight(layer.weight), "int8"), primfunc_name_hint="conv1x1_u8i8")
        data_zero_point += 128
    elif any(layer.padding):  # padded with the input's zero point, inside the conv's kernel
        args = (layer.strides, layer.padding, layer.groups, layer.input_zero_point)
        acc = bb.emit_te(lambda a, b: conv_te(a, b, *args), x, weight, primfunc_name_hint="conv2d_int8")
    else:
        acc = bb.emit(
            relax.op.nn.conv2d(x, weight, strides=list(layer.strides), groups=layer.groups, data_layout="NHWC",
                               kernel_layout="HWIO", out_dtype="int32")
        )  # fmt: skip
    bias = layer.bias.astype(np.int64) - data_zero_point * layer.weight.astype(np.int64).sum(axis=(0, 1, 2))
    acc = bb.emit(relax.op.add(acc, _const(bias, "int32")))
    return _emit_requantize(bb, acc, layer.multiplier, layer.exponent, layer.output_zero_point, layer.clamp)


def _emit_mean(bb, x, layer: MeanPool) -> relax.Var:
    total = bb.emit(relax.op.sum(relax.op.astype(x, "int32"), axis=[1, 2], keepdims=True))
    total = bb.emit(relax.op.add(total, _const(-layer.size * layer.zero_point, "int32")))
    return _emit_requantize(bb, total, layer.multiplier, layer.exponent, layer.output_zero_point, (QMIN, QMAX))


def mean_pool(size: int, input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int) -> MeanPool:
    (multiplier,), (exponent,) = quantize_multiplier(input_scale / (size * output_scale))
    return MeanPool(input_zero_point, size, int(multiplier), int(exponent), output_zero_point)


def to_relax(model: IntegerModel, dot_product: bool = False) -> tvm.IRModule:
    """The integer graph as a Relax module: float32 NCHW in, float32 out (a 1-tuple, like the imported models).
    `dot_product`: the target has x86's u8 x s8 dot product (AVX-512 VNNI); 1x1 convs then take its form."""
    bb = relax.BlockBuilder()
    x = relax.Var(model.input_name, relax.TensorType(list(model.input_shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
            h = bb.emit(relax.op.multiply(h, _const(1.0 / model.input_scale, "float32")))
            h = bb.emit(relax.op.floor(relax.op.add(h, _const(0.5, "float32"))))
            h = bb.emit(relax.op.add(h, _const(model.input_zero_point, "float32")))
            h = bb.emit(relax.op.astype(relax.op.clip(h, float(QMIN), float(QMAX)), "int8"))
            for layer in model.layers:
                h = _emit_conv(bb, h, layer, dot_product) if isinstance(layer, Conv) else _emit_mean(bb, h, layer)
            h = bb.emit(relax.op.astype(h, "float32"))
            h = bb.emit(relax.op.subtract(h, _const(model.output_zero_point, "float32")))
            h = bb.emit(relax.op.multiply(h, _const(model.output_scale, "float32")))
            h = bb.emit(relax.op.reshape(h, list(model.output_shape)))
            out = bb.emit_output(relax.Tuple([h]))
        bb.emit_func_output(out)
    return bb.get()
