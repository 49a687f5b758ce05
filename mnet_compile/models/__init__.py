"""Model definitions: MobileNet v1 (the paper), v2 and v3 (torchvision's), as torch modules.

Importing this package does not import torch (the argument checks and the cost model need none);
`create_model` does.
"""

from __future__ import annotations

from .checks import DISPLAY_NAMES, MODELS, RESOLUTION_RULE, check_alpha, check_classes, check_model, check_resolution

__all__ = ["MODELS", "RESOLUTION_RULE", "check_alpha", "check_classes", "check_model", "check_resolution", "create_model"]


def create_model(name: str = "mobilenet_v1", alpha: float = 1.0, classes: int = 1000, seed: int = 0,
                 weights: str | None = None):
    """`name` in eval mode: weights from a state_dict file (torchvision's names for v2/v3), else drawn from `seed`."""
    from .common import load_state_dict, randomize

    name, alpha, classes = check_model(name), check_alpha(alpha), check_classes(classes)
    if name == "mobilenet_v1":
        from .mobilenet_v1 import MobileNetV1

        model = MobileNetV1(alpha, classes)
    elif name == "mobilenet_v2":
        from .mobilenet_v2 import MobileNetV2

        model = MobileNetV2(classes, width_mult=alpha)
    else:
        from .mobilenet_v3 import MobileNetV3, mobilenet_v3_conf

        model = MobileNetV3(*mobilenet_v3_conf(name, width_mult=alpha), classes)
    if weights:
        load_state_dict(model, weights, f"{DISPLAY_NAMES[name]} alpha={alpha}")
    else:
        randomize(model, seed)
    return model.eval()
