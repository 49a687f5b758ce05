"""MobileNet v1 exactly as the paper's Table 1, with width multiplier alpha and any valid resolution."""

from __future__ import annotations

import os

import torch
from torch import nn

from .errors import MnetError

# (output channels at alpha 1.0, stride) of the 3x3 depthwise + 1x1 pointwise blocks of Table 1.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
STEM_CHANNELS = 32
MIN_CHANNELS = 8  # TF-slim's min_depth: no layer is thinner than this, whatever alpha is
RESOLUTION_RULE = "a multiple of 32 from 32 to 1024 (five stride-2 stages halve it evenly)"


def scaled(channels: int, alpha: float) -> int:
    """Channel count of a layer under width multiplier alpha (TF-slim: max(int(c * alpha), 8))."""
    return max(MIN_CHANNELS, int(channels * alpha))


def check_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise MnetError(f"alpha must be a number in (0, 1], got {alpha!r}") from None
    if not 0.0 < value <= 1.0:
        raise MnetError(f"alpha must be in (0, 1], got {alpha}")
    return value


def check_resolution(resolution) -> int:
    try:
        value = int(str(resolution))
    except ValueError:
        raise MnetError(f"resolution must be {RESOLUTION_RULE}, got {resolution!r}") from None
    if value % 32 or not 32 <= value <= 1024:
        raise MnetError(f"resolution must be {RESOLUTION_RULE}, got {value}")
    return value


def check_classes(classes) -> int:
    if not isinstance(classes, int) or classes < 1:
        raise MnetError(f"classes must be a positive integer, got {classes!r}")
    return classes


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """3x3 conv, 13 depthwise-separable blocks, global average pool, fully connected (logits)."""

    def __init__(self, alpha: float = 1.0, classes: int = 1000):
        super().__init__()
        self.alpha = check_alpha(alpha)
        cin = scaled(STEM_CHANNELS, self.alpha)
        layers = [conv_bn_relu(3, cin, 3, 2)]
        for cout, stride in BLOCKS:
            cout = scaled(cout, self.alpha)
            layers.append(conv_bn_relu(cin, cin, 3, stride, groups=cin))  # depthwise
            layers.append(conv_bn_relu(cin, cout, 1, 1))  # pointwise
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, check_classes(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights from a seed, BatchNorm statistics and affine included (so folding is exercised)."""
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
    return model


def load_state_dict(model: nn.Module, path: str) -> nn.Module:
    """Load a PyTorch state_dict file, with one-line errors for unreadable or mismatched files."""
    if not os.path.isfile(path):
        raise MnetError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise MnetError(f"cannot read weights file {path}: {str(exc).splitlines()[0]}") from None
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
            f"weights file {path} does not fit MobileNet v1 alpha={model.alpha}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {', '.join(names)})"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise MnetError(
                f"weights file {path} does not fit MobileNet v1 alpha={model.alpha}: {name} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)
    return model


def build_model(alpha: float = 1.0, classes: int = 1000, seed: int = 0, weights: str | None = None) -> MobileNetV1:
    """The model in eval mode, weights from `weights` (a state_dict file) or else from `seed`."""
    model = MobileNetV1(alpha, classes)
    if weights:
        load_state_dict(model, weights)
    else:
        randomize(model, seed)
    return model.eval()
