"""Calibration inputs for `--quantize int8`: the images of a folder, or a documented seeded set.

Images (.png, .jpg, .jpeg, .bmp, .webp) are decoded with Pillow and preprocessed exactly as `run` does
(runtime.preprocess: resize, center crop, ImageNet normalization); a .npy file is taken as one model input
(float32, the input's shape). Without a folder, SEEDED_COUNT synthetic images are drawn from
numpy.random.default_rng(SEED): a 7x7 grid of uniform colors, bilinearly upsampled to 256x256, plus Gaussian
noise (sigma 20), clipped to 0..255: smooth regions and edges like a photo's, not an image set's statistics;
calibrate on real images for real accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .device.images import load_image
from .device.runtime import preprocess
from .errors import MnetError
from .export.artifact import image_preprocessing
from .frontends.common import IMAGENET

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_FILES = 1000
SEED = 0
SEEDED_COUNT = 16


def seeded_image(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One synthetic HxWx3 uint8 image (see the module docstring)."""
    grid = rng.uniform(0, 255, (7, 7, 3))
    pos = np.linspace(0, 6, size)
    i0 = np.minimum(pos.astype(int), 5)
    t = (pos - i0)[:, None, None]
    rows = grid[i0] * (1 - t) + grid[i0 + 1] * t
    t = t.reshape(1, -1, 1)
    image = rows[:, i0] * (1 - t) + rows[:, i0 + 1] * t
    return np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)


def calibration_inputs(folder: str | None, input_shape) -> tuple[list[np.ndarray], dict]:
    """(model inputs, NCHW float32, of `input_shape`; what the manifest records about them)."""
    manifest = {"input": {"shape": list(input_shape), "dtype": "float32", "layout": "NCHW"}}
    manifest["preprocessing"] = image_preprocessing(IMAGENET, manifest["input"])
    if folder is None:
        rng = np.random.default_rng(SEED)
        inputs = [preprocess(seeded_image(rng), manifest) for _ in range(SEEDED_COUNT)]
        return inputs, {"source": "seeded", "seed": SEED, "images": SEEDED_COUNT}
    root = Path(folder)
    if not root.is_dir():
        raise MnetError(f"calibration folder not found: {folder}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + (".npy",) and p.is_file())
    if not files:
        raise MnetError(f"no calibration images in {folder} (expected {', '.join(IMAGE_SUFFIXES)} or .npy files)")
    if len(files) > MAX_FILES:
        raise MnetError(f"{len(files)} calibration files in {folder}; at most {MAX_FILES}")
    inputs = []
    for path in files:
        if path.suffix.lower() != ".npy":
            inputs.append(preprocess(load_image(str(path)), manifest))
            continue
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MnetError(f"cannot read calibration input {path}: {exc}") from None
        if x.shape != tuple(input_shape) or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise MnetError(f"calibration input {path}: expected finite floats of shape {tuple(input_shape)}, got {x.dtype} {x.shape}")
        inputs.append(x.astype(np.float32))
    return inputs, {"source": "folder", "path": str(root.absolute()), "images": len(inputs)}
