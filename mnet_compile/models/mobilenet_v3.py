"""MobileNet v3 small and large layer for layer as torchvision/models/mobilenetv3.py (same module names)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .common import Conv2dNormActivation, SqueezeExcitation, make_divisible


class InvertedResidualConfig:
    def __init__(self, input_channels, kernel, expanded_channels, out_channels, use_se, activation, stride,
                 dilation, width_mult):
        self.input_channels = self.adjust_channels(input_channels, width_mult)
        self.kernel = kernel
        self.expanded_channels = self.adjust_channels(expanded_channels, width_mult)
        self.out_channels = self.adjust_channels(out_channels, width_mult)
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride
        self.dilation = dilation

    @staticmethod
    def adjust_channels(channels: int, width_mult: float) -> int:
        return make_divisible(channels * width_mult, 8)


class InvertedResidualV3(nn.Module):
    """torchvision mobilenetv3.InvertedResidual: expand, depthwise, optional SE (hardsigmoid), project."""

    def __init__(self, cnf: InvertedResidualConfig, norm_layer,
                 se_layer=partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)):
        super().__init__()
        if not 1 <= cnf.stride <= 2:
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        layers = []
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, kernel_size=cnf.kernel,
                                           stride=stride, dilation=cnf.dilation, groups=cnf.expanded_channels,
                                           norm_layer=norm_layer, activation_layer=activation_layer))
        if cnf.use_se:
            squeeze_channels = make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(se_layer(cnf.expanded_channels, squeeze_channels))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


def mobilenet_v3_conf(arch: str, width_mult: float = 1.0, reduced_tail: bool = False, dilated: bool = False):
    """torchvision's _mobilenet_v3_conf: (inverted residual settings, last_channel)."""
    rd = 2 if reduced_tail else 1
    dil = 2 if dilated else 1
    b = partial(InvertedResidualConfig, width_mult=width_mult)
    if arch == "mobilenet_v3_large":
        setting = [
            b(16, 3, 16, 16, False, "RE", 1, 1),
            b(16, 3, 64, 24, False, "RE", 2, 1),  # C1
            b(24, 3, 72, 24, False, "RE", 1, 1),
            b(24, 5, 72, 40, True, "RE", 2, 1),  # C2
            b(40, 5, 120, 40, True, "RE", 1, 1),
            b(40, 5, 120, 40, True, "RE", 1, 1),
            b(40, 3, 240, 80, False, "HS", 2, 1),  # C3
            b(80, 3, 200, 80, False, "HS", 1, 1),
            b(80, 3, 184, 80, False, "HS", 1, 1),
            b(80, 3, 184, 80, False, "HS", 1, 1),
            b(80, 3, 480, 112, True, "HS", 1, 1),
            b(112, 3, 672, 112, True, "HS", 1, 1),
            b(112, 5, 672, 160 // rd, True, "HS", 2, dil),  # C4
            b(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1, dil),
            b(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1, dil),
        ]
        last_channel = InvertedResidualConfig.adjust_channels(1280 // rd, width_mult)  # C5
    elif arch == "mobilenet_v3_small":
        setting = [
            b(16, 3, 16, 16, True, "RE", 2, 1),  # C1
            b(16, 3, 72, 24, False, "RE", 2, 1),  # C2
            b(24, 3, 88, 24, False, "RE", 1, 1),
            b(24, 5, 96, 40, True, "HS", 2, 1),  # C3
            b(40, 5, 240, 40, True, "HS", 1, 1),
            b(40, 5, 240, 40, True, "HS", 1, 1),
            b(40, 5, 120, 48, True, "HS", 1, 1),
            b(48, 5, 144, 48, True, "HS", 1, 1),
            b(48, 5, 288, 96 // rd, True, "HS", 2, dil),  # C4
            b(96 // rd, 5, 576 // rd, 96 // rd, True, "HS", 1, dil),
            b(96 // rd, 5, 576 // rd, 96 // rd, True, "HS", 1, dil),
        ]
        last_channel = InvertedResidualConfig.adjust_channels(1024 // rd, width_mult)  # C5
    else:
        raise ValueError(f"unsupported model {arch}")
    return setting, last_channel


class MobileNetV3(nn.Module):
    def __init__(self, inverted_residual_setting, last_channel, num_classes=1000, dropout=0.2):
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        first = inverted_residual_setting[0].input_channels
        layers = [Conv2dNormActivation(3, first, kernel_size=3, stride=2, norm_layer=norm_layer,
                                       activation_layer=nn.Hardswish)]
        for cnf in inverted_residual_setting:
            layers.append(InvertedResidualV3(cnf, norm_layer))
        lastconv_in = inverted_residual_setting[-1].out_channels
        lastconv_out = 6 * lastconv_in
        layers.append(Conv2dNormActivation(lastconv_in, lastconv_out, kernel_size=1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_out, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
