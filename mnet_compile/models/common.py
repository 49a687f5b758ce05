"""Torch pieces every architecture uses: seeded weights, state_dict loading, torchvision's shared layers."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import MnetError


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights from a seed: conv/linear weights and biases, BatchNorm affine and statistics
    (random statistics, so that BN folding is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features**0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    gen = torch.Generator().manual_seed(seed + 0x5EED)  # conv biases (v3's squeeze-excitation) from a second stream
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model


def _load_error(exc: Exception) -> str:
    """torch.load's error as one line, without its advice to retry with weights_only=False (which runs code)."""
    import re

    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects besides tensors{what}; mnet-compile reads only tensors and never runs "
                f"code from a weights file: save the model's state_dict() instead")
    if isinstance(exc, EOFError) or not text.strip():
        return "empty or truncated file" if isinstance(exc, EOFError) else type(exc).__name__
    return next(line.strip() for line in text.splitlines() if line.strip())[:300]


def load_state_dict(model: nn.Module, path: str, label: str) -> nn.Module:
    """Load a PyTorch state_dict file, with one-line errors (naming `label`) for unreadable or mismatched files."""
    if not os.path.isfile(path):
        raise MnetError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise MnetError(f"cannot read weights file {path}: {_load_error(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MnetError(f"weights file {path} does not hold a state_dict of tensors")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        names = (missing + unexpected)[:3]
        raise MnetError(
            f"weights file {path} does not fit {label}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {', '.join(names)})"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise MnetError(
                f"weights file {path} does not fit {label}: {name} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)
    return model


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision's rounding of channel counts: to the nearest multiple of divisor, never down by > 10%."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.misc.Conv2dNormActivation: conv (bias only without norm), norm, activation."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, norm_layer=nn.BatchNorm2d,
                 activation_layer=nn.ReLU, dilation=1):
        padding = (kernel_size - 1) // 2 * dilation
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups,
                            bias=norm_layer is None)]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """torchvision.ops.misc.SqueezeExcitation (MobileNet v3 passes scale_activation=Hardsigmoid)."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x):
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x):
        return self._scale(x) * x
