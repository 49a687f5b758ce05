"""The device-side loader of mnet-compile artifacts. Standalone: needs only numpy and the TVM runtime.

Copy this file onto the device and run with TVM_USE_RUNTIME_LIB=1 (only libtvm_runtime is loaded):

    import runtime
    model = runtime.load("mobilenet_v1_0.25_224_rpi4")
    logits = model(x)                      # x: float32 array of manifest["input"]["shape"]
    top5 = model.classify(x, k=5)          # [(class index, probability), ...]
    print(model.benchmark())               # {"median_ms": ..., "p90_ms": ..., ...}
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time

import numpy as np

FORMAT_VERSION = 1
LIBRARY = "model.so"
MANIFEST = "manifest.json"
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "armv7": "armv7l", "armv8l": "armv7l"}


class ArtifactError(Exception):
    """The artifact or the input does not fit: a one-line message for the user."""


def _machine(name: str) -> str:
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: str) -> dict:
    """Read and check an artifact's manifest and the checksums of all its files."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise ArtifactError(f"artifact folder not found: {path}")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not an mnet-compile artifact: {MANIFEST} is missing") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{manifest_path}: unsupported format (expected format_version {FORMAT_VERSION})")
    files = manifest.get("files") or {}
    if LIBRARY not in files:
        raise ArtifactError(f"{manifest_path} lists no {LIBRARY}")
    for name, meta in files.items():
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise ArtifactError(f"artifact file missing: {file_path}")
        if sha256(file_path) != meta.get("sha256"):
            raise ArtifactError(f"artifact file altered (sha256 mismatch): {file_path}")
    return manifest


def _bilinear_taps(n_in: int, n_out: int, first: int, count: int):
    """Source rows/columns and weights of output pixels first..first+count of an n_in -> n_out bilinear resize.

    Half-pixel centers without antialiasing: torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
    """
    dst = np.arange(first, first + count, dtype=np.float32)  # float32 arithmetic, as torch does it
    src = np.maximum(np.float32(n_in / n_out) * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)


def image_geometry(image_hw, manifest: dict):
    """(resized height, width), (crop top, left), (crop height, width) for an image of size image_hw."""
    shape = manifest["input"]["shape"]
    nhwc = manifest["input"].get("layout", "NCHW") == "NHWC"
    crop_h, crop_w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    pre = manifest.get("preprocessing", {})
    crop_h, crop_w = pre.get("center_crop", [crop_h, crop_w])
    short = int(pre.get("resize_shorter", int(min(crop_h, crop_w) * 256 / 224)))
    h, w = image_hw
    if h <= w:
        new_h, new_w = short, int(short * w / h)
    else:
        new_h, new_w = int(short * h / w), short
    if new_h < crop_h or new_w < crop_w:  # a crop wider than the resized image: grow until it fits
        grow = max(crop_h / new_h, crop_w / new_w)
        new_h, new_w = max(crop_h, int(round(new_h * grow))), max(crop_w, int(round(new_w * grow)))
    top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
    return (new_h, new_w), (top, left), (crop_h, crop_w)


def preprocess(image: np.ndarray, manifest: dict, resize: bool = True) -> np.ndarray:
    """An already-decoded HxWx3 uint8 RGB image of any size -> the model input, as the manifest says.

    Resize the shorter side to preprocessing.resize_shorter (crop * 256 / 224) with bilinear interpolation,
    center-crop to the input size, scale, subtract the mean, divide by the std, lay out as the input (NCHW or
    NHWC). resize=False takes an image already of the input size and only normalizes it.
    """
    pre = manifest["preprocessing"]
    shape = manifest["input"]["shape"]
    nhwc = manifest["input"].get("layout", "NCHW") == "NHWC"
    height, width, channels = (shape[1], shape[2], shape[3]) if nhwc else (shape[2], shape[3], shape[1])
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != channels or min(image.shape[:2]) < 1:
        raise ArtifactError(f"image must be an array of shape (height, width, {channels}), got {image.shape}")
    if not resize and image.shape != (height, width, channels):
        raise ArtifactError(f"image must be an array of shape {(height, width, channels)}, got {image.shape}")
    if pre["channel_order"] == "BGR":
        image = image[..., ::-1]
    x = image.astype(np.float32)
    if resize:
        (new_h, new_w), (top, left), (crop_h, crop_w) = image_geometry(image.shape[:2], manifest)
        r0, r1, ry = _bilinear_taps(image.shape[0], new_h, top, crop_h)
        c0, c1, cx = _bilinear_taps(image.shape[1], new_w, left, crop_w)
        ry, cx = ry[:, None, None], cx[None, :, None]
        x = (1 - ry) * ((1 - cx) * x[r0][:, c0] + cx * x[r0][:, c1]) + ry * ((1 - cx) * x[r1][:, c0] + cx * x[r1][:, c1])
    x = (x * np.float32(pre["scale"]) - np.float32(pre["mean"])) / np.float32(pre["std"])
    x = x[None] if nhwc else x.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x, dtype=manifest["input"].get("dtype", "float32"))


class CompiledModel:
    """A loaded artifact: call it on an input array to get the logits."""

    def __init__(self, path: str, manifest: dict, device=None):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.path = path
        self.manifest = manifest
        self.input_shape = tuple(manifest["input"]["shape"])
        self.input_dtype = manifest["input"]["dtype"]
        self.device = device or (tvm.cuda(0) if manifest["target"]["tvm"]["kind"] == "cuda" else tvm.cpu(0))
        self._tensor = tvm.runtime.tensor
        library = tvm.runtime.load_module(os.path.join(os.path.abspath(path), LIBRARY))
        self._vm = VirtualMachine(library, self.device)
        self._main = self._vm["main"]

    def _run(self, x: np.ndarray):
        return self._main(self._tensor(x, self.device))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != self.input_shape:
            raise ArtifactError(f"input must have shape {self.input_shape}, got {x.shape}")
        if x.dtype != np.dtype(self.input_dtype):
            raise ArtifactError(f"input must have dtype {self.input_dtype}, got {x.dtype}")
        out = self._run(np.ascontiguousarray(x))
        return (out[0] if not hasattr(out, "numpy") else out).numpy()

    def classify(self, x: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
        """Top-k (class index, softmax probability) pairs for a batch-1 input."""
        logits = self(x)[0].astype(np.float64)
        if self.manifest["output"].get("kind") == "probabilities":  # the model ends in a softmax already
            probs = logits
        else:
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
        top = np.argsort(-probs, kind="stable")[:k]
        return [(int(i), float(probs[i])) for i in top]

    def benchmark(self, repeat: int = 50, warmup: int = 5, x: np.ndarray | None = None) -> dict:
        """Wall-clock latency of single inferences, in milliseconds."""
        if x is None:
            x = np.random.default_rng(0).standard_normal(self.input_shape).astype(self.input_dtype)
        times = []
        for i in range(warmup + repeat):
            start = time.perf_counter()
            self(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
        times = np.array(times)
        return {
            "median_ms": float(np.median(times)),
            "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(times.min()),
            "runs": int(repeat),
        }


def load(path: str, device=None) -> CompiledModel:
    """Verify an artifact folder (manifest, checksums, CPU architecture) and load it."""
    manifest = read_manifest(path)
    built_for = _machine(manifest["target"]["arch"])
    here = _machine(platform.machine())
    if built_for != here:
        raise ArtifactError(
            f"artifact {path} was built for {built_for} ({manifest['target']['preset']}), this machine is {here}"
        )
    return CompiledModel(path, manifest, device)
