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
- the float input is quantized by the model's first conv as it reads it: q = clip(floor(x * (1 / scale)
  + 0.5) + zp) in float32; the int8 logits are dequantized by the last op: (q - zp) * scale;
- a residual add (`Add`) rescales both inputs to 2 * max(scale) with 20 bits of headroom and requantizes
  the sum (TFLite's int8 ADD); `Softmax` is TFLite's int8 softmax (a float exp table, float normalization).

Tensors between layers are int8 (NHWC); a conv accumulates in int32 (conv2d with out_dtype int32). Each layer
reads the previous layer's output (an `Add` also an earlier one's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

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


ADD_LEFT_SHIFT = 20  # TFLite's headroom for int8 ADD


@dataclass
class Add:
    """The previous layer's output plus layer `other`'s: each input (q - zp) << 20 rescaled by its
    (multiplier, exponent), summed, requantized to the output (TFLite's int8 ADD, single rounding)."""

    other: int  # index of the layer whose output is the second input
    zero_points: tuple[int, int]  # (previous layer's, other's)
    multipliers: tuple[int, int]
    exponents: tuple[int, int]
    multiplier: int
    exponent: int
    output_zero_point: int
    clamp: tuple[int, int]


@dataclass
class Softmax:
    """TFLite's int8 softmax over the last axis: e = table[max - q] (table[d] = exp(-input_scale * beta * d),
    float32), p = e * (1 / (sum(e) * output_scale)), q = round(p) + zp (round half away from zero)."""

    table: np.ndarray  # float32 (256,)
    output_scale: float
    output_zero_point: int


@dataclass
class IntegerModel:
    input_name: str
    input_shape: tuple[int, ...]  # the float32 input, in input_layout
    input_scale: float
    input_zero_point: int
    layers: list = field(default_factory=list)
    output_scale: float = 1.0
    output_zero_point: int = 0
    output_shape: tuple[int, ...] = ()
    input_layout: str = "NCHW"  # or "NHWC" (TFLite files)
    scales: list = field(default_factory=list)  # each layer's output scale (float), where recorded


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


def _emit_rescale(bb, x, multiplier, exponent) -> relax.Var:
    """int64 x -> (x * M + 2^(k-1)) >> k, k = 31 - exponent (M, k scalars or per channel)."""
    shift = 31 - np.asarray(exponent, np.int64)
    if shift.min() < 1 or shift.max() > 62:
        raise ValueError(f"requantization shift out of range: {shift.min()}..{shift.max()}")
    x = bb.emit(relax.op.multiply(x, _const(multiplier, "int64")))
    x = bb.emit(relax.op.add(x, _const(np.left_shift(np.int64(1), shift - 1), "int64")))
    return bb.emit(relax.op.right_shift(x, _const(shift, "int64")))


def _emit_requantize(bb, acc, multiplier, exponent, zero_point: int, clamp) -> relax.Var:
    """int32 accumulators -> int8: ((acc * M + 2^(k-1)) >> k) + zp, clamped; M, k per channel, in int64."""
    x = _emit_rescale(bb, bb.emit(relax.op.astype(acc, "int64")), multiplier, exponent)
    x = bb.emit(relax.op.add(x, _const(zero_point, "int64")))
    x = bb.emit(relax.op.clip(x, int(clamp[0]), int(clamp[1])))
    return bb.emit(relax.op.astype(x, "int8"))


def _reader(x: te.Tensor, quantize):
    """(value(b, y, x, c) -> int8, NHWC shape) of a layer's input: an int8 NHWC tensor, or with
    `quantize` = (1 / scale, zero point, layout) the float model input (NCHW or NHWC), quantized as it is read."""
    if quantize is None:
        return (lambda b, y, xx, c: x[b, y, xx, c]), tuple(int(d) for d in x.shape)
    inverse, zero_point, layout = quantize
    nhwc = layout == "NHWC"

    def value(b, y, xx, c):
        real = x[b, y, xx, c] if nhwc else x[b, c, y, xx]
        q = tirx.floor(real * tirx.const(inverse, "float32") + tirx.const(0.5, "float32"))
        q = q + tirx.const(zero_point, "float32")
        return tirx.max(tirx.min(q, tirx.const(QMAX, "float32")), tirx.const(QMIN, "float32")).astype("int8")

    if nhwc:
        return value, tuple(int(d) for d in x.shape)
    n, c, h, w = (int(d) for d in x.shape)
    return value, (n, h, w, c)


def _padded(read, shape, padding, zero_point: int):
    """(value(b, y, x, c) of the input padded with `zero_point` (a real 0), padded shape); no bounds test
    where there is no padding (a 1x1 conv's data block is then its input as it is, inlined on AMX)."""
    if not any(padding):
        return read, shape
    top, left, bottom, right = padding
    n, h, w, c = shape

    def value(b, y, xx, ch):
        inside = tirx.all(y >= top, y < top + h, xx >= left, xx < left + w)
        return tirx.if_then_else(inside, read(b, y - top, xx - left, ch), tirx.const(zero_point, "int8"))

    return value, (n, h + top + bottom, w + left + right, c)


def conv_te(x: te.Tensor, w: te.Tensor, strides, padding, groups: int, zero_point: int, quantize=None) -> te.Tensor:
    """NHWC int8 conv (dense or depthwise) accumulating in int32, its input padded with `zero_point`
    (and quantized from the float NCHW input, with `quantize`).

    Blocks as topi's legalized conv2d (`pad_temp`, then `conv2d_nhwc` / `group_conv2d_nhwc`, spatial axes then
    3 reduction axes), so the CPU conv rules recognize it; padding with the zero point (a real 0) inside the
    kernel is what relax's conv2d cannot do (it pads with 0). Products are int16 (an int8 x int8 product
    fits), summed in int32; with float32 weights (`exact_float_depthwise`) summed in float32, exactly, then
    converted to int32."""
    read, shape = _padded(*_reader(x, quantize), padding, zero_point)
    pad = te.compute(shape, read, name="pad_temp")
    n, height, width, _ = shape
    kh, kw, cin, cout = (int(d) for d in w.shape)
    (sh, sw), depthwise = strides, groups > 1
    if depthwise and (cin != 1 or groups != cout):
        raise ValueError("grouped convolutions other than depthwise are not supported")
    out_shape = (n, (height - kh) // sh + 1, (width - kw) // sw + 1, cout)
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cin), "rc")

    exact_float = w.dtype == "float32"

    def body(b, y, xx, c):
        data = pad[b, y * sh + ry, xx * sw + rx, c + rc if depthwise else rc]
        if exact_float:
            return te.sum(data.astype("float32") * w[ry, rx, rc, c], axis=[ry, rx, rc])
        return te.sum((data.astype("int16") * w[ry, rx, rc, c].astype("int16")).astype("int32"), axis=[ry, rx, rc])

    conv = te.compute(out_shape, body, name="group_conv2d_nhwc" if depthwise else "conv2d_nhwc")
    return te.compute(out_shape, lambda *i: conv(*i).astype("int32"), name="sums") if exact_float else conv


