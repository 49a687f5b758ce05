"""What many tests share: the CLI run in-process, the one accuracy rule, PyTorch references, tool checks."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from mnet_compile.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`mnet-compile ARGS` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The one line an error prints, beside the "[  1.2s] step" progress lines (which must not be errors)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith(("error: ", "internal error: ")), err
    return lines[0]


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def assert_matches(got, ref) -> None:
    """The project's accuracy rule for every artifact: max |got - ref| <= 1e-4 of the output scale, same top-1."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = float(np.abs(got - ref).max())
    assert err <= 1e-4 * float(np.abs(ref).max()), f"max abs diff {err} vs max |ref| {np.abs(ref).max()}"
    assert int(got.argmax()) == int(ref.argmax())


def pytorch_reference(x: np.ndarray, model: str = "mobilenet_v1", alpha: float = 1.0, seed: int = 0, **kwargs):
    """The logits PyTorch eager gives for `x` on the model a CompileRequest with these fields builds."""
    import torch

    from mnet_compile.models import create_model

    with torch.no_grad():
        return create_model(model, alpha, seed=seed, **kwargs)(torch.from_numpy(x)).numpy()


def assert_matches_pytorch(got, x: np.ndarray, **model) -> None:
    assert_matches(got, pytorch_reference(x, **model))


def need(*tools):
    """Skip a test whose command-line tools are absent (CI installs them all: .ci/run)."""
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed")


def make_image(path, height=183, width=271):
    """A noisy color gradient saved as an image file (JPEG by its name: quality 95)."""
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(9)
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.float64)
    rgb = np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def elf_header(path):
    """(ELF class 32/64, e_machine, e_flags) of a shared library."""
    data = open(path, "rb").read(64)
    assert data[:4] == b"\x7fELF"
    bits = 32 if data[4] == 1 else 64
    machine = struct.unpack_from("<H", data, 18)[0]
    flags = struct.unpack_from("<I", data, 36 if bits == 32 else 48)[0]
    return bits, machine, flags
