"""Calibration inputs for --quantize int8: a folder of images and .npy inputs, or the seeded set."""

import numpy as np
import pytest
from PIL import Image

from mnet_compile.calibration import SEEDED_COUNT, calibration_inputs
from mnet_compile.device import runtime
from mnet_compile.device.images import load_image
from mnet_compile.errors import MnetError

SHAPE = (1, 3, 64, 64)


def test_folder_of_images_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 60, 3), dtype=np.uint8)).save(tmp_path / "b.JPG")
    x = rng.standard_normal(SHAPE).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    (tmp_path / "notes.txt").write_text("not an input")
    inputs, info = calibration_inputs(str(tmp_path), SHAPE)
    assert info == {"source": "folder", "path": str(tmp_path), "images": 3}
    manifest = {"input": {"shape": list(SHAPE), "layout": "NCHW"},
                "preprocessing": {"channel_order": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                  "std": [0.229, 0.224, 0.225], "resize_shorter": 73, "center_crop": [64, 64]}}
    np.testing.assert_array_equal(inputs[0], runtime.preprocess(load_image(str(tmp_path / "a.png")), manifest))
    np.testing.assert_array_equal(inputs[2], x)


def test_seeded_set_is_deterministic():
    first, info = calibration_inputs(None, SHAPE)
    second, _ = calibration_inputs(None, SHAPE)
    assert info == {"source": "seeded", "seed": 0, "images": SEEDED_COUNT} and len(first) == SEEDED_COUNT
    assert all(a.shape == SHAPE and a.dtype == np.float32 and np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, "no calibration images in"),
        (lambda d: np.save(d / "x.npy", np.zeros((1, 3, 32, 32), np.float32)), "expected finite floats of shape (1, 3, 64, 64)"),
        (lambda d: np.save(d / "x.npy", np.full(SHAPE, np.nan, np.float32)), "expected finite floats"),
        (lambda d: (d / "x.png").write_bytes(b"not a png"), "cannot decode image"),
    ],
)
def test_bad_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(MnetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        calibration_inputs(str(tmp_path), SHAPE)
