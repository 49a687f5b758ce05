"""MobileNet v1's layers as the paper's Table 1, as plain data: the torch module and the cost model both read it."""

from __future__ import annotations

from typing import NamedTuple

# (output channels at alpha 1.0, stride) of the 3x3 depthwise + 1x1 pointwise blocks of Table 1.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
STEM_CHANNELS = 32
MIN_CHANNELS = 8  # TF-slim's min_depth: no layer is thinner than this, whatever alpha is


class Conv(NamedTuple):
    """One conv + BatchNorm + ReLU layer (padding kernel // 2, no bias)."""

    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int


def scaled(channels: int, alpha: float) -> int:
    """Channel count of a layer under width multiplier alpha (TF-slim: max(int(c * alpha), 8))."""
    return max(MIN_CHANNELS, int(channels * alpha))


def convs(alpha: float) -> list[Conv]:
    """The stem and the 13 depthwise/pointwise pairs, in order; the last one's cout feeds the classifier."""
    cin = scaled(STEM_CHANNELS, alpha)
    layers = [Conv(3, cin, 3, 2, 1)]
    for cout, stride in BLOCKS:
        cout = scaled(cout, alpha)
        layers += [Conv(cin, cin, 3, stride, cin), Conv(cin, cout, 1, 1, 1)]
        cin = cout
    return layers
