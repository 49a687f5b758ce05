"""Host-side image input for `mnet-compile run`: decoding (Pillow) and class-name files.

Resizing, cropping and normalization are not here: they are runtime.preprocess (pure numpy), so the device
loader does exactly what the host does.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import MnetError


def load_image(path) -> np.ndarray:
    """Decode an image file into an HxWx3 uint8 RGB array (grayscale, palette, alpha converted; EXIF rotation applied)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise MnetError("decoding images needs Pillow (pip install pillow)") from None
    if not os.path.isfile(path):
        raise MnetError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise MnetError(f"cannot decode image {path}: {text[:200]}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise MnetError(f"cannot decode image {path}: unexpected shape {rgb.shape}")
    return rgb


def read_labels(path, classes: int) -> list[str]:
    """Class names, one per line; their number must equal the model's classes."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise MnetError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MnetError(f"cannot read labels file {path}: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if len(names) != classes:
        raise MnetError(f"labels file {path} has {len(names)} names, the model has {classes} classes")
    return names