DOT_LANES, DOT_DEPTH = 16, 4  # a 16 x 4 weight block: 16 int32 lanes, each the sum of 4 int8 products
DOT_FORMS = {"u8i8": "uint8", "i8i8": "int8"}  # operand form -> the data's dtype


def packable(layer: Conv) -> bool:
    """A dense conv that runs as a dot product over packed weights (`conv_dot_te`)."""
    return layer.groups == 1 and layer.weight.shape[3] % DOT_LANES == 0


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """HWIO (kh, kw, Cin, Cout) -> (Cout/16, kh*kw*Cin4/4, 16, 4), Cin4 = Cin rounded up to 4 (zero
    weights): each 16x4 block is one zmm vpdpbusd operand, two ymm ones, or four 4x4 sdot operands (16
    bytes each), 4 input channels of one tap."""
    kh, kw, cin, cout = weight.shape
    cin4 = -(-cin // DOT_DEPTH) * DOT_DEPTH
    w = np.zeros((kh, kw, cin4, cout), weight.dtype)
    w[:, :, :cin] = weight
    w = w.reshape(kh * kw * cin4 // DOT_DEPTH, DOT_DEPTH, cout // DOT_LANES, DOT_LANES)
    return np.ascontiguousarray(w.transpose(2, 0, 3, 1))


def data_offset(form: str) -> int:
    """What the data of a dot-product conv adds to the int8 input: 128 for u8 x s8 (x86's vpdpbusd), 0 for s8 x s8."""
    return 128 if form == "u8i8" else 0


def conv_dot_te(x: te.Tensor, packed: te.Tensor, kernel, strides, padding, zero_point: int, form: str, quantize=None) -> te.Tensor:
    """A dense conv as int8 dot products over packed weights, int32 sums. `form` "u8i8": the int8 input +
    128 as uint8 times int8 weights, the operand types of x86's vpdpbusd as oneDNN and XNNPACK do it (the
    +128 is corrected in the bias); "i8i8": the int8 input as it is (ARM's sdot, widening multiplies). The
    data block pads the input with the zero point and its channels with zeros up to a multiple of 4."""
    read, shape = _padded(*_reader(x, quantize), padding, zero_point)
    kh, kw = kernel
    (sh, sw), cin = strides, shape[3]
    cin4 = -(-cin // DOT_DEPTH) * DOT_DEPTH
    dtype, offset = DOT_FORMS[form], data_offset(form)

    def shifted(b, y, xx, c):
        value = read(b, y, xx, c) if not offset else (read(b, y, xx, c).astype("int32") + offset).astype(dtype)
        return value if cin4 == cin else tirx.if_then_else(c < cin, value, tirx.const(offset, dtype))

    data = te.compute((*shape[:3], cin4), shifted, name="data_u8" if offset else "data_i8")
    out = (shape[0], (shape[1] - kh) // sh + 1, (shape[2] - kw) // sw + 1, int(packed.shape[0]) * DOT_LANES)
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cin4), "rc")

    def body(b, y, xx, c):
        k = (ry * kw + rx) * cin4 + rc
        w = packed[c // DOT_LANES, k // DOT_DEPTH, c % DOT_LANES, rc % DOT_DEPTH]
        return te.sum(data[b, y * sh + ry, xx * sw + rx, rc].astype("int32") * w.astype("int32"), axis=[ry, rx, rc])

    return te.compute(out, body, name=f"conv2d_nhwc_{form}")


def pad_channels(layers: list, lanes: int = DOT_LANES) -> list:
    """The layers with every dense conv's outputs (but the last conv's) padded to a multiple of `lanes`
    by zero filters, as the fp32 graph does (graph/padding.py): a padded channel holds its zero point (a real
    0), the depthwise convs after it get zero filters for it and the next dense conv zero weights, so the
    output is exactly the unpadded model's. Small alphas' 8-channel layers then fit the dot product."""
    out, extra = [], 0  # extra: zero channels appended to the current tensor
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, Conv))
    for index, layer in enumerate(layers):
        if not isinstance(layer, Conv):
            out.append(layer)
            continue
        kh, kw, cin, cout = layer.weight.shape
        weight, groups = layer.weight, layer.groups
        if groups > 1:  # depthwise: as many channels as its input
            add = extra
            groups += add
        else:
            weight = np.concatenate([weight, np.zeros((kh, kw, extra, cout), weight.dtype)], axis=2)
            add = 0 if index == last else -cout % lanes
        weight = np.concatenate([weight, np.zeros((kh, kw, weight.shape[2], add), weight.dtype)], axis=3)
        grow = lambda a: np.concatenate([a, np.zeros(add, a.dtype)])  # noqa: E731
        out.append(replace(layer, weight=weight, bias=grow(layer.bias), groups=groups,
                           multiplier=grow(np.asarray(layer.multiplier)), exponent=grow(np.asarray(layer.exponent))))  # fmt: skip
        extra = add
    return out


def exact_float_depthwise(layer: Conv, dot_product: str | None) -> bool:
    """Whether a 3x3 depthwise conv sums its products in float32: exact, since 9 products of two int8
    values are at most 9 * 128 * 128 < 2^24 in magnitude, so every partial sum is an integer float32 holds.
    It then runs as FMAs with each input converted once for all its taps, instead of int16 products widened
    to int32 per tap. On x86 VNNI hosts (the u8i8 form, where it was measured, same blocking, alternated runs:
    1.0-224's 112x112x32 depthwise 17% faster, its 14x14x512 5%); elsewhere in int16 (ARM's widening
    multiply-accumulates were not compared)."""
    return dot_product == "u8i8" and layer.groups > 1 and layer.weight.shape[:2] == (3, 3)


def pointwise(layer: Conv) -> bool:
    """A 1x1 conv of stride 1 that runs as a dot product (a GEMM over pixels)."""
    return packable(layer) and layer.weight.shape[:2] == (1, 1) and tuple(layer.strides) == (1, 1) and not any(layer.padding)


def _emit_conv(bb, x, layer: Conv, dot_product: str | None = None, quantize=None, pointwise_form: str | None = None) -> relax.Var:
    """The conv, its bias and requantization; `quantize`: x is the float model input, quantized as read;
    `pointwise_form`: the 1x1 convs' operand form where it is not `dot_product`'s."""
    if dot_product and pointwise_form and pointwise(layer):
        dot_product = pointwise_form
    data_zero_point = layer.input_zero_point
    if dot_product and packable(layer):
        args = (layer.weight.shape[:2], layer.strides, layer.padding, layer.input_zero_point, dot_product, quantize)
        packed = _const(pack_weight(layer.weight), "int8")
        acc = bb.emit_te(lambda a, b: conv_dot_te(a, b, *args), x, packed, primfunc_name_hint=f"conv_{dot_product}")
        data_zero_point += data_offset(dot_product)
    elif any(layer.padding) or quantize is not None:  # padded with the zero point, inside the conv's kernel
        args = (layer.strides, layer.padding, layer.groups, layer.input_zero_point, quantize)
        weight = _const(layer.weight, "float32" if exact_float_depthwise(layer, dot_product) else "int8")
        acc = bb.emit_te(lambda a, b: conv_te(a, b, *args), x, weight, primfunc_name_hint="conv2d_int8")
    else:
        acc = bb.emit(
            relax.op.nn.conv2d(x, _const(layer.weight, "int8"), strides=list(layer.strides), groups=layer.groups,
                               data_layout="NHWC", kernel_layout="HWIO", out_dtype="int32")
        )  # fmt: skip
    bias = layer.bias.astype(np.int64) - data_zero_point * layer.weight.astype(np.int64).sum(axis=(0, 1, 2))
    if dot_product and pointwise(layer):
        return _emit_requantize_sums(bb, acc, bias, layer)
    acc = bb.emit(relax.op.add(acc, _const(bias, "int32")))
    return _emit_requantize(bb, acc, layer.multiplier, layer.exponent, layer.output_zero_point, layer.clamp)


def _emit_requantize_sums(bb, acc, bias: np.ndarray, layer: Conv) -> relax.Var:
    """The int32 sums of a 1x1 dot-product conv -> int8, as `_emit_requantize` of acc + bias but in one op:
    (acc * M + (bias * M + 2^(k-1))) >> k, the bias folded into the rounding constant (the same integers,
    each term below 2^62) and M an int32 parameter, so the product is a 32 x 32 -> 64-bit multiply
    (`vpmuldq`; with acc + bias first, LLVM cannot tell the sum fits 32 bits and multiplies 64 x 64,
    `vpmullq`: 1.0-224's 112x112 1x1 kernel took 1.3x as long, its 14x14 ones 1.1x)."""
    cout = layer.weight.shape[3]
    multiplier = np.broadcast_to(np.asarray(layer.multiplier, np.int64), cout)
    shift = 31 - np.broadcast_to(np.asarray(layer.exponent, np.int64), cout)
    if shift.min() < 1 or shift.max() > 62:
        raise ValueError(f"requantization shift out of range: {shift.min()}..{shift.max()}")
    offset = bias * multiplier + np.left_shift(np.int64(1), shift - 1)
    low, high = (int(v) for v in layer.clamp)

    def requantize(sums, m, add, k):
        def value(*i):
            c = i[-1]
            v = (sums(*i).astype("int64") * m[c].astype("int64") + add[c]) >> k[c]
            return tirx.max(tirx.min(v + layer.output_zero_point, high), low).astype("int8")

        return te.compute(sums.shape, value, name="requantize")

    return bb.emit_te(requantize, acc, _const(multiplier, "int32"), _const(offset, "int64"), _const(shift, "int64"),
                      primfunc_name_hint="requantize")  # fmt: skip


def _emit_mean(bb, x, layer: MeanPool) -> relax.Var:
    total = bb.emit(relax.op.sum(relax.op.astype(x, "int32"), axis=[1, 2], keepdims=True))
    total = bb.emit(relax.op.add(total, _const(-layer.size * layer.zero_point, "int32")))
    return _emit_requantize(bb, total, layer.multiplier, layer.exponent, layer.output_zero_point, (QMIN, QMAX))


def _emit_add(bb, x, other, layer: Add) -> relax.Var:
    total = None
    for value, zero_point, multiplier, exponent in zip((x, other), layer.zero_points, layer.multipliers, layer.exponents):
        v = bb.emit(relax.op.astype(value, "int64"))
        v = bb.emit(relax.op.multiply(relax.op.subtract(v, _const(zero_point, "int64")), _const(1 << ADD_LEFT_SHIFT, "int64")))
        v = _emit_rescale(bb, v, multiplier, exponent)
        total = v if total is None else bb.emit(relax.op.add(total, v))
    total = _emit_rescale(bb, total, layer.multiplier, layer.exponent)
    total = bb.emit(relax.op.add(total, _const(layer.output_zero_point, "int64")))
    return bb.emit(relax.op.astype(relax.op.clip(total, int(layer.clamp[0]), int(layer.clamp[1])), "int8"))


def _emit_softmax(bb, x, layer: Softmax) -> relax.Var:
    q = bb.emit(relax.op.astype(x, "int32"))
    gap = bb.emit(relax.op.subtract(relax.op.max(q, axis=-1, keepdims=True), q))  # 0..255
    e = bb.emit(relax.op.take(_const(layer.table, "float32"), gap, axis=0, mode="clip"))
    total = bb.emit(relax.op.sum(e, axis=-1, keepdims=True))
    inverse = bb.emit(relax.op.divide(_const(1.0, "float32"), relax.op.multiply(total, _const(layer.output_scale, "float32"))))
    p = bb.emit(relax.op.multiply(e, inverse))
    low = bb.emit(relax.op.floor(p))
    up = bb.emit(relax.op.astype(relax.op.greater_equal(relax.op.subtract(p, low), _const(0.5, "float32")), "int32"))
    out = bb.emit(relax.op.add(relax.op.add(relax.op.astype(low, "int32"), up), _const(layer.output_zero_point, "int32")))
    return bb.emit(relax.op.astype(relax.op.clip(out, QMIN, QMAX), "int8"))


def add_layer(other: int, scales, zero_points, output_scale: float, output_zero_point: int, clamp=(QMIN, QMAX)) -> Add:
    """TFLite's int8 ADD of two inputs with `scales` and `zero_points` (the previous layer's, then `other`'s)."""
    twice_max = 2 * max(float(s) for s in scales)
    (m1, m2), (e1, e2) = quantize_multiplier(np.array([float(s) / twice_max for s in scales]))
    (m,), (e,) = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * output_scale))
    return Add(other, tuple(int(z) for z in zero_points), (int(m1), int(m2)), (int(e1), int(e2)), int(m), int(e),
               int(output_zero_point), tuple(int(c) for c in clamp))  # fmt: skip


