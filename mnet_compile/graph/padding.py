"""Channel padding: every channel count rounded up to the SIMD width, at compile time.

An alpha such as 0.4 gives 12, 25, 51, 102, 204, 409 channels; no vector width divides them, and a
kernel whose channel loop cannot be vectorized runs nearly scalar. So each conv gets zero output
channels up to a multiple of the lanes (zero weights, zero bias), and every consumer of a padded tensor
gets zero input weights for the extra channels: their values never reach the output, which is exactly
the unpadded model's. The pass knows the operators of the built-in models; a padded tensor reaching any
other operator (or the output) leaves the module unpadded, as it was.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

ELEMENTWISE_UNARY = {
    "relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.silu",
    "relax.nn.hardswish", "relax.nn.hardsigmoid",
}  # fmt: skip
ELEMENTWISE_BINARY = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum"}


class Unsupported(Exception):
    """A padded tensor reaches an operator this pass does not know."""


def padded_size(channels: int, lanes: int) -> int:
    """The channel count a kernel gets: a multiple of `lanes`; a small layer a power of two (8 channels
    stay 8 on 16 lanes: a half register beats doubling the work)."""
    if channels <= lanes:
        size = 1
        while size < channels:
            size *= 2
        return size
    return -(-channels // lanes) * lanes


def _shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _const(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def _pad_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return np.pad(array, widths)


@relax.expr_functor.mutator
class _ChannelPadder(relax.PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)
        self.lanes = lanes
        self.padded: dict = {}  # new var -> (axis, original channels)
        self.unsupported: str | None = None  # why the module must stay unpadded

    def visit_var_binding_(self, binding):
        """Rewrites each binding; an Unsupported one is recorded, not raised (it would cross the FFI)."""
        if self.unsupported is None:
            try:
                return self._visit_binding(binding)
            except Unsupported as exc:
                self.unsupported = str(exc)
        self._emit(binding, relax.const(0.0))  # a placeholder: the module is discarded

    def _emit(self, binding, value):
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        new_var = emit(value, binding.var.name)
        self.set_var_remap(binding.var, new_var)
        return new_var

    def _info(self, expr):
        return self.padded.get(expr) if isinstance(expr, relax.Var) else None

    def _visit_binding(self, binding):
        value, info = binding.value, None
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            # the arguments remapped by hand: the stock visitor would infer shapes before the rewrite
            args = [self.visit_expr(a) for a in value.args]
            value, info = self._rewrite(relax.Call(value.op, args, value.attrs, value.ty_args), binding.value)
        else:
            value = self.visit_expr(value)
            if any(self._info(e) for e in _vars_in(value)):
                raise Unsupported(type(value).__name__)
        new_var = self._emit(binding, value)
        if info is not None:
            self.padded[new_var] = info

    def _rewrite(self, call, old):
        """(new call, padding of its result) for `call`, whose arguments are already remapped; `old` is
        the original call, whose inferred shape the rewrite may read."""
        name = call.op.name
        args = list(call.args)
        infos = [self._info(a) for a in args]
        if name == "relax.nn.conv2d":
            return self._conv2d(call, args[0], args[1], infos[0])
        if not any(infos):
            return call, None
        info = next(i for i in infos if i)
        if name in ELEMENTWISE_UNARY:
            return call, info
        if name in ELEMENTWISE_BINARY:
            return self._binary(call, old, args, infos, info)
        if name == "relax.mean":
            return self._reduce_spatial(call, info)
        if name == "relax.permute_dims":
            axes = [int(a) for a in call.attrs.axes]
            return call, (axes.index(info[0]), info[1])
        if name == "relax.reshape":
            return self._reshape(call, args[0], info)
        if name == "relax.matmul":
            weight = _const(args[1])
            if infos[1] or weight is None or weight.ndim != 2 or info[0] != len(_shape(args[0])) - 1:
                raise Unsupported(name)
            padded = _shape(args[0])[info[0]]
            return relax.Call(call.op, [args[0], relax.const(_pad_axis(weight, 0, padded))], call.attrs), None
        raise Unsupported(name)

    def _conv2d(self, call, data, weight, info):
        attrs, w = call.attrs, _const(weight)
        groups, channels_in = int(attrs.groups), _shape(data)[3]
        layouts = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NHWC", "HWIO", "NHWC")
        depthwise = info is not None and w is not None and groups == info[1] and w.shape[2] == 1
        if not layouts or w is None or (groups > 1 and not depthwise):
            if info:
                raise Unsupported("conv2d")
            return call, None
        if depthwise:  # the extra channels get zero filters
            w, groups, result = _pad_axis(w, 3, channels_in), channels_in, info
        else:
            if info:
                w = _pad_axis(w, 2, channels_in)
            original = w.shape[3]
            w = _pad_axis(w, 3, padded_size(original, self.lanes))
            result = (3, original) if w.shape[3] != original else None
        new = relax.op.nn.conv2d(
            data, relax.const(w), strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
            groups=groups, data_layout="NHWC", kernel_layout="HWIO", out_layout="NHWC", out_dtype=attrs.out_dtype,
        )  # fmt: skip
        return new, result

    def _binary(self, call, old, args, infos, info):
        axis, original = info
        new_args = []
        for arg, arg_info in zip(args, infos):
            if arg_info:
                if arg_info != info:
                    raise Unsupported(f"{call.op.name} of differently padded tensors")
                new_args.append(arg)
                continue
            value = _const(arg)
            if value is None:
                raise Unsupported(f"{call.op.name} with an unpadded tensor")
            rank = len(_shape(old))
            position = axis - (rank - value.ndim)  # numpy broadcasting aligns trailing axes
            if position >= 0 and value.shape[position] == original:
                padded = _shape(next(a for a, i in zip(args, infos) if i))[axis]
                value = _pad_axis(value, position, padded)
            elif position >= 0 and value.shape[position] != 1:
                raise Unsupported(f"{call.op.name} constant of shape {value.shape}")
            new_args.append(relax.const(value))
        return relax.Call(call.op, new_args, call.attrs), info

    def _reduce_spatial(self, call, info):
        axis, original = info
        axes = [int(a) for a in call.attrs.axis] if call.attrs.axis is not None else None
        if axes is None or axis in axes:
            raise Unsupported("a reduction over the channels")
        return call, (axis if call.attrs.keepdims else axis - sum(a < axis for a in axes), original)

    def _reshape(self, call, data, info):
        axis, original = info
        shape = _shape(data)
        target = [int(d) for d in call.args[1].values]
        others = [d for i, d in enumerate(shape) if i != axis]
        if any(d != 1 for d in others) or target.count(original) != 1 or np.prod(target) != original:
            raise Unsupported("reshape of a padded tensor")
        position = target.index(original)
        target[position] = shape[axis]
        return relax.op.reshape(data, target), (position, original)


def _vars_in(expr) -> list:
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Tuple):
        return [f for f in expr.fields if isinstance(f, relax.Var)]
    return []


def pad_channels(mod: tvm.IRModule, lanes: int) -> tvm.IRModule:
    """`mod` with every conv's channel count padded for `lanes`-wide vectors, or `mod` unchanged when
    a padded tensor would reach an operator the pass does not know."""
    padder = _ChannelPadder(mod, lanes)
    func = padder.visit_expr(mod["main"])
    if padder.unsupported is not None or not padder.padded:
        return mod
    out = mod.clone()
    out["main"] = func
    return out
