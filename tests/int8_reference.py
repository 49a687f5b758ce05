"""An independent numpy reference of the int8 integer graph (frontends/integer.py records), from TFLite's
integer semantics rather than from the emitted Relax: input quantization, zero-point padding, int32
accumulation, single-rounding fixed-point requantization, activation clamps, an integer mean, the residual
add (each input rescaled with 20 bits of headroom, then the sum), the float-table softmax.

`requantize="float"` swaps the fixed-point requantization of convs and means for XNNPACK's (float32(acc) *
float32 scale, rounded half to even), which is what LiteRT runs by default."""

import numpy as np

from mnet_compile.frontends.integer import ADD_LEFT_SHIFT, Add, Conv, Softmax


def _rescale(x, multiplier, exponent):
    shift = 31 - np.asarray(exponent, np.int64)
    return (x * np.asarray(multiplier, np.int64) + (np.int64(1) << (shift - 1))) >> shift


def _requantize(acc, multiplier, exponent, zero_point, low, high, requantize):
    if requantize == "float":
        real = np.asarray(multiplier, np.float64) * np.exp2(np.asarray(exponent, np.float64) - 31)
        value = np.rint(acc.astype(np.float32) * real.astype(np.float32)).astype(np.int64)
    else:
        value = _rescale(acc.astype(np.int64), multiplier, exponent)
    return np.clip(value + zero_point, low, high).astype(np.int8)


def _conv(x, weight, strides, groups):
    """Valid NHWC conv of int64 x with int8 HWIO weights; float64 products and sums are exact here."""
    kh, kw, _, _ = weight.shape
    sh, sw = strides
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = np.zeros((1, oh, ow, weight.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw].astype(np.float64)
            w = weight[i, j].astype(np.float64)
            out += patch @ w if groups == 1 else patch * w[0]
    return out.astype(np.int64)


def _softmax(q, layer: Softmax):
    q = q.astype(np.int64)
    e = layer.table[q.max(axis=-1, keepdims=True) - q]
    total = np.float32(0)
    for value in e.ravel():  # in order, in float32, as TFLite sums
        total = np.float32(total + value)
    p = e * (np.float32(1) / np.float32(total * np.float32(layer.output_scale)))
    low = np.floor(p)
    return np.clip(low + (p - low >= 0.5) + layer.output_zero_point, -128, 127).astype(np.int8)


def integer_reference(model, x: np.ndarray, requantize: str = "fixed") -> np.ndarray:
    """The int8 output of `model` (an IntegerModel) for the float input `x` (in model.input_layout)."""
    h = x.transpose(0, 2, 3, 1) if model.input_layout == "NCHW" else x
    q = np.floor(h * np.float32(1 / model.input_scale) + np.float32(0.5)) + model.input_zero_point
    q = np.clip(q, -128, 127).astype(np.int8)
    outs = []
    for layer in model.layers:
        if isinstance(layer, Conv):
            top, left, bottom, right = layer.padding
            centered = np.pad(q.astype(np.int64) - layer.input_zero_point, ((0, 0), (top, bottom), (left, right), (0, 0)))
            acc = _conv(centered, layer.weight, layer.strides, layer.groups) + layer.bias
            q = _requantize(acc, layer.multiplier, layer.exponent, layer.output_zero_point, *layer.clamp, requantize)
        elif isinstance(layer, Add):
            total = 0
            for v, zp, m, e in zip((q, outs[layer.other]), layer.zero_points, layer.multipliers, layer.exponents):
                total = total + _rescale((v.astype(np.int64) - zp) << ADD_LEFT_SHIFT, m, e)
            q = np.clip(_rescale(total, layer.multiplier, layer.exponent) + layer.output_zero_point, *layer.clamp).astype(np.int8)
        elif isinstance(layer, Softmax):
            q = _softmax(q, layer)
        else:  # the global mean
            acc = q.astype(np.int64).sum(axis=(1, 2), keepdims=True) - layer.size * layer.zero_point
            q = _requantize(acc, layer.multiplier, layer.exponent, layer.output_zero_point, -128, 127, requantize)
        outs.append(q)
    return q.reshape(model.output_shape)
