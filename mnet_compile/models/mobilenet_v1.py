"""MobileNet v1 exactly as the paper's Table 1 (v1_table.py), with width multiplier alpha."""

from __future__ import annotations

import torch
from torch import nn

from .v1_table import convs


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
        layers = convs(alpha)
        self.features = nn.Sequential(*(conv_bn_relu(*layer) for layer in layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(layers[-1].cout, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