def softmax_layer(input_scale: float, beta: float, output_scale: float, output_zero_point: int) -> Softmax:
    """TFLite's table: exp(-input_scale * beta * d) for d = 0..255, in float32 as expf computes it."""
    scale = np.float32(-np.float32(input_scale) * np.float32(beta))
    table = np.exp((scale * np.arange(256, dtype=np.float32)).astype(np.float64)).astype(np.float32)
    return Softmax(table, float(output_scale), int(output_zero_point))


def mean_pool(size: int, input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int) -> MeanPool:
    (multiplier,), (exponent,) = quantize_multiplier(input_scale / (size * output_scale))
    return MeanPool(input_zero_point, size, int(multiplier), int(exponent), output_zero_point)


def to_relax(model: IntegerModel, dot_product: str | None = None, pointwise_form: str | None = None) -> tvm.IRModule:
    """The integer graph as a Relax module: float32 in (its input_layout), float32 out (a 1-tuple, like the imported models).
    `dot_product`: the operand form of the target's int8 dot-product kernels (a DOT_FORMS key, from
    schedule.rules.int8.dot_form); the dense convs then take it, their channels padded to 16.
    `pointwise_form`: the 1x1 convs' form where it differs (int8.pointwise_form: s8 x s8 on AMX tiles)."""
    bb = relax.BlockBuilder()
    x = relax.Var(model.input_name, relax.TensorType(list(model.input_shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            if not model.layers or not isinstance(model.layers[0], Conv):
                raise ValueError("the integer graph starts with a conv")
            layers = pad_channels(model.layers) if dot_product else model.layers
            quantize = (1.0 / model.input_scale, model.input_zero_point, model.input_layout)  # by the first conv
            outs = [_emit_conv(bb, x, layers[0], dot_product, quantize, pointwise_form)]
            for layer in layers[1:]:
                h = outs[-1]
                if isinstance(layer, Conv):
                    outs.append(_emit_conv(bb, h, layer, dot_product, pointwise_form=pointwise_form))
                elif isinstance(layer, Add):
                    outs.append(_emit_add(bb, h, outs[layer.other], layer))
                elif isinstance(layer, Softmax):
                    outs.append(_emit_softmax(bb, h, layer))
                else:
                    outs.append(_emit_mean(bb, h, layer))
            h = outs[-1]
            h = bb.emit(relax.op.astype(h, "float32"))
            h = bb.emit(relax.op.subtract(h, _const(model.output_zero_point, "float32")))
            h = bb.emit(relax.op.multiply(h, _const(model.output_scale, "float32")))
            h = bb.emit(relax.op.reshape(h, list(model.output_shape)))
            out = bb.emit_output(relax.Tuple([h]))
        bb.emit_func_output(out)
    return bb.get()
