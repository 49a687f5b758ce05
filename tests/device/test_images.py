"""Images through `run`: decoded on the host (Pillow), preprocessed by the loader exactly as torchvision does."""

import numpy as np
import pytest
import torch

from mnet_compile.device import runtime
from mnet_compile.models import create_model

from ..helpers import error_line, make_image, run_cli


def _torch_preprocess(rgb, resolution):
    """torchvision's Resize(resolution * 256 / 224) + CenterCrop + ToTensor + Normalize, in plain torch."""
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    h, w = rgb.shape[:2]
    short = int(resolution * 256 / 224)
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)
    top, left = int(round((size[0] - resolution) / 2)), int(round((size[1] - resolution) / 2))
    t = t[:, :, top:top + resolution, left:left + resolution] / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (t - mean) / std


def test_image_through_run_matches_pytorch(capsys, compiled, tmp_path):
    from PIL import Image

    art = compiled(0.25, 128, seed=7)
    image = tmp_path / "cat.jpg"
    make_image(image)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"name{i}\n" for i in range(1000)))
    code, out, err = run_cli(capsys, "run", art, image, "--labels", labels, "--repeat", "2")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "class" in line]
    got = [int(line.split()[2]) for line in lines]
    assert [line.split()[-1] for line in lines] == [f"name{i}" for i in got]

    rgb = np.asarray(Image.open(image).convert("RGB"))
    with torch.no_grad():
        logits = create_model(alpha=0.25, seed=7)(_torch_preprocess(rgb, 128))[0].numpy()
    assert got == list(np.argsort(-logits, kind="stable")[:5])
    manifest = runtime.load(str(art)).manifest
    assert np.abs(runtime.preprocess(rgb, manifest) - _torch_preprocess(rgb, 128).numpy()).max() < 1e-3


def test_preprocess_nhwc_and_sizes():
    base = {"channel_order": "RGB", "scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    nchw = {"input": {"shape": [1, 3, 96, 96], "layout": "NCHW", "dtype": "float32"}, "preprocessing": base}
    nhwc = {"input": {"shape": [1, 96, 96, 3], "layout": "NHWC", "dtype": "float32"}, "preprocessing": base}
    rng = np.random.default_rng(0)
    for size in [(96, 96), (50, 333), (640, 480)]:
        rgb = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        a, b = runtime.preprocess(rgb, nchw), runtime.preprocess(rgb, nhwc)
        assert a.shape == (1, 3, 96, 96) and b.shape == (1, 96, 96, 3)
        assert np.array_equal(a.transpose(0, 2, 3, 1), b)
        ref = _torch_preprocess(rgb, 96).numpy() if size != (96, 96) else None
        if ref is not None:
            ref = ref * np.array([0.229, 0.224, 0.225])[:, None, None] + np.array([0.485, 0.456, 0.406])[:, None, None]
            ref = (ref - np.array(base["mean"])[:, None, None]) / np.array(base["std"])[:, None, None]
            assert np.abs(a - ref).max() < 1e-3
    with pytest.raises(runtime.ArtifactError, match="shape"):
        runtime.preprocess(np.zeros((10, 10), np.uint8), nchw)


def test_bad_run_inputs(capsys, compiled, tmp_path):
    art = compiled(0.25, 128, seed=7)
    image = tmp_path / "ok.png"
    make_image(image, 40, 40)
    short = tmp_path / "short.txt"
    short.write_text("a\nb\nc\n")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    cases = [
        ([image, "--labels", short], "labels file"),
        ([image, "--labels", tmp_path / "none.txt"], "labels file not found"),
        ([broken], "cannot decode image"),
        ([text], "cannot decode image"),
        ([tmp_path / "none.jpg"], "image file not found"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, "run", art, *args, "--repeat", "1")
        assert code == 1 and message in error_line(err), (args, err)
        assert "class" not in out
    code, _, err = run_cli(capsys, "run", art, image, "--labels", short)
    assert "has 3 names, the model has 1000 classes" in err
