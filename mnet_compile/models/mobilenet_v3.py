"""MobileNet v2 and v3 (small, large), layer for layer as torchvision defines them.

torchvision cannot be imported beside this torch, so the architectures are written out here following
torchvision/models/mobilenetv2.py, mobilenetv3.py and ops/misc.py: the module names match, so a torchvision
state_dict loads into these models unchanged. `build_architecture` gives any of the four (v1 from model.py).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .errors import MnetError
from .model import MobileNetV1, check_alpha, check_classes, load_state_dict, randomize

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
DISPLAY_NAMES = dict(zip(MODELS, ("MobileNet v1", "MobileNet v2", "MobileNet v3 small", "MobileNet v3 large")))


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
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


# ---------------------------------------------------------------------------------------------- v2


class InvertedResidualV2(nn.Module):
    """torchvision mobilenetv2.InvertedResidual: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear project."""

    def __init__(self, inp, oup, stride, expand_ratio, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=nn.ReLU6))
        layers.extend([
            Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU6),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            norm_layer(oup),
        ])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


V2_SETTING = [  # t (expansion), c (channels), n (repeats), s (stride of the first)
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, round_nearest=8, dropout=0.2):
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [Conv2dNormActivation(3, input_channel, stride=2, activation_layer=nn.ReLU6)]
        for t, c, n, s in V2_SETTING:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidualV2(input_channel, output_channel, s if i == 0 else 1, expand_ratio=t))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1,
                                             activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------- v3


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
        return _make_divisible(channels * width_mult, 8)


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
            squeeze_channels = _make_divisible(cnf.expanded_channels // 4, 8)
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


# ------------------------------------------------------------------------------------------ builder


def check_model(name) -> str:
    if name not in MODELS:
        raise MnetError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return name


def make_architecture(name: str, alpha: float = 1.0, classes: int = 1000) -> nn.Module:
    """The untrained module of `name` with width multiplier alpha."""
    name = check_model(name)
    alpha = check_alpha(alpha)
    classes = check_classes(classes)
    if name == "mobilenet_v1":
        return MobileNetV1(alpha, classes)
    if name == "mobilenet_v2":
        model = MobileNetV2(classes, width_mult=alpha)
    else:
        setting, last_channel = mobilenet_v3_conf(name, width_mult=alpha)
        model = MobileNetV3(setting, last_channel, classes)
    model.alpha = alpha
    return model


def randomize_all(model: nn.Module, seed: int) -> nn.Module:
    """model.randomize (conv/linear weights, BN affine and statistics) plus the conv biases of the SE blocks."""
    randomize(model, seed)
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model


def build_architecture(name: str = "mobilenet_v1", alpha: float = 1.0, classes: int = 1000, seed: int = 0,
                       weights: str | None = None) -> nn.Module:
    """Any of MODELS in eval mode, weights from a state_dict file (torchvision's names) or from a seed."""
    model = make_architecture(name, alpha, classes)
    if weights:
        try:
            load_state_dict(model, weights)
        except MnetError as exc:  # model.load_state_dict speaks of v1; name the architecture asked for
            raise MnetError(str(exc).replace("MobileNet v1", DISPLAY_NAMES[name])) from None
    else:
        randomize_all(model, seed)
    return model.eval()
