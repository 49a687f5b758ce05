"""The model arguments' rules (name, alpha, resolution, classes), without torch: the CLI checks them first."""

from __future__ import annotations

from ..errors import MnetError

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
DISPLAY_NAMES = dict(zip(MODELS, ("MobileNet v1", "MobileNet v2", "MobileNet v3 small", "MobileNet v3 large")))
RESOLUTION_RULE = "a multiple of 32 from 32 to 1024 (five stride-2 stages halve it evenly)"


def check_model(name) -> str:
    if name not in MODELS:
        raise MnetError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return name


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
